"""GRPO (Shao et al. 2024): group-relative advantages, clipped ratio, k3 KL to the reference.

For each prompt, k samples come from the env (rows grouped by
:class:`~tokengym.agents.groups.PromptGroups`). Each sample's advantage is its score normalised
within its group, ``A_i = (score_i - mean) / (std + eps)``
(:func:`~tokengym.agents.groups.group_normalized_advantages`), on every token. The KL is NOT in
the reward but in the loss, per token, with the k3 estimator of the CURRENT policy against the
reference::

    loss_t = -min(ratio_t * A, clip(ratio_t, 1 - eps, 1 + eps) * A) + beta * k3_t

token-averaged over each minibatch, for ``epochs`` x ``num_minibatches`` steps per rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokengym.agents.agent_config import PGConfig
from tokengym.agents.base import TrainableAgent
from tokengym.agents.batch import Batch
from tokengym.agents.distributed import global_std
from tokengym.agents.groups import group_normalized_advantages
from tokengym.agents.kl import kl_per_token
from tokengym.agents.policy import entropy_from_logp
from tokengym.agents.ppo import clipped_surrogate


@dataclass
class GRPOConfig(PGConfig):
    """Hyperparameters of :class:`GRPOAgent` (shared fields: :class:`PGConfig`)."""

    # k: samples of each prompt per rollout (the group); num_envs must be a multiple of it.
    samples_per_prompt: int = 4
    # Passes over each rollout, and minibatches per pass (num_envs divisible by it).
    epochs: int = 1
    num_minibatches: int = 1
    # Clip range epsilon of the ratio, as in PPO.
    clip_range: float = 0.2
    # Divide by the group's std (False: centre only, "Dr. GRPO"). The group mean is GRPO's
    # baseline, so advantages are always centred.
    whiten_advantages: bool = True
    # GRPO's KL is the k3 estimator, in the loss (beta weighs it; PGConfig's default 0.05).
    kl_estimator: str = "k3"

    def validate(self) -> GRPOConfig:
        super().validate()
        self._check_groups("samples_per_prompt", 2)  # a group statistic needs k >= 2
        self._check_positive_ints("epochs", "num_minibatches")
        if self.num_envs % self.num_minibatches:
            raise ValueError(f"num_envs={self.num_envs} is not divisible by num_minibatches="
                             f"{self.num_minibatches}")
        if self.clip_range <= 0:
            raise ValueError(f"clip_range must be > 0, got {self.clip_range}")
        return self


class GRPOAgent(TrainableAgent):
    """GRPO on a tokengym vector env (see the module docstring)."""

    def advantages(self, b: Batch) -> dict[str, float]:
        adv = group_normalized_advantages(b.scores, self.group_size,
                                          self.config.whiten_advantages)
        b.advantages = adv[:, None] * b.mask
        return {"advantage_std": global_std(adv)}

    def update(self, b: Batch) -> dict[str, float]:
        cfg, beta = self.config, self.kl_controller.beta

        def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            logprobs, logp, _ = self.policy_forward(b, idx)
            mask = b.mask[idx]
            pg, stats = clipped_surrogate(b.advantages[idx],
                                          torch.where(mask, logprobs - b.logprobs[idx], 0.0),
                                          cfg.clip_range)
            # k3 of the current policy vs the reference: its gradient pulls towards the
            # reference. The log-ratio is masked BEFORE k3's exp: a padded position's log-prob
            # can be very negative, and exp overflow there would make the gradient NaN.
            kl = kl_per_token(torch.where(mask, logprobs, 0.0), b.ref_logprobs[idx], "k3")
            entropy = entropy_from_logp(logp)
            stats.update(policy_loss=pg.detach(), kl_loss=kl.detach(), entropy=entropy.detach())
            return pg + beta * kl - cfg.ent_coef * entropy, stats

        return self.optimize(b, loss_fn, cfg.epochs, cfg.num_minibatches)
