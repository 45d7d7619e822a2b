"""``PPOConfig``: every hyperparameter of the token-level PPO agent, with its meaning and default.

The fields every trainable agent shares (seed, num_envs, temperature, lr, beta, kl_estimator,
LoRA, dtype...) are declared once, with their meanings, in
:class:`~tokengym.agents.agent_config.PGConfig`, the critic's (gamma, lam, vf_coef,
value_model...) in :class:`~tokengym.agents.agent_config.CriticConfig`; this class adds PPO's
own. Names follow ``docs/glossary.md``. Each field is settable from ``tokengym train`` flags
(``--num-envs 16``) and from a TOML file (``num_envs = 16``); see ``docs/ppo.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokengym.agents.agent_config import DTYPES, VALUE_MODELS, CriticConfig
from tokengym.agents.kl import KL_ESTIMATORS
from tokengym.checks import int_at_least

__all__ = ["DTYPES", "KL_ESTIMATORS", "VALUE_MODELS", "PPOConfig"]


@dataclass
class PPOConfig(CriticConfig):
    """Hyperparameters of :class:`~tokengym.agents.ppo.PPOAgent` (see ``docs/ppo.md``); the
    shared ones are documented on :class:`~tokengym.agents.agent_config.PGConfig` and
    :class:`~tokengym.agents.agent_config.CriticConfig` (gamma, lam, vf_coef, value_model...)."""

    # PPO's own defaults of shared fields, chosen from measurements on SmolLM2-135M + Sentiment-v0
    # (docs/ppo.md, "Defaults and why"): with warm-up, the approximate-KL early stop and a
    # critic with its own rate, 3e-5 keeps every update inside the trust region.
    lr: float = 3e-5
    warmup_iterations: int = 4
    value_lr: float | None = 1e-4
    # A separate value trunk with full fine-tuning, the shared one with LoRA: the shared trunk's
    # critic did not reach an explained variance of 0.3 in 1,024 episodes, the separate one did
    # (docs/ppo.md, "Defaults and why": runs D, J, G2).
    value_model: str = "auto"

    # -- optimisation ------------------------------------------------------------------------
    # Passes over each rollout.
    epochs: int = 4
    # Minibatches per epoch; num_envs must be divisible by it. One optimizer step per minibatch.
    num_minibatches: int = 2
    # Extra passes over each rollout for the critic alone, after the policy's epochs (the value
    # head on the frozen trunk's features: nearly free with the shared trunk).
    value_epochs: int = 0

    # -- PPO losses --------------------------------------------------------------------------
    # Clip range epsilon of the surrogate: ratio is clipped to [1 - clip_range, 1 + clip_range].
    clip_range: float = 0.2
    # Value predictions may move at most this far from the rollout's values (clipped value loss).
    # 0 disables value clipping.
    value_clip_range: float = 0.2
    # Early stop of the policy's update: when a minibatch's mean approximate KL between the
    # current policy and the rollout's (approx_kl, per token) exceeds this, its step is skipped
    # and the policy's update ends; the critic takes the remaining steps alone (SB3's and
    # CleanRL's `target_kl`). None = all epochs x minibatches.
    max_approx_kl: float | None = 0.05

    def validate(self) -> PPOConfig:
        """Raise ``ValueError`` naming the bad value and the fix; returns ``self``."""
        super().validate()
        self._check_positive_ints("epochs", "num_minibatches")
        int_at_least("value_epochs", self.value_epochs, 0)
        if self.num_envs % self.num_minibatches:
            raise ValueError(
                f"num_envs={self.num_envs} is not divisible by num_minibatches="
                f"{self.num_minibatches}; pick num_minibatches among the divisors of num_envs"
            )
        minibatch = self.num_envs // self.num_minibatches
        if minibatch % self.grad_accum_steps:
            raise ValueError(
                f"the minibatch size num_envs/num_minibatches={minibatch} is not divisible by "
                f"grad_accum_steps={self.grad_accum_steps}; pick a divisor of {minibatch}"
            )
        if self.clip_range <= 0:
            raise ValueError(f"clip_range must be > 0, got {self.clip_range}")
        if self.value_clip_range < 0:
            raise ValueError(f"value_clip_range must be >= 0, got {self.value_clip_range}")
        if self.max_approx_kl is not None and not self.max_approx_kl > 0:
            raise ValueError(f"max_approx_kl must be > 0 (or None: no early stop), got "
                             f"{self.max_approx_kl}")
        if self.vf_coef == 0 and self.lam < 1:
            # Without a trained value function, GAE with lam < 1 bootstraps from an untrained head.
            raise ValueError(
                f"vf_coef=0 trains no value function but lam={self.lam} < 1 bootstraps from it; "
                "set vf_coef > 0 or lam = 1"
            )
        return self
