"""``PPOConfig``: every hyperparameter of the token-level PPO agent, with its meaning and default.

The names follow ``docs/glossary.md`` (``beta``, ``kl_estimator``, ``target_kl``, ``horizon``...).
Each field is settable from ``tokengym train`` flags (``--num-envs 16``) and from a TOML file
(``num_envs = 16``); see ``docs/ppo.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

KL_ESTIMATORS = ("k1", "k3")
VALUE_MODELS = ("shared", "separate")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class PPOConfig:
    """Hyperparameters of :class:`~tokengym.agents.ppo.PPOAgent` (see ``docs/ppo.md``)."""

    # -- experience --------------------------------------------------------------------------
    # Reproducibility: seeds the sampling generator, minibatch shuffling, the value head's init
    # and, with the iteration number, the env reset of every rollout.
    seed: int = 0
    # Episodes per rollout (rows of the vector env); one episode per row per iteration.
    num_envs: int = 16
    # Sampling temperature; the policy's logits are divided by it in the rollout AND the update,
    # so the log-probs PPO optimises are those of the distribution that was sampled.
    temperature: float = 1.0

    # -- optimisation ------------------------------------------------------------------------
    # Adam learning rate (policy and value head).
    lr: float = 1e-5
    # Passes over each rollout.
    epochs: int = 4
    # Minibatches per epoch; num_envs must be divisible by it. One optimizer step per minibatch.
    num_minibatches: int = 2
    # Each minibatch is split into this many micro-batches whose gradients are summed before the
    # optimizer step (same result as one big minibatch, less memory).
    grad_accum_steps: int = 1
    # Global gradient-norm clip (0 disables clipping).
    max_grad_norm: float = 1.0
    # Adam's eps; Adam's betas are torch's defaults.
    adam_eps: float = 1e-8
    # Decoupled weight decay (AdamW); 0 is plain Adam.
    weight_decay: float = 0.0

    # -- PPO losses --------------------------------------------------------------------------
    # Clip range epsilon of the surrogate: ratio is clipped to [1 - clip_range, 1 + clip_range].
    clip_range: float = 0.2
    # Value predictions may move at most this far from the rollout's values (clipped value loss).
    # 0 disables value clipping.
    value_clip_range: float = 0.2
    # Weight of the value loss in the total loss.
    vf_coef: float = 0.1
    # Weight of the entropy bonus (subtracted from the loss).
    ent_coef: float = 0.0

    # -- rewards and advantages --------------------------------------------------------------
    # Discount of the per-token shaped reward.
    gamma: float = 1.0
    # GAE lambda.
    lam: float = 0.95
    # Normalise the env's scores to zero mean / unit std per rollout before shaping.
    whiten_rewards: bool = False
    # Normalise advantages to zero mean / unit std over the rollout's tokens.
    whiten_advantages: bool = True
    # Added to the score of episodes that end without a stop token (truncated); None = no penalty.
    # Typically negative, e.g. -1.0.
    no_stop_penalty: float | None = None

    # -- KL to the reference -----------------------------------------------------------------
    # KL coefficient: shaped reward r_t = -beta * KL_t (+ score at the last token).
    beta: float = 0.05
    # "k1" (log-ratio, unbiased) or "k3" (exp(-d) - 1 + d, unbiased and always >= 0).
    kl_estimator: str = "k1"
    # Adapt beta with the Ziegler et al. (2019) proportional controller.
    adaptive_kl: bool = False
    # The controller's set point: the wanted KL per episode (sum over its tokens), in nats.
    target_kl: float = 6.0
    # The controller's time constant, in episodes.
    horizon: int = 10000

    # -- model -------------------------------------------------------------------------------
    # "shared": a scalar value head on the policy's last hidden state (one trunk);
    # "separate": a second copy of the LM trunk with its own value head.
    value_model: str = "shared"
    # Train LoRA adapters (peft) instead of all weights; the reference is then the base model
    # with the adapters disabled, so no second copy is kept.
    lora: bool = False
    # LoRA rank, scaling alpha, dropout, and the modules adapted ("all-linear" or a comma list).
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"
    # Parameter dtype of policy and reference.
    dtype: str = "float32"
    # "cpu", "cuda", ... or "auto" (CUDA when available).
    device: str = "auto"

    # -- bookkeeping (not hyperparameters of the update itself) ------------------------------
    # Write a checkpoint every this many iterations (tokengym train).
    checkpoint_every: int = 10
    # Checkpoints kept on disk (older ones are deleted).
    keep_checkpoints: int = 2
    # Episodes in the before/after sample table.
    num_samples: int = 4

    def validate(self) -> PPOConfig:
        """Raise ``ValueError`` naming the bad value and the fix; returns ``self``."""
        positive_ints = ("num_envs", "epochs", "num_minibatches", "grad_accum_steps", "horizon",
                         "lora_r", "checkpoint_every", "keep_checkpoints")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {self.num_samples}")
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
        if self.temperature <= 0:
            raise ValueError(
                f"temperature must be > 0 for PPO (log-probs of greedy decoding are undefined), "
                f"got {self.temperature}"
            )
        for name in ("lr", "clip_range"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_grad_norm", "value_clip_range", "vf_coef", "ent_coef", "beta",
                     "weight_decay", "lora_dropout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator={self.kl_estimator!r}; accepted: {KL_ESTIMATORS}")
        if self.adaptive_kl and self.target_kl <= 0:
            raise ValueError(
                f"adaptive_kl needs target_kl > 0, got {self.target_kl}; set a positive target"
            )
        if self.adaptive_kl and self.beta == 0:
            raise ValueError(
                "adaptive_kl with beta=0 can never move beta (it is multiplicative); start from "
                "beta > 0, e.g. 0.05"
            )
        if self.value_model not in VALUE_MODELS:
            raise ValueError(f"value_model={self.value_model!r}; accepted: {VALUE_MODELS}")
        if self.lora and self.value_model == "separate":
            raise ValueError(
                "lora=True with value_model='separate' is not supported; use value_model='shared' "
                "with LoRA, or full fine-tuning with a separate value model"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; accepted: {DTYPES}")
        if self.vf_coef == 0 and self.lam < 1:
            # Without a trained value function, GAE with lam < 1 bootstraps from an untrained head.
            raise ValueError(
                f"vf_coef=0 trains no value function but lam={self.lam} < 1 bootstraps from it; "
                "set vf_coef > 0 or lam = 1"
            )
        return self

    # -- conversions -------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the settable fields."""
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.field_names()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PPOConfig:
        """Build from a plain dict (TOML, JSON); unknown keys raise ``ValueError``."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"unknown PPOConfig field(s) {unknown}; accepted: {', '.join(cls.field_names())}"
            )
        return cls(**values)
