"""One rollout made ready for an update: :class:`Batch`, and the helpers that build it.

Shared by every trainable agent (:mod:`tokengym.agents.base`): the reset seed of an iteration
(:func:`rollout_seed`), the trimming of all-padding prompt columns before a teacher-forced
forward (:func:`trim_columns`), and the per-token loss signature (:data:`LossFn`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tokengym.agents.advantages import masked_mean

# loss_fn(rows) -> (per-token loss (n, g), per-token stats {name: (n, g)}) of the rows `rows`.
LossFn = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


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


@dataclass
class Batch:
    """A prepared rollout; ``N`` episodes, ``g`` = longest episode's steps."""

    input_ids: torch.Tensor  # (N, P' + g) prompt + completion (all-padding columns dropped)
    attention_mask: torch.Tensor  # (N, P' + g)
    tokens: torch.Tensor  # (N, g) sampled tokens
    mask: torch.Tensor  # (N, g) bool, episode steps
    logprobs: torch.Tensor  # (N, g) at sampling time (the "old" policy)
    ref_logprobs: torch.Tensor  # (N, g) under the reference, 0 outside mask
    kl: torch.Tensor  # (N, g) per-token KL estimate (config.kl_estimator), 0 outside mask
    scores: torch.Tensor  # (N,) env scores after no-stop penalty / scaling
    values: torch.Tensor | None = None  # (N, g) rollout values (agents with a critic)
    advantages: torch.Tensor | None = None  # (N, g), set by the agent's `advantages`
    returns: torch.Tensor | None = None  # (N, g) value targets, set by agents with a critic


def token_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """``masked_mean`` as a float (for metrics)."""
    return float(masked_mean(x, mask))
