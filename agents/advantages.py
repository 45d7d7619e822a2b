"""Per-token reward shaping, GAE and whitening, over ``(N, G)`` rollout tensors.

Shared by the value-based agents (PPO, A2C) and, for the shaping and whitening, by the others.
Every function takes the rollout's ``mask`` ``(N, G)`` (True on the episode's steps; an episode's
steps are a prefix of its row) and leaves masked-out entries at 0. A step is an agent token: in a
multi-turn episode the env's inserted tokens have no step, so GAE runs over the agent's tokens
across turns (the next agent token's value bootstraps the previous one, gamma once per agent
token), with each per-turn reward at the step that ended its turn (:func:`place_step_rewards`). The statistics
(:func:`masked_mean`, :func:`masked_var`, hence :func:`whiten`) are over every rank's rows in a
run of several processes (:mod:`tokengym.agents.distributed`; the sums are all-reduced), and
over this process's rows otherwise.
"""

from __future__ import annotations

import torch

from tokengym.agents.distributed import all_reduce_sum
from tokengym.agents.kl import kl_per_token


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the True entries of ``mask`` (0 when there are none), every rank's."""
    mask = mask.to(x.dtype)
    return all_reduce_sum((x * mask).sum()) / all_reduce_sum(mask.sum()).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of ``x`` over the True entries of ``mask``, every rank's."""
    mean = masked_mean(x, mask)
    m = mask.to(x.dtype)
    squares = all_reduce_sum((((x - mean) * m) ** 2).sum())
    return squares / (all_reduce_sum(m.sum()) - 1).clamp(min=1)


def whiten(
    x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True, scale: bool = True
) -> torch.Tensor:
    """``(x - mean) / std`` over the masked entries (entries outside the mask become 0).

    ``shift_mean=False`` only rescales (used for rewards, whose sign carries meaning);
    ``scale=False`` only centres.
    """
    if mask is None:
        mask = torch.ones_like(x, dtype=torch.bool)
    mean = masked_mean(x, mask)
    out = x - mean
    if scale:
        out = out * torch.rsqrt(masked_var(x, mask) + 1e-8)
    if not shift_mean:
        out = out + mean
    return torch.where(mask, out, torch.zeros_like(out))


def score_scale(scores: torch.Tensor) -> torch.Tensor:
    """The factor ``whiten(scores, shift_mean=False)`` scales deviations by: a 0-d tensor,
    1 / std of ``scores`` ``(N,)`` (every rank's)."""
    return torch.rsqrt(masked_var(scores, torch.ones_like(scores, dtype=torch.bool)) + 1e-8)


def place_step_rewards(step_rewards: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor,
                       scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """A multi-turn episode's env rewards where they were paid, made to sum to its score.

    Args:
        step_rewards: ``(N, G)`` the env's reward at each step (per-turn rewards at the steps
            that ended turns; the last step's holds the last turn's and the reward model's).
        mask: ``(N, G)`` bool, the episodes' steps.
        scores: ``(N,)`` the processed episode scores (returns after the no-stop penalty and
            ``scale_scores``).
        scale: what ``scale_scores`` multiplied deviations by (:func:`score_scale`; 1.0 without).

    Returns:
        ``(N, G)``: ``scale`` x each per-turn reward before the episode's last step; the last
        step holds the rest of the score, so each row sums to ``scores`` (0 outside ``mask``).
    """
    last = last_step_index(mask)
    rows = torch.arange(step_rewards.shape[0], device=step_rewards.device)
    before_last = mask.clone()
    before_last[rows, last] = False
    early = torch.where(before_last, step_rewards.to(scores.dtype) * scale, 0.0)
    out = early.clone()
    out[rows, last] = torch.where(mask.any(-1), scores - early.sum(-1), 0.0)
    return out


def last_step_index(mask: torch.Tensor) -> torch.Tensor:
    """``(N,)`` index of each row's last True entry (0 for an empty row)."""
    return (mask.long().sum(-1) - 1).clamp(min=0)


def shaped_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    kl_estimator: str = "k1",
    step_rewards: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``r_t = -beta * KL_t``, plus ``scores`` at each episode's last token.

    Args:
        scores: ``(N,)`` episode scores (after any whitening / no-stop penalty).
        logprobs, ref_logprobs: ``(N, G)`` policy and reference log-probs of the sampled tokens.
        mask: ``(N, G)`` bool.
        beta: KL coefficient.
        kl_estimator: ``"k1"`` or ``"k3"``.
        step_rewards: multi-turn: ``(N, G)`` the env's rewards per step summing to ``scores``
            (:func:`place_step_rewards`: each per-turn reward at its turn's last agent token,
            the score at the last); added in place of ``scores`` at the last token.

    Returns:
        ``(rewards (N, G), kl (N, G))``, both 0 outside ``mask``.
    """
    kl = torch.where(mask, kl_per_token(logprobs, ref_logprobs, kl_estimator), 0.0)
    rewards = -beta * kl
    if step_rewards is not None:
        return rewards + torch.where(mask, step_rewards.to(rewards.dtype), 0.0), kl
    last = last_step_index(mask)
    has_steps = mask.any(-1)
    rows = torch.arange(rewards.shape[0])
    rewards[rows, last] += torch.where(has_steps, scores.to(rewards.dtype), 0.0)
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row's steps (the episode ends after its last).

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V`` = 0 after the last step, and
    ``A_t = delta_t + gamma * lam * A_{t+1}``; returns ``R_t = A_t + V_t``.

    Args:
        rewards, values: ``(N, G)``; mask: ``(N, G)`` bool.

    Returns:
        ``(advantages, returns)``, each ``(N, G)``, 0 outside ``mask``.
    """
    m = mask.to(values.dtype)
    values = values * m
    rewards = rewards * m
    advantages = torch.zeros_like(values)
    next_adv = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        # Masked-out steps (after the end) carry nothing backwards: their value and advantage
        # are zeroed, which makes the real last step bootstrap from 0.
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = (delta + gamma * lam * next_adv) * m[:, t]
        advantages[:, t] = adv
        next_adv, next_value = adv, values[:, t]
    return advantages, (advantages + values) * m
