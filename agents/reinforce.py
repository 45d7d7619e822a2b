"""REINFORCE with a moving-average baseline and a KL-shaped return.

Per token ``t`` of an episode, the return is the KL-shaped reward-to-go (``gamma = 1``)::

    G_t = score - beta * sum_{s >= t} KL_s

(multi-turn: ``G_t = sum_{s >= t} (r_s - beta * KL_s)`` over the agent's tokens, ``r_s`` a
per-turn reward at its turn's last agent token, the score at the last one)

and the advantage is ``G_t - b``, with ``b`` an exponential moving average of past rollouts' mean
episode return ``G_0`` (a baseline that does not depend on the sample keeps the gradient
unbiased). One gradient step per rollout on ``-A_t * log pi(a_t | s_t)``, token-averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokengym.agents.advantages import shaped_rewards, whiten
from tokengym.agents.agent_config import PGConfig
from tokengym.agents.base import TrainableAgent
from tokengym.agents.batch import Batch, token_mean
from tokengym.agents.distributed import global_mean


@dataclass
class ReinforceConfig(PGConfig):
    """Hyperparameters of :class:`ReinforceAgent` (shared fields: :class:`PGConfig`)."""

    # Weight of the old baseline in b <- decay * b + (1 - decay) * mean return of the rollout.
    # The first rollout sets b to its own mean.
    baseline_decay: float = 0.9
    # Normalise advantages to zero mean / unit std over the rollout's tokens.
    whiten_advantages: bool = False

    def validate(self) -> ReinforceConfig:
        super().validate()
        if not 0 <= self.baseline_decay < 1:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        return self


class ReinforceAgent(TrainableAgent):
    """REINFORCE on a tokengym vector env; one update per rollout (see the module docstring)."""

    def __init__(self, envs: Any, policy: Any, config: ReinforceConfig) -> None:
        super().__init__(envs, policy, config)
        self.baseline: float | None = None

    def advantages(self, b: Batch) -> dict[str, float]:
        rewards, _ = shaped_rewards(b.scores, b.logprobs, b.ref_logprobs, b.mask,
                                    self.kl_controller.beta, self.config.kl_estimator,
                                    b.step_rewards)
        # Reward-to-go: reversed cumulative sum over each row's steps (0 outside the mask).
        returns = rewards.flip(-1).cumsum(-1).flip(-1) * b.mask
        episode_return = global_mean(returns[:, 0])  # every rank's: the baseline is shared
        baseline = episode_return if self.baseline is None else self.baseline
        adv = (returns - baseline) * b.mask
        if self.config.whiten_advantages:
            adv = whiten(adv, b.mask)
        b.advantages, b.returns = adv, returns
        return {"return_mean": episode_return, "baseline": baseline}

    def update(self, b: Batch) -> dict[str, float]:
        out = super().update(b)  # the vanilla policy-gradient step
        # The baseline moves after the update, so this rollout was judged against the past only.
        cfg, mean_return = self.config, global_mean(b.returns[:, 0])
        self.baseline = mean_return if self.baseline is None else (
            cfg.baseline_decay * self.baseline + (1 - cfg.baseline_decay) * mean_return)
        out["advantage_mean"] = token_mean(b.advantages, b.mask)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "baseline": self.baseline}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.baseline = state.get("baseline")
