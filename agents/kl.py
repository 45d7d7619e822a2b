"""KL to the reference model: per-token estimators and the beta controllers.

Per generated token, with ``d = log pi(a|s) - log ref(a|s)`` for the sampled token ``a``:

- ``k1 = d`` (log-ratio): unbiased for KL(pi || ref), can be negative on single tokens;
- ``k3 = exp(-d) - 1 + d``: unbiased too, and never negative (lower variance when pi ~ ref).

Shared by every agent that penalises the KL (PPO, REINFORCE, RLOO, GRPO, ...).
"""

from __future__ import annotations

from typing import Any

import torch

KL_ESTIMATORS = ("k1", "k3")


def kl_per_token(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1"
) -> torch.Tensor:
    """Per-token KL estimate of the sampled tokens.

    Args:
        logprobs: ``(N, G)`` log pi of each sampled token.
        ref_logprobs: ``(N, G)`` log ref of the same tokens.
        estimator: ``"k1"`` or ``"k3"``.

    Returns:
        ``(N, G)`` estimates (exactly 0 where the two log-probs are equal). Callers mask padding.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        # expm1 keeps precision when d is tiny: exp(-d) - 1 + d = expm1(-d) + d.
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl_estimator={estimator!r}; accepted: {KL_ESTIMATORS}")


class FixedKLController:
    """A constant ``beta``."""

    def __init__(self, beta: float) -> None:
        self.beta = float(beta)

    def update(self, current_kl: float, n_episodes: int) -> None:
        """No-op (kept so that agents need not know which controller they hold)."""

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "fixed", "beta": self.beta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta = float(state["beta"])


class AdaptiveKLController:
    """Ziegler et al. (2019)'s proportional controller for ``beta``.

    After each rollout, with ``e = clip(current_kl / target_kl - 1, -0.2, 0.2)``::

        beta <- beta * (1 + e * n_episodes / horizon)

    so beta grows while the KL per episode is above ``target_kl`` and shrinks while below;
    ``horizon`` (in episodes) sets how fast.
    """

    def __init__(self, beta: float, target_kl: float, horizon: int) -> None:
        if target_kl <= 0 or horizon <= 0:
            raise ValueError(f"target_kl and horizon must be > 0, got {target_kl}, {horizon}")
        self.beta = float(beta)
        self.target_kl = float(target_kl)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_episodes: int) -> None:
        """Move beta given the rollout's mean KL per episode (nats) and its episode count."""
        error = min(max(current_kl / self.target_kl - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_episodes / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "adaptive", "beta": self.beta, "target_kl": self.target_kl,
                "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta = float(state["beta"])
        self.target_kl = float(state["target_kl"])
        self.horizon = int(state["horizon"])


def make_kl_controller(
    beta: float, adaptive: bool = False, target_kl: float = 6.0, horizon: int = 10000
) -> FixedKLController | AdaptiveKLController:
    """The controller a config asks for."""
    if adaptive:
        return AdaptiveKLController(beta, target_kl, horizon)
    return FixedKLController(beta)
