"""What the policy-gradient baselines (REINFORCE, RLOO, GRPO, A2C) share, written once.

- their configs derive from :class:`~tokengym.agents.agent_config.PGConfig`;
- :class:`PolicyGradientAgent`: policy + reference (:class:`ActorCritic`), optimizer, KL
  controller, rollout through the env (:func:`collect_rollout`, grouped with
  :class:`PromptGroups` when ``samples_per_prompt > 1``), reference log-probs and KL, one
  gradient step in micro-batches, ``train_iteration``/``evaluate``/``state_dict`` with PPO's
  metric names. A subclass writes ``advantages`` (how it credits samples) and ``update``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .advantages import masked_mean, whiten
from .groups import PromptGroups
from .kl import kl_per_token, make_kl_controller
from .policy import ActorCritic, completion_logits, entropy_from_logp, token_logprobs
from .ppo import rollout_seed, timed_iteration, trim_columns
from .rollout import Rollout, collect_rollout


@dataclass
class PGBatch:
    """A prepared rollout; ``N`` episodes, ``g`` = longest episode's steps."""

    input_ids: torch.Tensor  # (N, P' + g) prompt + completion (all-padding columns dropped)
    attention_mask: torch.Tensor  # (N, P' + g)
    tokens: torch.Tensor  # (N, g)
    mask: torch.Tensor  # (N, g) bool
    logprobs: torch.Tensor  # (N, g) at sampling time
    ref_logprobs: torch.Tensor  # (N, g) under the reference
    kl: torch.Tensor  # (N, g) per-token KL estimate (config.kl_estimator), 0 outside mask
    scores: torch.Tensor  # (N,) env scores after penalty/whitening
    advantages: torch.Tensor | None = None  # (N, g), set by the agent
    returns: torch.Tensor | None = None  # (N, g) value targets (value-based agents)
    values: torch.Tensor | None = None  # (N, g) rollout values (value-based agents)


def build_actor_critic(lm: torch.nn.Module, config: Any) -> ActorCritic:
    """Wrap a causal LM as PPOAgent does (LoRA, value model and seed from ``config``)."""
    return ActorCritic(
        lm, value_model=getattr(config, "value_model", "shared"), lora=config.lora,
        seed=config.seed,
        lora_kwargs=dict(r=config.lora_r, lora_alpha=config.lora_alpha,
                         lora_dropout=config.lora_dropout,
                         target_modules=config.lora_target_modules),
    )


class PolicyGradientAgent:
    """Base of the trainable baselines; see the module docstring. Subclasses set
    ``uses_value_head`` and implement :meth:`advantages` (and :meth:`update` when the default
    vanilla policy-gradient step does not fit)."""

    uses_value_head = False

    def __init__(self, envs: Any, policy: ActorCritic | torch.nn.Module, config: Any) -> None:
        self.config = config.validate()
        if envs is not None and envs.num_envs != config.num_envs:
            raise ValueError(f"the env has num_envs={envs.num_envs} but config.num_envs="
                             f"{config.num_envs}; build the env with num_envs=config.num_envs")
        self.policy = policy if isinstance(policy, ActorCritic) else build_actor_critic(policy,
                                                                                      config)
        self.group_size = int(getattr(config, "samples_per_prompt", 1))
        self.envs = self.grouped(envs) if envs is not None else None
        self.num_actions = int(envs.single_action_space.n) if envs is not None else None
        # An unused value head gets no gradient; leaving it out keeps Adam's state small.
        params = [p for n, p in self.policy.named_parameters() if p.requires_grad
                  and (self.uses_value_head or not n.startswith(("value_head", "value_trunk")))]
        self.params = params
        self.optimizer = torch.optim.AdamW(
            params, lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay,
            fused=self.policy.device.type in ("cpu", "cuda"),
        )
        self.kl_controller = make_kl_controller(config.beta, config.adaptive_kl,
                                                config.target_kl, config.horizon)
        self.sample_generator = torch.Generator(device=self.policy.device).manual_seed(config.seed)
        self.shuffle_generator = torch.Generator().manual_seed(config.seed + 1)
        self.iteration = 0

    def grouped(self, envs: Any) -> Any:
        """``envs`` with consecutive rows sharing a prompt when ``samples_per_prompt > 1``."""
        if self.group_size == 1 or isinstance(envs, PromptGroups):
            return envs
        return PromptGroups(envs, self.group_size)

    # -- experience --------------------------------------------------------------------------
    def collect(self, seed: int | None = None, envs: Any = None) -> Rollout:
        """One episode per env row. Training rollouts (``envs=None``) come in groups of
        ``samples_per_prompt`` rows sharing a prompt; other envs are used as they are."""
        envs = self.envs if envs is None else envs
        seed = rollout_seed(self.config.seed, self.iteration) if seed is None else seed
        value_fn = self.policy.rollout_value_fn() if self.uses_value_head else None
        rollout = collect_rollout(envs, self.policy.lm, seed=seed,
                                  temperature=self.config.temperature,
                                  generator=self.sample_generator, value_fn=value_fn)
        if self.uses_value_head and rollout.values is None:  # separate value trunk
            ids, am = rollout.sequences()
            values = self.policy.separate_values(ids.to(self.policy.device),
                                                 am.to(self.policy.device), rollout.tokens.shape[1])
            rollout.values = values.cpu() * rollout.mask
        return rollout

    def prepare(self, rollout: Rollout) -> tuple[PGBatch, dict[str, float]]:
        """:meth:`prepare_common`, then the agent's :meth:`advantages`."""
        batch, metrics = self.prepare_common(rollout)
        metrics.update(self.advantages(batch))
        return batch, metrics

    def prepare_common(self, rollout: Rollout) -> tuple[PGBatch, dict[str, float]]:
        """Reference log-probs (ONE batched forward), per-token KL, scores; reward/KL metrics."""
        cfg, device = self.config, self.policy.device
        num_actions = self.num_actions or int(rollout.tokens.max()) + 1
        g = max(int(rollout.lengths.max()), 1)
        mask = rollout.mask[:, :g].to(device)
        tokens = rollout.tokens[:, :g].to(device)
        logprobs = rollout.logprobs[:, :g].to(device)
        ids, am = trim_columns(
            torch.cat([rollout.prompt_ids, rollout.tokens[:, :g]], 1).to(device),
            torch.cat([rollout.prompt_mask, rollout.mask[:, :g].long()], 1).to(device), g)
        ref = self.policy.reference_logprobs(ids, am, tokens, cfg.temperature, num_actions)
        ref = torch.where(mask, ref, 0.0)
        kl = torch.where(mask, kl_per_token(logprobs, ref, cfg.kl_estimator), 0.0)
        scores = rollout.rewards.to(device, torch.float32)
        if cfg.no_stop_penalty is not None:
            scores = torch.where(~rollout.terminated.to(device), scores + cfg.no_stop_penalty,
                                 scores)
        if cfg.whiten_rewards:
            scores = whiten(scores, shift_mean=False)
        values = rollout.values[:, :g].to(device) if rollout.values is not None else None
        batch = PGBatch(ids, am, tokens, mask, logprobs, ref, kl, scores, values=values)
        beta = self.kl_controller.beta
        kl_seq = kl.sum(-1)
        metrics = {
            "reward_mean": float(rollout.rewards.mean()),
            "reward_std": float(rollout.rewards.std()) if len(rollout.rewards) > 1 else 0.0,
            "kl_mean": float(kl_seq.mean()),
            "kl_token_mean": float(kl.sum() / mask.sum().clamp(min=1)),
            "beta": beta,
            "kl_penalty_mean": float((-beta * kl_seq).mean()),
            "episode_length_mean": float(rollout.lengths.float().mean()),
            "stop_fraction": float(rollout.terminated.float().mean()),
        }
        return batch, metrics

    def advantages(self, batch: PGBatch) -> dict[str, float]:
        """Fill ``batch.advantages`` (and ``returns``); return extra metrics."""
        raise NotImplementedError

    # -- the update --------------------------------------------------------------------------
    def policy_forward(self, b: PGBatch, idx: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Rows ``idx``: ``(logprobs (n, g), logp (n, g, V), values (n, g) or None)``."""
        g = b.mask.shape[1]
        ids, am = trim_columns(b.input_ids[idx], b.attention_mask[idx], g)
        if self.uses_value_head:
            logits, values = self.policy.forward_policy(ids, am, g)
        else:
            logits, values = completion_logits(self.policy.lm, ids, am, g)[0], None
        logprobs, logp = token_logprobs(logits, b.tokens[idx], self.config.temperature,
                                        self.num_actions or logits.shape[-1])
        return logprobs, logp, values

    def gradient_step(self, b: PGBatch, rows: torch.Tensor, micro_batches: int,
                      loss_fn: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, Any]]]
                      ) -> dict[str, float]:
        """One optimizer step on ``rows``: ``loss_fn(idx)`` returns the micro-batch's per-token
        loss ``(n, g)`` and stats ``(n, g)``; losses are summed over tokens and divided by the
        token count of ``rows`` so the micro-batches add up to the token mean over ``rows``."""
        self.optimizer.zero_grad(set_to_none=True)
        n_tokens = b.mask[rows].sum().clamp(min=1)
        totals: dict[str, float] = {}
        for micro in rows.split(max(len(rows) // micro_batches, 1)):
            per_token, stats = loss_fn(micro)
            mask = b.mask[micro]
            (torch.where(mask, per_token, 0.0).sum() / n_tokens).backward()
            with torch.no_grad():
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + float((value * mask).sum() / n_tokens)
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")
        totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        self.optimizer.step()
        return totals

    def update(self, b: PGBatch) -> dict[str, float]:
        """Default: ONE vanilla policy-gradient step on the whole rollout, loss
        ``-A_t * log pi(a_t|s_t) - ent_coef * H_t`` token-averaged (REINFORCE, RLOO)."""
        ent_coef = self.config.ent_coef

        def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            logprobs, logp, _ = self.policy_forward(b, idx)
            entropy = entropy_from_logp(logp)
            pg = -b.advantages[idx] * logprobs
            return pg - ent_coef * entropy, {"policy_loss": pg.detach(),
                                             "entropy": entropy.detach()}

        rows = torch.arange(b.mask.shape[0], device=b.mask.device)
        return self.gradient_step(b, rows, self.config.grad_accum_steps, loss_fn)

    # -- one iteration -----------------------------------------------------------------------
    def train_iteration(self) -> dict[str, Any]:
        """Rollout + update; returns the iteration's metrics (PPO's names, ``docs/metrics.md``)."""
        return timed_iteration(self)

    @torch.no_grad()
    def evaluate(self, envs: Any = None, seed: int = 12345) -> tuple[Rollout, dict[str, float]]:
        """One rollout with the current policy, no update, private RNG: ``(rollout, metrics)``."""
        saved = self.sample_generator.get_state()
        self.sample_generator.manual_seed(seed)
        try:
            rollout = self.collect(seed=seed, envs=envs)
            _, metrics = self.prepare_common(rollout)
        finally:
            self.sample_generator.set_state(saved)
        return rollout, {k: metrics[k] for k in ("reward_mean", "kl_mean", "kl_token_mean")}

    # -- state for checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights and the optimizer (see :mod:`agents.checkpoint`)."""
        return {"iteration": self.iteration, "kl_controller": self.kl_controller.state_dict(),
                "sample_generator": self.sample_generator.get_state(),
                "shuffle_generator": self.shuffle_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.sample_generator.set_state(state["sample_generator"])
        self.shuffle_generator.set_state(state["shuffle_generator"])


def token_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """``masked_mean`` as a float (for metrics)."""
    return float(masked_mean(x, mask))
