"""Config dataclasses shared by the trainable agents (one name and one meaning per setting).

- :class:`ConfigMixin`: ``field_names``/``to_dict``/``from_dict`` (unknown keys raise
  ``ValueError``; the renamed keys of :data:`RENAMED` are accepted with a ``DeprecationWarning``)
  and small validation helpers;
- :class:`PGConfig`: the fields every trainable agent has, each with its meaning and default
  (``seed``, ``num_envs``, ``temperature``, ``lr``, ``beta``, ``kl_estimator``...); PPOConfig and
  the baselines' configs derive from it and add their own.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from tokengym.agents.kl import KL_ESTIMATORS
from tokengym.checks import int_at_least, positive_int

DTYPES = ("float32", "bfloat16", "float16")
# The lowest sampling temperature a trainable agent accepts: logits / 1e-45 overflow to inf.
MIN_TEMPERATURE = 0.01

# Old config keys -> their one name now (docs/glossary.md). Accepted, with a DeprecationWarning,
# in from_dict (TOML files, run directories written by 0.1.0) until tokengym 0.3.
RENAMED: dict[str, str] = {
    "whiten_rewards": "scale_scores",
    "normalize_advantages": "whiten_advantages",  # RLOO
    "scale_rewards": "whiten_advantages",  # GRPO
    "target_kl": "adaptive_kl_target",  # frees `target_kl` for PPO's approx-KL early stop
    "horizon": "adaptive_kl_horizon",
    "estimator": "kl_estimator",  # KLPenaltyWrapper's keyword
}


class TokengymDeprecationWarning(DeprecationWarning):
    """An old name that still works for now; shown by default, since configs and flags are
    written by the users who need to see it (plain DeprecationWarnings are hidden outside
    ``__main__``)."""


warnings.simplefilter("default", TokengymDeprecationWarning)

# Run bookkeeping that 0.1.0 kept in the agent configs; now in tokengym.agents.loop.RunConfig.
RUN_SETTINGS = ("checkpoint_every", "keep_checkpoints", "num_samples")


def rename_deprecated(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` with every old key of :data:`RENAMED` under its new name (a
    ``DeprecationWarning`` per old key); ``ValueError`` when both names are given."""
    out = dict(values)
    for old, new in RENAMED.items():
        if old in out:
            if new in out:
                raise ValueError(f"{where}: both {old!r} (its old name) and {new!r} are set; "
                                 f"keep only {new!r}")
            warnings.warn(f"{where}: {old!r} is deprecated, use {new!r} (docs/glossary.md); the "
                          "old name is accepted until tokengym 0.3", TokengymDeprecationWarning,
                          stacklevel=3)
            out[new] = out.pop(old)
    return out


class ConfigMixin:
    """Dict conversions shared by every agent config (same behaviour as ``PPOConfig``'s)."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.field_names()}

    # Fields that cannot change when a run resumes (they shape the model, the optimizer's state
    # or the rollout stream); `tokengym train --resume DIR --FIELD X` is refused for them.
    FIXED_ON_RESUME: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """Build from a plain dict (TOML, JSON); unknown keys raise ``ValueError``; the old
        names of :data:`RENAMED` are accepted with a ``DeprecationWarning``."""
        values = rename_deprecated(values, cls.__name__)
        moved = sorted(set(values) & set(RUN_SETTINGS) - set(cls.field_names()))
        if moved:
            raise ValueError(f"{moved} are run settings (tokengym.agents.loop.RunConfig, TOML keys "
                             f"at the top level), not {cls.__name__} fields")
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; accepted: "
                             f"{', '.join(cls.field_names())}")
        return cls(**values)

    def check_types(self) -> None:
        """Every field holds what its annotation says (``bool`` is not a number here, an ``int``
        is a ``float``), and every float is finite: ``TypeError``/``ValueError`` naming the
        field. TOML and JSON give ``"ten"`` or ``true`` where a number belongs; a NaN or inf
        setting would train to NaN weights."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value, hint = getattr(self, f.name), hints[f.name]
            args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union,
                                                                       types.UnionType) else ()
            kinds = tuple(a for a in args if a is not type(None)) or (hint,)
            if value is None and type(None) in args:
                continue
            kind = kinds[0]
            if kind is bool:
                ok = isinstance(value, bool)
            elif kind is float:
                ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            elif kind is int:
                ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            else:
                ok = isinstance(value, kind) if isinstance(kind, type) else True
            if not ok:
                expected = " or ".join(k.__name__ for k in kinds) + (" or None" if args and
                                                                      type(None) in args else "")
                raise TypeError(f"{type(self).__name__}.{f.name} must be {expected}, got "
                                f"{value!r} ({type(value).__name__})")
            if kind is float and not math.isfinite(value):
                raise ValueError(f"{type(self).__name__}.{f.name} must be a finite number, "
                                 f"got {value}")

    def _check_positive_ints(self, *names: str) -> None:
        for name in names:
            positive_int(name, getattr(self, name))

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
    """Fields shared by every trainable agent: PPO (:class:`~tokengym.agents.ppo_config.PPOConfig`
    adds its own) and the policy-gradient baselines. Names follow ``docs/glossary.md``."""

    # -- experience --------------------------------------------------------------------------
    # Reproducibility: seeds the sampling generator, minibatch shuffling, the value head's init
    # and, with the iteration number, the env reset of every rollout.
    seed: int = 0
    # Episodes per rollout (rows of the vector env; prompts x samples_per_prompt for the group
    # baselines); one episode per row per iteration.
    num_envs: int = 16
    # Sampling temperature; the policy's logits are divided by it in the rollout AND the update,
    # so the log-probs being optimised are those of the distribution that was sampled.
    temperature: float = 1.0

    # -- optimisation ------------------------------------------------------------------------
    # Adam learning rate (policy, and value head where there is one).
    lr: float = 1e-5
    # Adam's eps; Adam's betas are torch's defaults.
    adam_eps: float = 1e-8
    # Decoupled weight decay (AdamW); 0 is plain Adam.
    weight_decay: float = 0.0
    # Global gradient-norm clip (0 disables clipping).
    max_grad_norm: float = 1.0
    # Each (mini)batch is split into this many micro-batches whose gradients are summed before
    # the optimizer step (same result as one big batch, less memory).
    grad_accum_steps: int = 1
    # Weight of the entropy bonus (subtracted from the loss).
    ent_coef: float = 0.0
    # Linear learning-rate warm-up: iteration i (0-based) uses lr * min(1, (i + 1) / this);
    # 0 = none. The first updates are where a fresh optimizer's steps are largest.
    warmup_iterations: int = 0

    # -- rewards -----------------------------------------------------------------------------
    # Rescale the env's scores to unit std per rollout (mean kept) before anything else.
    scale_scores: bool = False
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
    adaptive_kl_target: float = 6.0
    # The controller's time constant, in episodes.
    adaptive_kl_horizon: int = 10000

    # -- model -------------------------------------------------------------------------------
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
    # Decode rollouts with a preallocated KV cache and a compiled single-token step
    # (torch.compile; CUDA graphs on CUDA); None = on CUDA only (on CPU it was not faster).
    # Where compiling is unavailable or fails, one warning and the eager path.
    compile: bool | None = None
    # Shard the weights, gradients and Adam moments of the policy (and of the reference) between
    # the processes of a multi-process run with FSDP2, for models whose training state does not
    # fit on one device (agents/fsdp.py); checkpoints are the same files either way.
    fsdp: bool = False
    # Recompute the old log-probs (the sampling policy's, in PPO's ratio and the KL) with one
    # teacher-forced forward, the update's own path, instead of taking the sampling forward's;
    # None = when dtype is not float32, whose rounding differs between the two paths.
    recompute_logprobs: bool | None = None

    FIXED_ON_RESUME: ClassVar[tuple[str, ...]] = (
        "seed", "num_envs", "lora", "lora_r", "lora_alpha", "lora_dropout",
        "lora_target_modules", "dtype")

    def validate(self) -> Any:
        """Raise ``ValueError`` naming the bad value and the fix; returns ``self``."""
        self.check_types()
        self._check_positive_ints("num_envs", "grad_accum_steps", "adaptive_kl_horizon", "lora_r")
        int_at_least("warmup_iterations", self.warmup_iterations, 0)
        if self.temperature < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be >= {MIN_TEMPERATURE} to train (logits divided "
                             f"by less overflow; greedy decoding has no log-probs), got "
                             f"{self.temperature}")
        if not 0 < self.lr <= 1:
            raise ValueError(f"lr must be in (0, 1] (typical: 1e-6 to 1e-4), got {self.lr}")
        for name in ("max_grad_norm", "ent_coef", "beta", "weight_decay", "lora_dropout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator={self.kl_estimator!r}; accepted: {KL_ESTIMATORS}")
        if self.adaptive_kl and self.adaptive_kl_target <= 0:
            raise ValueError(f"adaptive_kl needs adaptive_kl_target > 0, got "
                             f"{self.adaptive_kl_target}; set a positive target")
        if self.adaptive_kl and self.beta == 0:
            raise ValueError("adaptive_kl with beta=0 can never move beta (it is multiplicative); "
                             "start from beta > 0, e.g. 0.05")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; accepted: {DTYPES}")
        if self.fsdp and self.lora:
            raise ValueError("fsdp=True with lora=True is not supported: LoRA's training state "
                             "is already small; use one or the other")
        if self.fsdp and self.compile:
            raise ValueError("fsdp=True decodes eagerly (the compiled step cannot hold sharded "
                             "weights); leave compile unset or False")
        if self.grad_accum_steps > self.num_envs:
            raise ValueError(f"grad_accum_steps={self.grad_accum_steps} > num_envs="
                             f"{self.num_envs}: a micro-batch needs at least one episode")
        return self

    def recomputes_logprobs(self) -> bool:
        """``recompute_logprobs`` resolved: None means when ``dtype`` is not float32."""
        if self.recompute_logprobs is None:
            return self.dtype != "float32"
        return self.recompute_logprobs


VALUE_MODELS = ("auto", "shared", "separate")
VALUE_HEADS = ("linear", "mlp")


@dataclass
class CriticConfig(PGConfig):
    """:class:`PGConfig` plus the value function's settings, for the agents with a critic (PPO,
    A2C)."""

    # Discount of the per-token shaped reward.
    gamma: float = 1.0
    # GAE lambda.
    lam: float = 0.95
    # Weight of the value loss in the total loss.
    vf_coef: float = 0.1
    # Learning rate of the critic (value head, and the separate value trunk); None = lr.
    value_lr: float | None = None
    # Normalise advantages to zero mean / unit std over the rollout's tokens.
    whiten_advantages: bool = True
    # "shared": a scalar value head on the policy's last hidden state (one trunk);
    # "separate": a second copy of the LM trunk with its own value head (twice the memory and
    # the critic's compute; a better critic, docs/ppo.md); "auto": "separate" with full
    # fine-tuning, "shared" with LoRA (a LoRA policy has no full trunk to copy cheaply).
    value_model: str = "shared"
    # "linear": Linear(hidden, 1) on the hidden state; "mlp": Linear(hidden, hidden), GELU,
    # Linear(hidden, 1). Either ends in a zero-initialised layer, so values start at 0.
    value_head: str = "linear"

    FIXED_ON_RESUME: ClassVar[tuple[str, ...]] = (*PGConfig.FIXED_ON_RESUME, "value_model",
                                                  "value_head")

    def validate(self) -> Any:
        super().validate()
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.vf_coef < 0:
            raise ValueError(f"vf_coef must be >= 0, got {self.vf_coef}")
        if self.value_lr is not None and not 0 < self.value_lr <= 1:
            raise ValueError(f"value_lr must be in (0, 1] (or None: the policy's lr), got "
                             f"{self.value_lr}")
        if self.value_model not in VALUE_MODELS:
            raise ValueError(f"value_model={self.value_model!r}; accepted: {VALUE_MODELS}")
        if self.value_head not in VALUE_HEADS:
            raise ValueError(f"value_head={self.value_head!r}; accepted: {VALUE_HEADS}")
        if self.lora and self.value_model == "separate":
            raise ValueError(
                "lora=True with value_model='separate' is not supported; use value_model='shared' "
                "(or 'auto') with LoRA, or full fine-tuning with a separate value model"
            )
        return self

    def critic_trunk(self) -> str:
        """``value_model`` resolved: ``"shared"`` or ``"separate"`` (``"auto"`` is
        ``"separate"`` with full fine-tuning, ``"shared"`` with LoRA)."""
        if self.value_model == "auto":
            return "shared" if self.lora else "separate"
        return self.value_model
