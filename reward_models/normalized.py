"""``normalized``: any reward model rescaled to mean 0 / std 1.

Two modes:

- ``"fixed"``: the mean and std come once from a calibration set, normally samples of the
  reference policy, and never change (as in OpenAI's lm-human-preferences, which normalises the
  reward model on reference samples before RL starts). Deterministic, like every reward model.
- ``"running"``: the mean and std are running statistics of every score seen so far (updated
  with each batch before normalising it). Scores then drift as the policy improves, so this mode
  is *not* deterministic across calls; call :meth:`NormalizedReward.freeze` to stop updating.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tokengym.checks import finite_number, keyword_arguments
from tokengym.reward_models.base import RewardFn, reward_model_name, score
from tokengym.reward_models.registry import make

MODES = ("fixed", "running")


class NormalizedReward:
    """Reward = ``(base score - mean) / (std + eps)``.

    Args:
        base: the wrapped reward model (anything :func:`make` accepts).
        mode: ``"fixed"`` or ``"running"`` (see the module docstring).
        calibration: for ``"fixed"``, ``{"prompts": [...], "completions": [...], **fields}``
            scored once by ``base`` now; alternatively call :meth:`calibrate` later or give
            ``mean`` and ``std``.
        mean / std: fixed statistics, used as given.
        eps: added to std so a constant reward does not divide by zero.
        base_kwargs: arguments for building ``base`` from a name.
    """

    def __init__(
        self,
        base: Any,
        mode: str = "fixed",
        calibration: Mapping[str, Sequence[Any]] | None = None,
        mean: float | None = None,
        std: float | None = None,
        eps: float = 1e-8,
        base_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.eps = finite_number("eps", eps, minimum=0, exclusive=True)
        self.base: RewardFn = make(base, **keyword_arguments("base_kwargs", base_kwargs))
        self.mode = mode
        self.name = f"normalized({reward_model_name(self.base)})"
        self.frozen = False
        self.count, self.mean, self._m2 = 0, 0.0, 0.0  # Welford running moments
        self.std: float | None = None
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        if mean is not None:
            self.mean = finite_number("mean", mean)
            self.std, self.frozen = finite_number("std", std, minimum=0), True
        if calibration is not None:
            if mode != "fixed":
                raise ValueError("calibration is for mode='fixed'")
            fields = {k: v for k, v in calibration.items() if k not in ("prompts", "completions")}
            try:
                self.calibrate(calibration["prompts"], calibration["completions"], **fields)
            except KeyError as exc:
                raise ValueError(
                    f"calibration needs 'prompts' and 'completions', missing {exc}"
                ) from None

    def calibrate(
        self, prompts: Sequence[str], completions: Sequence[str], **fields: Any
    ) -> NormalizedReward:
        """Fix mean and std to those of ``base`` on these samples (at least 2); returns self."""
        if len(completions) < 2:
            raise ValueError(f"calibration needs at least 2 samples, got {len(completions)}")
        values, _ = score(self.base, prompts, completions, fields)
        self.mean, self.std = float(values.mean()), float(values.std())
        self.count, self.frozen = len(values), True
        return self

    def freeze(self) -> None:
        """Stop updating running statistics (the current mean and std are kept)."""
        if self.std is None:
            raise ValueError("nothing to freeze: no score has been seen yet")
        self.frozen = True

    def _update(self, values: np.ndarray) -> None:
        # Chan et al.'s parallel update of the count / mean / sum of squared deviations.
        n, mean = len(values), float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self._m2 += m2 + delta**2 * self.count * n / total
        self.count = total
        self.std = math.sqrt(self._m2 / total)

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **fields: Any
    ) -> np.ndarray:
        values, _ = score(self.base, prompts, completions, fields)
        values = values.astype(np.float64)
        if self.mode == "running" and not self.frozen and len(values):
            self._update(values)
        if self.std is None:
            raise ValueError(
                "normalized reward model in mode='fixed' is not calibrated: pass "
                "calibration={'prompts': ..., 'completions': ...} or mean/std, or call calibrate()"
            )
        return ((values - self.mean) / (self.std + self.eps)).astype(np.float32)
