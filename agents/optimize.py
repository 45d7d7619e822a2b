"""The optimisation loop every trainable agent's update is built from: minibatch steps on a
per-token loss, gradient accumulation, clipping, PPO's approximate-KL early stop.

:meth:`tokengym.agents.base.TrainableAgent.optimize` calls :func:`optimize`. In a run of several
processes each rank steps on its own rows, the token count that normalises a step's loss and the
early-stop decision are global, and the gradients are summed over the ranks before clipping
(:mod:`tokengym.agents.distributed`), so every rank takes the same step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from tokengym.agents.batch import Batch, LossFn
from tokengym.agents.distributed import all_reduce_float, all_reduce_grads, all_reduce_sum
from tokengym.agents.fsdp import all_finite, clip_grad_norm
from tokengym.checks import NonFiniteError


def optimize(agent: Any, b: Batch, loss_fn: LossFn, epochs: int = 1, num_minibatches: int = 1,
             target_kl: float | None = None, critic_loss_fn: LossFn | None = None,
             critic_epochs: int = 0) -> dict[str, float]:
    """``epochs`` passes over the rollout, each in ``num_minibatches`` shuffled minibatches
    (one clipped-gradient optimizer step each, split in ``config.grad_accum_steps``
    micro-batches whose gradients add up). A single full-batch step is not shuffled.

    ``target_kl`` (for losses whose stats include ``approx_kl``): when a minibatch's token
    mean of ``approx_kl`` (how far the policy already moved from the rollout's) exceeds it,
    the policy's update ends there, as in SB3 and CleanRL; a critic with its own param group
    takes the remaining steps alone (``critic_only_updates``). ``updates`` counts the policy's
    steps, ``early_stop`` is 1.0 when it stopped.

    ``loss_fn(rows)`` returns the per-token loss ``(n, g)`` and per-token stats of ``rows``;
    a step's loss is summed over its tokens and divided by the minibatch's token count (over
    all ranks: the ranks' gradients are then summed, which is one process's gradient on the
    whole minibatch; each rank's minibatch is its own rows, shuffled apart).
    Returns each stat's token mean over every step (``entropy``: over the first epoch,
    i.e. of the policy that sampled), and ``grad_norm``: the mean pre-clip gradient norm.

    ``critic_epochs`` more passes follow for the critic alone (as after an early stop).
    ``critic_loss_fn`` (optional): the loss of the critic's steps after the early stop, in place
    of ``loss_fn``; it must give the critic's parameters the gradients ``loss_fn`` would (PPO's
    reads the frozen trunk's features once instead of a forward and backward per step).
    """
    cfg = agent.config
    n = b.mask.shape[0]
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
    # After the policy's early stop, a critic with its own param group keeps learning on the
    # remaining minibatches (the KL limit is the policy's trust region; the critic has its
    # own clip), with the policy's gradients dropped.
    critic_groups = agent.optimizer.param_groups[1:]
    sums: dict[str, float] = {}
    tokens, first_entropy, first_tokens, grad_norms = 0.0, 0.0, 0.0, []
    stopped, early_stop, critic_steps = False, False, 0
    for epoch in range(epochs + critic_epochs):
        stopped = stopped or epoch >= epochs
        if stopped and not critic_groups:
            break
        if epochs == 1 and num_minibatches == 1:
            order = torch.arange(n, device=b.mask.device)
        else:
            order = torch.randperm(n, generator=agent.shuffle_generator).to(b.mask.device)
        for rows in order.split(n // num_minibatches):
            agent.optimizer.zero_grad(set_to_none=True)
            n_tokens = all_reduce_sum(b.mask[rows].sum()).clamp(min=1)
            step_kl = 0.0
            for micro in rows.split(max(len(rows) // cfg.grad_accum_steps, 1)):
                per_token, stats = (critic_loss_fn or loss_fn)(micro) if stopped \
                    else loss_fn(micro)
                mask = b.mask[micro]
                (torch.where(mask, per_token, 0.0).sum() / n_tokens).backward()
                if stopped:
                    continue  # stats describe the policy's updates
                with torch.no_grad():
                    step_kl += float((stats["approx_kl"] * mask).sum()) \
                        if target_kl is not None else 0.0
                    for key, value in stats.items():
                        sums[key] = sums.get(key, 0.0) + float((value * mask).sum())
                    if epoch == 0 and "entropy" in stats:
                        first_entropy += float((stats["entropy"] * mask).sum())
            if not stopped:
                tokens += float(n_tokens)
                first_tokens += float(n_tokens) if epoch == 0 else 0.0
                if target_kl is not None and all_reduce_float(step_kl) / float(n_tokens) \
                        > target_kl:  # the same decision on every rank
                    stopped = early_stop = True  # this minibatch's stats count: where it got
                    if not critic_groups:
                        break
            if stopped:
                for param in agent.optimizer.param_groups[0]["params"]:
                    param.grad = None  # AdamW skips parameters without a gradient
            all_reduce_grads(agent.params)
            grad_norm = clip_grad_norm(agent.params, max_norm)  # FSDP shards included
            if not math.isfinite(grad_norm):
                agent.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteError(
                    f"non-finite gradient norm ({grad_norm}) in iteration "
                    f"{agent.iteration + 1}, epoch {epoch + 1}: that step was not taken and no "
                    "checkpoint holds it (lower the lr, check the rewards)")
            if stopped:
                critic_steps += 1
            else:
                grad_norms.append(grad_norm)
            agent.optimizer.step()
    if not all_finite(agent.params):
        raise NonFiniteError(
            f"a weight became non-finite in iteration {agent.iteration + 1} (the learning rate "
            "is too large for this model); the run's last checkpoint is intact")
    totals = all_reduce_sum(torch.tensor([*sums.values(), first_entropy], dtype=torch.float64))
    sums, first_entropy = dict(zip(sums, totals.tolist()[:-1])), float(totals[-1])
    out = {key: value / tokens for key, value in sums.items()}
    if "entropy" in sums:
        out["entropy"] = first_entropy / max(first_tokens, 1.0)
    out["grad_norm"] = float(np.mean(grad_norms)) if grad_norms else 0.0
    out["updates"] = float(len(grad_norms))
    if target_kl is not None or critic_epochs:
        out["early_stop"] = float(early_stop)
        out["critic_only_updates"] = float(critic_steps)
    return out
