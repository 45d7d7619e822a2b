"""Token-level PPO with KL shaping, trained through a tokengym vector env's ``reset``/``step``.

One iteration (:meth:`~tokengym.agents.base.TrainableAgent.train_iteration`; steps 1, 2 and 5 are
the plumbing every trainable agent shares, in ``agents/base.py``; this file is what makes it PPO):

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

import torch

from tokengym.agents.advantages import gae, masked_mean, shaped_rewards, whiten
from tokengym.agents.agent_config import CriticConfig
from tokengym.agents.base import TrainableAgent
from tokengym.agents.batch import Batch
from tokengym.agents.distributed import global_std
from tokengym.agents.policy import entropy_from_logp
from tokengym.agents.ppo_config import PPOConfig


def clipped_surrogate(advantages: torch.Tensor, log_ratio: torch.Tensor, clip_range: float
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped policy loss per token, ``max(-A * ratio, -A * clip(ratio, 1 +- eps))``.

    Args:
        advantages, log_ratio: ``(n, g)``; ``log_ratio = log pi - log pi_old``, already 0
            outside the episode mask (so padding never reaches ``exp``).
        clip_range: epsilon.

    Returns:
        ``(loss (n, g), stats)``: per-token ``approx_kl`` (``(ratio - 1) - log ratio``, the
        low-variance estimator of KL(old || new)), ``clip_fraction`` and ``ratio_mean``.
    """
    ratio = log_ratio.exp()
    loss = torch.max(-advantages * ratio,
                     -advantages * ratio.clamp(1 - clip_range, 1 + clip_range))
    with torch.no_grad():
        stats = {"approx_kl": (ratio - 1) - log_ratio,
                 "clip_fraction": ((ratio - 1).abs() > clip_range).float(),
                 "ratio_mean": ratio}
    return loss, stats


def gae_advantages(b: Batch, beta: float, cfg: CriticConfig) -> dict[str, float]:
    """Fill ``b.advantages`` and ``b.returns`` (value targets) of a rollout with values: KL-shaped
    per-token rewards ``r_t = -beta * KL_t`` (+ score at the last token; multi-turn, + each
    per-turn reward at its turn's last agent token), GAE(``cfg.gamma``,
    ``cfg.lam``), whitening (``cfg.whiten_advantages``). Returns the critic's health metrics.
    Shared with A2C."""
    rewards, _ = shaped_rewards(b.scores, b.logprobs, b.ref_logprobs, b.mask, beta,
                                cfg.kl_estimator, b.step_rewards)
    advantages, returns = gae(rewards, b.values, b.mask, cfg.gamma, cfg.lam)
    # When every episode scored the same, what is left is the KL penalty and the critic's own
    # errors: whitened to unit std, that noise would drive the whole update (such rollouts are
    # only centred), and the returns' variance is the critic's noise, so explained variance says
    # nothing about the critic (it is left out of the metrics).
    same_scores = global_std(b.scores) < 1e-6  # over every rank's episodes (0.0 for one)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, b.mask, shift_mean=True, scale=not same_scores)
    b.advantages, b.returns = advantages, returns
    metrics = {"return_mean": float(masked_mean(returns, b.mask)),
               "value_mean": float(masked_mean(b.values, b.mask))}
    var_ret = masked_mean((returns - masked_mean(returns, b.mask)) ** 2, b.mask)
    if not same_scores and var_ret > 0:
        var_err = masked_mean((returns - b.values) ** 2, b.mask)
        # How much of the returns' variance the rollout's values explain (1 = all, <= 0: no
        # better than a constant).
        metrics["explained_variance"] = float(1 - var_err / var_ret)
    return metrics


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip_range: float) -> torch.Tensor:
    """Per-token squared error ``(V - R)^2``, or with ``clip_range > 0`` the larger of it and
    the error of V clipped to ``old_values +- clip_range`` (all ``(n, g)``)."""
    loss = (values - returns) ** 2
    if clip_range > 0:
        clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
        loss = torch.max(loss, (clipped - returns) ** 2)
    return loss


class PPOAgent(TrainableAgent):
    """PPO on a tokengym vector env (native ``TextGenVectorEnv`` or a ``SyncVectorEnv``).

    Args:
        envs: the vector env, NEXT_STEP autoreset, ``num_envs == config.num_envs``.
        policy: an :class:`ActorCritic`, or a causal LM to wrap in one as ``config`` says.
        config: the hyperparameters (validated here).
    """

    uses_value_head = True
    config: PPOConfig

    # -- advantages: KL-shaped per-token rewards, GAE ----------------------------------------
    def advantages(self, b: Batch) -> dict[str, float]:
        return gae_advantages(b, self.kl_controller.beta, self.config)

    # -- the update --------------------------------------------------------------------------
    def update(self, b: Batch) -> dict[str, float]:
        """``epochs`` x ``num_minibatches`` clipped-gradient steps on::

            loss_t = clipped surrogate + vf_coef * 0.5 * (V - R)^2 (clipped) - ent_coef * H_t
        """
        cfg = self.config

        def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            logprobs, logp, values = self.policy_forward(b, idx)
            mask, ret, old_values = b.mask[idx], b.returns[idx], b.values[idx]
            entropy = entropy_from_logp(logp)
            log_ratio = torch.where(mask, logprobs - b.logprobs[idx], 0.0)
            pg_loss, stats = clipped_surrogate(b.advantages[idx], log_ratio, cfg.clip_range)
            v_loss = clipped_value_loss(values, old_values, ret, cfg.value_clip_range)
            per_token = pg_loss + cfg.vf_coef * 0.5 * v_loss - cfg.ent_coef * entropy
            stats.update(policy_loss=pg_loss.detach(), value_loss=0.5 * v_loss.detach(),
                         entropy=entropy.detach())
            return per_token, stats

        # The critic's steps after the early stop need only the value loss, whose gradients
        # reach the critic alone. A value head on the shared trunk (with or without LoRA), which
        # no longer moves in this iteration, trains on the trunk's features computed once; a
        # separate value trunk runs its own forward and backward, without the policy's.
        features: list[torch.Tensor] = []
        g = b.mask.shape[1]

        def critic_loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            if self.policy.value_trunk is not None:
                ids, am, columns = b.forward_inputs(idx)
                values = self.policy.trunk_values(ids, am, g, columns)
            else:
                if not features:
                    ids, am, columns = b.forward_inputs()
                    features.append(self.policy.value_features(ids, am, g, columns))
                values = self.policy.values_from_hidden(features[0][idx])
            v_loss = clipped_value_loss(values, b.values[idx], b.returns[idx],
                                        cfg.value_clip_range)
            return cfg.vf_coef * 0.5 * v_loss, {}

        return self.optimize(b, loss_fn, cfg.epochs, cfg.num_minibatches, cfg.max_approx_kl,
                             critic_loss_fn, cfg.value_epochs)
