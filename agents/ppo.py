"""Token-level PPO with KL shaping, trained through a tokengym vector env's ``reset``/``step``.

One iteration (:meth:`PPOAgent.train_iteration`):

1. rollout: one episode per env row via :func:`collect_rollout` (KV cache; log-probs and values
   come out of the sampling forward, so no extra policy forward is needed);
2. reference log-probs of the sampled tokens: ONE batched teacher-forced forward;
3. shaped per-token rewards ``r_t = -beta * KL_t`` (+ score at the last token), GAE, whitening;
4. ``epochs`` x ``num_minibatches`` updates, each minibatch ONE teacher-forced forward (split in
   ``grad_accum_steps`` micro-batches) with the clipped surrogate, the clipped value loss and the
   entropy bonus, then a clipped-gradient Adam step;
5. the adaptive controller, if any, moves beta from the rollout's KL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .advantages import gae, masked_mean, shaped_rewards, whiten
from .kl import make_kl_controller
from .policy import ActorCritic, entropy_from_logp, token_logprobs
from .ppo_config import PPOConfig
from .rollout import Rollout, collect_rollout


def rollout_seed(seed: int, iteration: int) -> int:
    """The env reset seed of ``iteration``: prompts depend only on (seed, iteration).

    That is what makes resuming exact and makes every vector-env implementation agree.
    """
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0])


def trim_columns(input_ids: torch.Tensor, attention_mask: torch.Tensor, gen_len: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the leading columns that are padding in every row (never the last ``gen_len``).

    Positions come from ``attention_mask.cumsum``, so the forward's result is unchanged.
    """
    used = attention_mask.any(0).nonzero()
    first = int(used[0]) if used.numel() else 0
    first = min(first, input_ids.shape[1] - gen_len - 1)
    return input_ids[:, first:], attention_mask[:, first:]


def timed_iteration(agent: Any) -> dict[str, Any]:
    """One training iteration of ``agent`` (``collect`` -> ``prepare`` -> ``update`` -> beta
    controller), timed phase by phase. Shared by PPO and the policy-gradient baselines so that
    every agent reports the same metric names (``docs/metrics.md``)."""
    t0 = time.perf_counter()
    rollout = agent.collect()
    t1 = time.perf_counter()
    batch, metrics = agent.prepare(rollout)
    t2 = time.perf_counter()
    metrics.update(agent.update(batch))
    t3 = time.perf_counter()
    agent.kl_controller.update(metrics["kl_mean"], batch.mask.shape[0])
    agent.iteration += 1
    tokens = int(rollout.lengths.sum())
    return {
        "iteration": agent.iteration,
        **metrics,
        "tokens": tokens,
        "rollout_tokens_per_s": tokens / max(t1 - t0, 1e-9),
        "time_rollout_s": t1 - t0,
        "time_reference_s": t2 - t1,
        "time_update_s": t3 - t2,
        "time_iteration_s": t3 - t0,
    }


@dataclass
class PPOBatch:
    """A rollout ready for the update; ``N`` episodes, ``g`` = longest episode's steps."""

    input_ids: torch.Tensor  # (N, P + g) prompt + completion
    attention_mask: torch.Tensor  # (N, P + g)
    tokens: torch.Tensor  # (N, g) sampled tokens
    mask: torch.Tensor  # (N, g) bool, episode steps
    logprobs: torch.Tensor  # (N, g) log-probs at sampling time (the "old" policy)
    values: torch.Tensor  # (N, g) values at sampling time
    advantages: torch.Tensor  # (N, g)
    returns: torch.Tensor  # (N, g) value targets


class PPOAgent:
    """PPO on a tokengym vector env (native ``TextGenVectorEnv`` or a ``SyncVectorEnv``).

    Args:
        envs: the vector env, NEXT_STEP autoreset, ``num_envs == config.num_envs``.
        policy: an :class:`ActorCritic`, or a causal LM to wrap in one as ``config`` says.
        config: the hyperparameters (validated here).
    """

    def __init__(self, envs: Any, policy: ActorCritic | torch.nn.Module, config: PPOConfig) -> None:
        self.config = config.validate()
        if envs.num_envs != config.num_envs:
            raise ValueError(
                f"the env has num_envs={envs.num_envs} but config.num_envs={config.num_envs}; "
                "build the env with num_envs=config.num_envs"
            )
        if not isinstance(policy, ActorCritic):
            policy = ActorCritic(
                policy, value_model=config.value_model, lora=config.lora, seed=config.seed,
                lora_kwargs=dict(r=config.lora_r, lora_alpha=config.lora_alpha,
                                 lora_dropout=config.lora_dropout,
                                 target_modules=config.lora_target_modules),
            )
        self.envs = envs
        self.policy = policy
        self.num_actions = int(envs.single_action_space.n)
        # The fused kernel updates all parameters in one pass (CPU and CUDA); it matters for
        # full fine-tuning, where the optimizer step touches every weight.
        self.optimizer = torch.optim.AdamW(
            policy.trainable_parameters(), lr=config.lr, eps=config.adam_eps,
            weight_decay=config.weight_decay, fused=policy.device.type in ("cpu", "cuda"),
        )
        self.kl_controller = make_kl_controller(config.beta, config.adaptive_kl, config.target_kl,
                                                config.horizon)
        self.sample_generator = torch.Generator(device=policy.device).manual_seed(config.seed)
        self.shuffle_generator = torch.Generator().manual_seed(config.seed + 1)
        self.iteration = 0  # completed iterations

    # -- experience --------------------------------------------------------------------------
    def collect(self, seed: int | None = None, envs: Any = None) -> Rollout:
        """One episode per env row, sampled at ``config.temperature``; values filled in."""
        envs = self.envs if envs is None else envs
        seed = rollout_seed(self.config.seed, self.iteration) if seed is None else seed
        rollout = collect_rollout(
            envs, self.policy.lm, seed=seed, temperature=self.config.temperature,
            generator=self.sample_generator, value_fn=self.policy.rollout_value_fn(),
        )
        if rollout.values is None:  # separate value trunk: one batched forward
            ids, am = rollout.sequences()
            device, g = self.policy.device, rollout.tokens.shape[1]
            values = self.policy.separate_values(ids.to(device), am.to(device), g)
            rollout.values = values.cpu() * rollout.mask
        return rollout

    def prepare(self, rollout: Rollout) -> tuple[PPOBatch, dict[str, float]]:
        """Reference log-probs, shaped rewards, GAE; returns the batch and rollout metrics."""
        cfg, device = self.config, self.policy.device
        g = max(int(rollout.lengths.max()), 1)  # columns past every episode's end carry nothing
        mask = rollout.mask[:, :g].to(device)
        tokens = rollout.tokens[:, :g].to(device)
        logprobs = rollout.logprobs[:, :g].to(device)
        values = rollout.values[:, :g].to(device)
        ids, am = trim_columns(
            torch.cat([rollout.prompt_ids, rollout.tokens[:, :g]], 1).to(device),
            torch.cat([rollout.prompt_mask, rollout.mask[:, :g].long()], 1).to(device), g,
        )
        ref_logprobs = self.policy.reference_logprobs(ids, am, tokens, cfg.temperature,
                                                      self.num_actions)
        ref_logprobs = torch.where(mask, ref_logprobs, 0.0)

        scores = rollout.rewards.to(device, torch.float32)
        if cfg.no_stop_penalty is not None:
            truncated = ~rollout.terminated.to(device)
            scores = torch.where(truncated, scores + cfg.no_stop_penalty, scores)
        if cfg.whiten_rewards:
            scores = whiten(scores, shift_mean=False)
        beta = self.kl_controller.beta
        rewards, kl = shaped_rewards(scores, logprobs, ref_logprobs, mask, beta, cfg.kl_estimator)
        advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask)
        batch = PPOBatch(ids, am, tokens, mask, logprobs, values, advantages, returns)

        kl_seq = kl.sum(-1)
        n_tokens = mask.sum().clamp(min=1)
        var_ret = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
        var_err = masked_mean((returns - values) ** 2, mask)
        metrics = {
            "reward_mean": float(rollout.rewards.mean()),
            "reward_std": float(rollout.rewards.std()) if len(rollout.rewards) > 1 else 0.0,
            "kl_mean": float(kl_seq.mean()),
            "kl_token_mean": float(kl.sum() / n_tokens),
            "beta": beta,
            "kl_penalty_mean": float((-beta * kl_seq).mean()),
            "return_mean": float(masked_mean(returns, mask)),
            "value_mean": float(masked_mean(values, mask)),
            "explained_variance": float(1 - var_err / var_ret) if var_ret > 0 else 0.0,
            "episode_length_mean": float(rollout.lengths.float().mean()),
            "stop_fraction": float(rollout.terminated.float().mean()),
        }
        return batch, metrics

    # -- the update --------------------------------------------------------------------------
    def _minibatch_loss(self, b: PPOBatch, idx: torch.Tensor, n_tokens: torch.Tensor
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """PPO loss of rows ``idx``, summed over tokens and divided by the minibatch's token
        count ``n_tokens`` (so micro-batch losses add up to the minibatch's mean)."""
        cfg = self.config
        mask, adv, ret = b.mask[idx], b.advantages[idx], b.returns[idx]
        old_logprobs, old_values = b.logprobs[idx], b.values[idx]
        ids, am = trim_columns(b.input_ids[idx], b.attention_mask[idx], mask.shape[1])
        logits, values = self.policy.forward_policy(ids, am, mask.shape[1])
        logprobs, logp = token_logprobs(logits, b.tokens[idx], cfg.temperature, self.num_actions)
        entropy = entropy_from_logp(logp)

        log_ratio = torch.where(mask, logprobs - old_logprobs, 0.0)
        ratio = log_ratio.exp()
        pg_loss = torch.max(-adv * ratio,
                            -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range))
        v_loss = (values - ret) ** 2
        if cfg.value_clip_range > 0:
            v_clipped = old_values + (values - old_values).clamp(-cfg.value_clip_range,
                                                                  cfg.value_clip_range)
            v_loss = torch.max(v_loss, (v_clipped - ret) ** 2)
        per_token = pg_loss + cfg.vf_coef * 0.5 * v_loss - cfg.ent_coef * entropy
        loss = torch.where(mask, per_token, 0.0).sum() / n_tokens

        with torch.no_grad():
            m = mask.float()
            stats = {
                "policy_loss": (pg_loss * m).sum(),
                "value_loss": (0.5 * v_loss * m).sum(),
                "entropy": (entropy * m).sum(),
                "approx_kl": (((ratio - 1) - log_ratio) * m).sum(),
                "clip_fraction": (((ratio - 1).abs() > cfg.clip_range).float() * m).sum(),
                "ratio_mean": (ratio * m).sum(),
            }
        return loss, stats

    def update(self, b: PPOBatch) -> dict[str, float]:
        """``epochs`` x ``num_minibatches`` clipped-gradient steps on one prepared rollout."""
        cfg = self.config
        n = b.mask.shape[0]
        mb_size = n // cfg.num_minibatches
        micro_size = mb_size // cfg.grad_accum_steps
        params = self.policy.trainable_parameters()
        totals: dict[str, float] = {}
        first_epoch_entropy, first_epoch_tokens, grad_norms = 0.0, 0.0, []
        for epoch in range(cfg.epochs):
            perm = torch.randperm(n, generator=self.shuffle_generator).to(b.mask.device)
            for minibatch in perm.split(mb_size):
                self.optimizer.zero_grad(set_to_none=True)
                n_tokens = b.mask[minibatch].sum().clamp(min=1)
                for micro in minibatch.split(micro_size):
                    loss, stats = self._minibatch_loss(b, micro, n_tokens)
                    loss.backward()
                    for key, value in stats.items():
                        totals[key] = totals.get(key, 0.0) + float(value)
                    if epoch == 0:
                        first_epoch_entropy += float(stats["entropy"])
                if epoch == 0:
                    first_epoch_tokens += float(n_tokens)
                max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
                grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm)))
                self.optimizer.step()
        total_tokens = float(b.mask.sum().clamp(min=1)) * cfg.epochs
        out = {key: value / total_tokens for key, value in totals.items() if key != "entropy"}
        out["entropy"] = first_epoch_entropy / max(first_epoch_tokens, 1.0)
        out["grad_norm"] = float(np.mean(grad_norms))
        return out

    # -- one iteration -----------------------------------------------------------------------
    def train_iteration(self) -> dict[str, Any]:
        """Rollout + update; returns the iteration's metrics (see ``docs/metrics.md``)."""
        return timed_iteration(self)

    @torch.no_grad()
    def evaluate(self, envs: Any = None, seed: int = 12345) -> tuple[Rollout, dict[str, float]]:
        """One rollout with the current policy, no update: ``(rollout, reward/KL metrics)``.

        Uses the sampling temperature with a private generator, so it does not disturb training.
        """
        saved = self.sample_generator.get_state()
        self.sample_generator.manual_seed(seed)
        try:
            rollout = self.collect(seed=seed, envs=envs)
            _, metrics = self.prepare(rollout)
        finally:
            self.sample_generator.set_state(saved)
        return rollout, {k: metrics[k] for k in ("reward_mean", "kl_mean", "kl_token_mean")}

    # -- state for checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights and the optimizer (see :mod:`agents.checkpoint`)."""
        return {
            "iteration": self.iteration,
            "kl_controller": self.kl_controller.state_dict(),
            "sample_generator": self.sample_generator.get_state(),
            "shuffle_generator": self.shuffle_generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.sample_generator.set_state(state["sample_generator"])
        self.shuffle_generator.set_state(state["shuffle_generator"])
