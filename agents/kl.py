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
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kl_estimator: str = "k1"
) -> torch.Tensor:
    """Per-token KL estimate of the sampled tokens.

    Args:
        logprobs: ``(N, G)`` log pi of each sampled token.
        ref_logprobs: ``(N, G)`` log ref of the same tokens.
        kl_estimator: ``"k1"`` or ``"k3"``.

    Returns:
        ``(N, G)`` estimates (exactly 0 where the two log-probs are equal). Callers mask padding.
    """
    log_ratio = logprobs - ref_logprobs
    if kl_estimator == "k1":
        return log_ratio
    if kl_estimator == "k3":
        # expm1 keeps precision when d is tiny: exp(-d) - 1 + d = expm1(-d) + d.
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl_estimator={kl_estimator!r}; accepted: {KL_ESTIMATORS}")


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

    After each rollout, with ``e = clip(current_kl / target - 1, -0.2, 0.2)``::

        beta <- beta * (1 + e * n_episodes / horizon)

    so beta grows while the KL per episode is above ``target`` (config ``adaptive_kl_target``)
    and shrinks while below; ``horizon`` (``adaptive_kl_horizon``, in episodes) sets how fast.
    """

    def __init__(self, beta: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"adaptive_kl_target and adaptive_kl_horizon must be > 0, got "
                             f"{target}, {horizon}")
        self.beta = float(beta)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_episodes: int) -> None:
        """Move beta given the rollout's mean KL per episode (nats) and its episode count."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_episodes / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "adaptive", "beta": self.beta, "target": self.target,
                "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta = float(state["beta"])
        # "target_kl": the key of checkpoints written by tokengym 0.1.0.
        self.target = float(state["target"] if "target" in state else state["target_kl"])
        self.horizon = int(state["horizon"])


def make_kl_controller(config: Any) -> FixedKLController | AdaptiveKLController:
    """The controller ``config`` asks for (fields ``beta``, ``adaptive_kl``,
    ``adaptive_kl_target``, ``adaptive_kl_horizon``)."""
    if config.adaptive_kl:
        return AdaptiveKLController(config.beta, config.adaptive_kl_target,
                                    config.adaptive_kl_horizon)
    return FixedKLController(config.beta)
