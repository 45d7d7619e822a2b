"""Config dataclasses shared by the baseline agents, with PPOConfig's names and conventions.

- :class:`ConfigMixin`: ``field_names``/``to_dict``/``from_dict`` (unknown keys raise
  ``ValueError``) and small validation helpers;
- :class:`PGConfig`: the fields every trainable baseline has, with PPOConfig's names, meanings
  and defaults (``seed``, ``num_envs``, ``temperature``, ``lr``, ``beta``, ``kl_estimator``...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .kl import KL_ESTIMATORS

DTYPES = ("float32", "bfloat16", "float16")


class ConfigMixin:
    """Dict conversions shared by every agent config (same behaviour as ``PPOConfig``'s)."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.field_names()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """Build from a plain dict (TOML, JSON); unknown keys raise ``ValueError``."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; accepted: "
                             f"{', '.join(cls.field_names())}")
        return cls(**values)

    def _check_positive_ints(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def _check_groups(self, name: str = "samples_per_prompt", minimum: int = 2) -> None:
        """``name`` (k) is an int >= ``minimum`` and ``num_envs`` a multiple of it."""
        k = getattr(self, name)
        if isinstance(k, bool) or not isinstance(k, int) or k < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {k!r}")
        if self.num_envs % k:  # type: ignore[attr-defined]
            raise ValueError(f"num_envs={self.num_envs} is not a multiple of {name}={k}; "  # type: ignore[attr-defined]
                             f"use num_envs = prompts x {name}")


@dataclass
class PGConfig(ConfigMixin):
    """Fields shared by the trainable baselines; same meaning as in :class:`PPOConfig`."""

    # Seeds sampling, shuffling, the value head's init and (with the iteration) the env reset.
    seed: int = 0
    # Rows of the vector env = episodes per rollout (prompts x samples_per_prompt).
    num_envs: int = 16
    # Sampling temperature, applied in the rollout AND the update (log-probs of what was sampled).
    temperature: float = 1.0
    # Adam(W) learning rate, eps and decoupled weight decay.
    lr: float = 1e-5
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    # Global gradient-norm clip (0 disables it).
    max_grad_norm: float = 1.0
    # Each update is split into this many micro-batches whose gradients are summed (less memory).
    grad_accum_steps: int = 1
    # Weight of the entropy bonus (subtracted from the loss).
    ent_coef: float = 0.0
    # Rescale the env's scores to unit std per rollout (mean kept) before anything else.
    whiten_rewards: bool = False
    # Added to the score of episodes truncated without a stop token; None = no penalty.
    no_stop_penalty: float | None = None
    # KL coefficient, estimator ("k1"/"k3") and the optional adaptive controller (see PPOConfig).
    beta: float = 0.05
    kl_estimator: str = "k1"
    adaptive_kl: bool = False
    target_kl: float = 6.0
    horizon: int = 10000
    # LoRA adapters instead of full fine-tuning (the reference is then the adapter-free model).
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"
    # Parameter dtype and device ("auto": CUDA when available).
    dtype: str = "float32"
    device: str = "auto"
    # Bookkeeping for tokengym train: checkpoint period, checkpoints kept, sample-table rows.
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    num_samples: int = 4

    def validate(self) -> Any:
        """Raise ``ValueError`` naming the bad value; returns ``self``."""
        self._check_positive_ints("num_envs", "grad_accum_steps", "horizon", "lora_r",
                                  "checkpoint_every", "keep_checkpoints")
        if self.num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {self.num_samples}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 to train (greedy log-probs are undefined), "
                             f"got {self.temperature}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("max_grad_norm", "ent_coef", "beta", "weight_decay", "lora_dropout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator={self.kl_estimator!r}; accepted: {KL_ESTIMATORS}")
        if self.adaptive_kl and (self.target_kl <= 0 or self.beta == 0):
            raise ValueError("adaptive_kl needs target_kl > 0 and beta > 0 (it is multiplicative)")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; accepted: {DTYPES}")
        if self.grad_accum_steps > self.num_envs:
            raise ValueError(f"grad_accum_steps={self.grad_accum_steps} > num_envs="
                             f"{self.num_envs}: a micro-batch needs at least one episode")
        return self
