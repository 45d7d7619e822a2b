"""One rollout made ready for an update: :class:`Batch`, and the helpers that build it.

Shared by every trainable agent (:mod:`tokengym.agents.base`): the reset seed of an iteration
(:func:`rollout_seed`), the trimming of all-padding prompt columns before a teacher-forced
forward (:func:`trim_columns`, :func:`forward_inputs`), where each agent token sits in a
multi-turn sequence (:func:`agent_columns`), and the per-token loss signature (:data:`LossFn`).

Every per-token tensor of a batch is ``(N, g)``, indexed by step = agent token; env-inserted
tokens have no entry in them. The teacher-forced forwards run over the whole sequence (prompt,
agent and inserted tokens) and read, for step ``t``, the output at the column before the step's
token: the last ``g`` columns in a single-turn batch, ``agent_columns(...) - 1`` in a multi-turn
one.
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


def agent_columns(agent_mask: torch.Tensor, steps: int) -> torch.Tensor:
    """``(N, steps)`` int64: the column of each row's ``t``-th agent token.

    Args:
        agent_mask: ``(N, L)`` bool, True on agent tokens (in order, they are the row's steps).
        steps: g, the steps to locate; a row with fewer repeats its last agent column (those
            entries are outside the episode mask: finite, never used).
    """
    n, length = agent_mask.shape
    cols = torch.arange(length, device=agent_mask.device).expand(n, length)
    # Agent columns first, in order, then the others: a stable order by (not agent, column).
    order = torch.where(agent_mask, cols, cols + length).argsort(dim=-1)
    if steps > length:
        order = torch.cat([order, order[:, -1:].expand(n, steps - length)], 1)
    order = order[:, :steps]
    count = agent_mask.sum(-1)
    last = order.gather(1, (count - 1).clamp(min=0)[:, None])
    t = torch.arange(steps, device=agent_mask.device)
    return torch.where(t[None, :] < count[:, None], order, last)


def forward_span(attention_mask: torch.Tensor, agent_mask: torch.Tensor) -> tuple[int, int]:
    """``(start, end)``: the columns a teacher-forced forward over a multi-turn batch needs.

    ``start``: the first column any row uses, at most the one before the first agent token
    (leading all-padding columns change nothing: positions come from ``attention_mask``);
    ``end``: one past the last agent token of any row (a causal model's output at a column
    sees only the columns before it, so the env's last replies change no output that is read).
    """
    agent = agent_mask.any(0).nonzero()
    if not agent.numel():
        return 0, attention_mask.shape[1]
    first_agent, end = int(agent[0]), int(agent[-1]) + 1
    used = attention_mask[:, :end].any(0).nonzero()
    first = int(used[0]) if used.numel() else 0
    return max(min(first, first_agent - 1), 0), end


def forward_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   agent_mask: torch.Tensor | None, steps: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The inputs of a teacher-forced forward over ``steps`` agent tokens:
    ``(input_ids, attention_mask, columns)`` with leading all-padding columns dropped.

    ``agent_mask`` ``(N, L)`` (multi-turn) gives the columns of :func:`forward_span` and
    ``columns`` ``(N, steps)``, the column of each agent token in them (:func:`agent_columns`);
    None (single-turn: the agent's tokens are the last ``steps`` columns) gives
    ``columns=None``, and exactly :func:`trim_columns`.
    """
    if agent_mask is None:
        return *trim_columns(input_ids, attention_mask, steps), None
    start, end = forward_span(attention_mask, agent_mask)
    return (input_ids[:, start:end], attention_mask[:, start:end],
            agent_columns(agent_mask[:, start:end], steps))


@dataclass
class Batch:
    """A prepared rollout; ``N`` episodes, ``g`` = longest episode's steps."""

    # (N, P' + g) prompt + completion (all-padding columns dropped); multi-turn (N, P' + E'):
    # prompt, then agent and inserted tokens as the env wrote them
    input_ids: torch.Tensor
    attention_mask: torch.Tensor  # same shape
    tokens: torch.Tensor  # (N, g) sampled tokens
    mask: torch.Tensor  # (N, g) bool, episode steps
    logprobs: torch.Tensor  # (N, g) at sampling time (the "old" policy)
    ref_logprobs: torch.Tensor  # (N, g) under the reference, 0 outside mask
    kl: torch.Tensor  # (N, g) per-token KL estimate (config.kl_estimator), 0 outside mask
    scores: torch.Tensor  # (N,) env scores after no-stop penalty / scaling
    values: torch.Tensor | None = None  # (N, g) rollout values (agents with a critic)
    advantages: torch.Tensor | None = None  # (N, g), set by the agent's `advantages`
    returns: torch.Tensor | None = None  # (N, g) value targets, set by agents with a critic
    # Multi-turn only (None: single-turn, agent tokens are the last g columns):
    agent_mask: torch.Tensor | None = None  # (N, P' + E') bool, True on the agent's tokens
    # (N, g) the env's reward per step (per-turn rewards at the steps that ended turns), scaled
    # like `scores`, each row summing to its score (the last step holds the rest):
    step_rewards: torch.Tensor | None = None

    def forward_inputs(self, rows: torch.Tensor | slice = slice(None)
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:func:`forward_inputs` of rows ``rows``: ``(input_ids, attention_mask, columns)``."""
        agent = None if self.agent_mask is None else self.agent_mask[rows]
        return forward_inputs(self.input_ids[rows], self.attention_mask[rows], agent,
                              self.mask.shape[1])


def token_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """``masked_mean`` as a float (for metrics)."""
    return float(masked_mean(x, mask))
