"""A2C for language models: token-level actor-critic, one update per rollout, no clipping.

The same KL-shaped per-token rewards and GAE as PPO (:func:`~tokengym.agents.ppo.gae_advantages`),
with the value head of :class:`~tokengym.agents.policy.ActorCritic`; then ONE gradient step on::

    loss_t = -A_t * log pi(a_t | s_t) + vf_coef * 0.5 * (V(s_t) - R_t)^2 - ent_coef * H_t

token-averaged: no ratio, no clipping, no second pass over the rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokengym.agents.agent_config import CriticConfig
from tokengym.agents.base import TrainableAgent
from tokengym.agents.batch import Batch
from tokengym.agents.policy import entropy_from_logp
from tokengym.agents.ppo import gae_advantages


@dataclass
class A2CConfig(CriticConfig):
    """Hyperparameters of :class:`A2CAgent` (all shared: :class:`PGConfig`, :class:`CriticConfig`)."""

    def validate(self) -> A2CConfig:
        super().validate()
        if self.vf_coef <= 0:
            raise ValueError(f"vf_coef must be > 0 (A2C bootstraps from its critic), "
                             f"got {self.vf_coef}")
        return self


class A2CAgent(TrainableAgent):
    """A2C on a tokengym vector env (see the module docstring)."""

    uses_value_head = True

    def advantages(self, b: Batch) -> dict[str, float]:
        return gae_advantages(b, self.kl_controller.beta, self.config)

    def update(self, b: Batch) -> dict[str, float]:
        cfg = self.config

        def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            logprobs, logp, values = self.policy_forward(b, idx)
            entropy = entropy_from_logp(logp)
            pg = -b.advantages[idx] * logprobs
            v_loss = 0.5 * (values - b.returns[idx]) ** 2
            stats = {"policy_loss": pg.detach(), "value_loss": v_loss.detach(),
                     "entropy": entropy.detach()}
            return pg + cfg.vf_coef * v_loss - cfg.ent_coef * entropy, stats

        return self.optimize(b, loss_fn)
