"""REINFORCE leave-one-out (RLOO; Ahmadian et al. 2024): k samples per prompt, through the env.

Each episode's reward is its KL-shaped sequence reward ``R_i = score_i - beta * sum_t KL_i,t``;
its baseline is the mean reward of the OTHER k - 1 samples of the same prompt, so
``A_i = R_i - mean_{j != i} R_j`` (:func:`~tokengym.agents.groups.leave_one_out_advantages`),
applied to every token of the episode. One vanilla policy-gradient step per rollout
(:meth:`~tokengym.agents.base.TrainableAgent.update`). The env's rows come in groups of k that share a prompt
(:class:`~tokengym.agents.groups.PromptGroups`): ``num_envs = prompts x samples_per_prompt``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokengym.agents.advantages import whiten
from tokengym.agents.agent_config import PGConfig
from tokengym.agents.base import TrainableAgent
from tokengym.agents.batch import Batch
from tokengym.agents.distributed import global_mean, global_std
from tokengym.agents.groups import leave_one_out_advantages


@dataclass
class RLOOConfig(PGConfig):
    """Hyperparameters of :class:`RLOOAgent` (shared fields: :class:`PGConfig`)."""

    # k: samples of each prompt per rollout; num_envs must be a multiple of it.
    samples_per_prompt: int = 4
    # Normalise advantages to zero mean / unit std over the rollout's episodes (leave-one-out
    # advantages already have zero mean, so this only rescales them).
    whiten_advantages: bool = False

    def validate(self) -> RLOOConfig:
        super().validate()
        self._check_groups("samples_per_prompt", 2)  # a leave-one-out baseline needs k >= 2
        return self


class RLOOAgent(TrainableAgent):
    """RLOO on a tokengym vector env (see the module docstring)."""

    def advantages(self, b: Batch) -> dict[str, float]:
        rewards = b.scores - self.kl_controller.beta * b.kl.sum(-1)  # (N,) KL-shaped
        adv = leave_one_out_advantages(rewards, self.group_size)  # groups never span ranks
        if self.config.whiten_advantages:
            adv = whiten(adv)
        b.advantages = adv[:, None] * b.mask  # (N, g): the episode's advantage on every token
        return {"return_mean": global_mean(rewards), "advantage_std": global_std(adv)}
