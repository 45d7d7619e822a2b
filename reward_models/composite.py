"""``composite``: a weighted sum of named reward models; the env reports each component."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tokengym.reward_models.base import RewardFn, score
from tokengym.reward_models.registry import make


def _build(name: str, spec: Any) -> tuple[RewardFn, float]:
    """One component from a spec: a name / import string / callable, or a dict
    ``{"model": <that>, "weight": w, **factory_kwargs}``."""
    weight = 1.0
    kwargs: dict[str, Any] = {}
    if isinstance(spec, Mapping):
        if "model" not in spec:
            raise ValueError(
                f"component {name!r}: a dict spec needs a 'model' key, got {sorted(spec)}"
            )
        kwargs = {k: v for k, v in spec.items() if k not in ("model", "weight")}
        weight = spec.get("weight", 1.0)
        spec = spec["model"]
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not math.isfinite(weight)
    ):
        raise ValueError(f"component {name!r}: weight must be a finite number, got {weight!r}")
    return make(spec, **kwargs), float(weight)


class CompositeReward:
    """Reward = sum over components of ``weight * component score``.

    Args:
        components: ``{component_name: spec}``; a spec is anything :func:`make` accepts (name,
            import string, callable) or a dict ``{"model": ..., "weight": w, **kwargs}``, e.g.
            ``{"sentiment": "vader", "length": {"model": "length", "target": 15, "weight": 0.5}}``.
        weights: optional ``{component_name: weight}``; overrides weights given in the specs.

    Each component receives the per-prompt fields it asks for. The env's
    ``info["reward_components"]`` holds each component's unweighted score, and the total under
    the composite's name.
    """

    name = "composite"

    def __init__(
        self, components: Mapping[str, Any], weights: Mapping[str, float] | None = None
    ) -> None:
        if not isinstance(components, Mapping) or not components:
            raise ValueError("components must be a non-empty mapping {name: reward model spec}")
        self.components: dict[str, RewardFn] = {}
        self.weights: dict[str, float] = {}
        for key, spec in components.items():
            if not isinstance(key, str) or not key or key == self.name:
                raise ValueError(
                    f"component names must be non-empty strings other than "
                    f"{self.name!r}, got {key!r}"
                )
            self.components[key], self.weights[key] = _build(key, spec)
        for key, weight in (weights or {}).items():
            if key not in self.components:
                raise ValueError(
                    f"weights names unknown component {key!r}; components: "
                    f"{sorted(self.components)}"
                )
            self.weights[key] = _build(key, {"model": self.components[key], "weight": weight})[1]

    def score_with_components(
        self, prompts: Sequence[str], completions: Sequence[str], **fields: Any
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(total (n,), {component_name: unweighted scores (n,), "composite": total})``."""
        total = np.zeros(len(completions), dtype=np.float64)
        parts: dict[str, np.ndarray] = {}
        for key, rm in self.components.items():
            # score() checks each component's output, so a fault names the component's model.
            values, _ = score(rm, prompts, completions, fields)
            parts[key] = values
            total += self.weights[key] * values.astype(np.float64)
        parts[self.name] = total.astype(np.float32)
        return parts[self.name], parts

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **fields: Any
    ) -> np.ndarray:
        return self.score_with_components(prompts, completions, **fields)[0]
