"""The multi-turn decode path: a KV cache in the env's own layout, and the prefill of inserted tokens.

In a multi-turn env (:mod:`tokengym.envs.protocol`, "Multi-turn envs") a step appends the agent's
token and, when that token ended a turn, the env's inserted tokens; rows insert different amounts
at different steps. :class:`MultiTurnDecoder` keeps every row's keys and values at the columns
the env's observation has them (column ``c`` of row ``i``'s cache is column ``c`` of its
observation), in buffers ``(N, H_kv, L, D)`` allocated once, ``L = P + E``
(``max_prompt_tokens + max_episode_tokens``). Each :meth:`~MultiTurnDecoder.advance` feeds every
running row its sampled token (one single-token forward of the batch, as in single-turn decoding),
then, if some rows inserted tokens, the inserted tokens of those rows alone as one forward over a
block ``(M, K)`` (``M`` rows, ``K`` the most any of them inserted): row ``i``'s ``k_i`` tokens go
to its next ``k_i`` columns, the rest of its block row is padding that no real token ever attends
to, and the logits (and value) returned for row ``i`` are those after its last real token, i.e.
the state from which it samples its next action. Rows that finished feed nothing.

Positions are each row's count of real tokens, as in a teacher-forced forward over the
observation (``attention_mask.cumsum(-1) - 1``), so the cached decode and the teacher-forced
forward of the update see the same sequence. The step runs eagerly: the compiled static-cache
step (:mod:`tokengym.agents.decode`) has one shape per rollout, which blocks of varying width
are not; a rollout asked to compile on a multi-turn env says so once per model and runs here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tokengym.agents.decode import forward_kwarg_names


def per_row_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` as an ``(N, k)`` tensor of per-row
    positions (transformers >= 5); older versions keep the last ``k`` positions only."""
    if forward_kwarg_names(model)[1] != "logits_to_keep":
        return False
    import transformers.modeling_utils as tmu

    return hasattr(tmu, "slice_logits_to_keep")


class RowAlignedKVCache:
    """Keys and values of every layer in buffers ``(N, H_kv, W, D)``; each row writes its own
    columns. Quacks like a transformers ``Cache`` for the one call attention layers make.

    The decoder sets, before each forward, :attr:`columns` ``(M, q)`` (where each of the ``q``
    new entries of each row goes), :attr:`attended` (the leading columns the layers attend to)
    and :attr:`rows` (``(M,)``: the forward's rows are these rows of the cache; None: all N).
    """

    is_compileable = False

    def __init__(self, width: int) -> None:
        self.width = width
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.columns: torch.Tensor | None = None
        self.attended = 0
        self.rows: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``(M, H_kv, q, D)`` keys/values at :attr:`columns`; return the attended ones."""
        if layer_idx == len(self.keys):  # the first forward (the prompt's) allocates
            n, heads, _, dim = key_states.shape
            self.keys.append(key_states.new_zeros(n, heads, self.width, dim))
            self.values.append(value_states.new_zeros(n, heads, self.width, dim))
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.rows is None:
            index = self.columns[:, None, :, None].expand(-1, key_states.shape[1], -1,
                                                          key_states.shape[-1])
            keys.scatter_(2, index, key_states)
            values.scatter_(2, index, value_states)
            return keys[:, :, :self.attended], values[:, :, :self.attended]
        rows = self.rows[:, None]  # (M, 1) with columns (M, q): entries (M, q, H_kv, D)
        keys[rows, :, self.columns] = key_states.transpose(1, 2)
        values[rows, :, self.columns] = value_states.transpose(1, 2)
        return keys[self.rows, :, :self.attended], values[self.rows, :, :self.attended]

    def grow(self, width: int) -> None:
        """Widen every buffer to ``width`` columns (padding entries near the end need room)."""
        extra = width - self.width
        if extra <= 0:
            return
        for store in (self.keys, self.values):
            for i, buf in enumerate(store):
                store[i] = torch.cat([buf, buf.new_zeros(*buf.shape[:2], extra, buf.shape[-1])], 2)
        self.width = width

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.attended


class MultiTurnDecoder:
    """:class:`~tokengym.agents.rollout.KVCacheDecoder`'s interface (``start``/``advance``) for
    multi-turn envs: ``advance`` also takes which rows run and what each inserted (module doc).

    Args:
        model: the causal LM.
        value_fn: optional value head ``(N, T, H) -> (N, T)``.
        length: ``L = P + E``, the observation's width (the cache grows past it only for padding).
    """

    def __init__(self, model: torch.nn.Module, value_fn: Any, length: int) -> None:
        self.model = model
        self.value_fn = value_fn
        self.length = length
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._cache_kwarg, self._keep_kwarg = forward_kwarg_names(model)
        self._per_row_keep = per_row_logits_to_keep(model)
        self.low = torch.finfo(self.dtype).min
        self.cache = RowAlignedKVCache(length)
        self.open = torch.zeros(0, 0, dtype=self.dtype)  # (N, W) additive: 0 on real tokens
        self.next_column = torch.zeros(0, dtype=torch.long)  # (N,) where each row writes next
        self.next_position = torch.zeros(0, dtype=torch.long)  # (N,) its next position id

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Forward ``ids`` ``(N, q)``; logits ``(N, V)`` (and values ``(N,)``) at block index
        ``last`` ``(N,)`` of each row."""
        kwargs: dict[str, Any] = {self._cache_kwarg: self.cache}
        q = ids.shape[1]
        per_row = q > 1 and self._keep_kwarg is not None and self._per_row_keep
        if self._keep_kwarg:  # only the logits read below: (N, 1, V), not (N, q, V)
            kwargs[self._keep_kwarg] = last[:, None] if per_row else (1 if q == 1 else q)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, output_hidden_states=self.value_fn is not None, **kwargs)
        rows = torch.arange(ids.shape[0], device=ids.device)
        if q == 1 or per_row:
            logits = out.logits[:, -1].float()
        else:  # the last q positions' logits (or all of them): row i's is at last[i] - q
            logits = out.logits[rows, last - q].float()
        values = None
        if self.value_fn is not None:
            hidden = out.hidden_states[-1][rows, last][:, None]
            values = self.value_fn(hidden).squeeze(-1).float()
        return logits, values

    @torch.no_grad()
    def start(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prefill left-padded prompts ``(N, P)``; returns next logits ``(N, V)`` (and values)."""
        ids, pmask = prompt_ids.to(self.device), prompt_mask.to(self.device).bool()
        n, p = ids.shape
        self.cache = RowAlignedKVCache(max(self.length, p + 1))
        self.open = torch.full((n, self.cache.width), self.low, dtype=self.dtype,
                               device=self.device)
        self.open[:, :p].masked_fill_(pmask, 0.0)
        # (N, 1, P, P): causal over the prompt, padding hidden; each query sees itself, so no
        # row is all hidden (NaN) and no padding column's keys/values are poisoned.
        cols = torch.arange(p, device=self.device)
        allowed = ((cols[None, :] <= cols[:, None]) & pmask[:, None, :]) | (
            cols[None, :] == cols[:, None])
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~allowed, self.low)
        self.cache.columns, self.cache.attended = cols.expand(n, p), p
        positions = (pmask.long().cumsum(-1) - 1).clamp(min=0)
        logits, values = self._forward(ids, mask[:, None], positions,
                                       torch.full((n,), p - 1, device=self.device))
        self.next_column = torch.full((n,), p, dtype=torch.long, device=self.device)
        self.next_position = pmask.long().sum(-1)
        return logits, values

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor, running: torch.Tensor | None = None,
                inserted: Sequence[Sequence[int]] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Feed each running row its token ``tokens[i]`` then ``inserted[i]``; returns the next
        logits ``(N, V)`` (and values ``(N,)``), garbage on rows that do not run.

        One single-token forward of every row, then, when some rows inserted tokens, one forward
        of those rows alone over their inserted tokens (padded to the longest), whose logits
        replace theirs: the other rows pay nothing for an insertion.

        Args:
            tokens: ``(N,)`` the sampled tokens.
            running: ``(N,)`` bool, the rows whose episode goes on (None: every row).
            inserted: per row, the token ids the env inserted after ``tokens[i]`` (None: none).
        """
        n = tokens.shape[0]
        run = torch.ones(n, dtype=torch.bool) if running is None else running.cpu()
        logits, values = self._feed(None, tokens.to(self.device).view(-1, 1),
                                    run.long().to(self.device))
        extra = [len(inserted[i]) if inserted is not None and run[i] else 0 for i in range(n)]
        rows = [i for i, k in enumerate(extra) if k]
        if rows:
            block = torch.zeros(len(rows), max(extra), dtype=torch.long)
            for j, i in enumerate(rows):
                block[j, :extra[i]] = torch.as_tensor(list(inserted[i]), dtype=torch.long)
            index = torch.tensor(rows, device=self.device)
            counts = torch.tensor([extra[i] for i in rows], device=self.device)
            sub_logits, sub_values = self._feed(index, block.to(self.device), counts)
            logits[index] = sub_logits
            if values is not None:
                values[index] = sub_values
        return logits, values

    def _feed(self, rows: torch.Tensor | None, block: torch.Tensor, counts: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One forward of ``block`` ``(M, K)`` for cache rows ``rows`` ``(M,)`` (None: all),
        of which row ``j``'s first ``counts[j]`` tokens are real (the rest padding)."""
        m, k = block.shape
        select = slice(None) if rows is None else rows
        steps = torch.arange(k, device=self.device)
        cols = self.next_column[select][:, None] + steps  # (M, K) each entry's column
        attended = int(cols.max()) + 1
        if attended > self.cache.width:
            self.cache.grow(attended)
            pad = torch.full((self.open.shape[0], attended - self.open.shape[1]), self.low,
                             dtype=self.dtype, device=self.device)
            self.open = torch.cat([self.open, pad], 1)
        # (M, 1, K, W): what the row had before, plus the block's own columns up to the query's.
        mask = self.open[select, :attended][:, None, None, :].expand(m, 1, k, attended).clone()
        causal = torch.where(steps[None, :] <= steps[:, None], 0.0, self.low).to(self.dtype)
        local = torch.arange(m, device=self.device)
        mask[local[:, None, None], 0, steps[None, :, None], cols[:, None, :]] = causal
        self.cache.rows, self.cache.columns, self.cache.attended = rows, cols, attended
        positions = self.next_position[select][:, None] + steps
        try:
            logits, values = self._forward(block, mask, positions, (counts - 1).clamp(min=0))
        finally:
            self.cache.rows = None
        real = steps[None, :] < counts[:, None]
        owner = local if rows is None else rows
        self.open[owner[:, None].expand(m, k)[real], cols[real]] = 0.0
        self.next_column[select] += counts
        self.next_position[select] += counts
        return logits, values
