"""A multi-turn rollout's record of what the env wrote after each prompt, token for token.

In a multi-turn env (:mod:`tokengym.envs.protocol`, "Multi-turn envs") a step appends the agent's
token and, when that token ended a turn, the env's inserted tokens (``info["inserted_ids"]``).
:class:`EpisodeColumns` rebuilds each row's observation columns after the prompt from exactly
those: the agent's token, then what the row inserted, step after step. The result equals the
env's final observation of the episode (the tests check it), with ``agent_mask`` 1 exactly on the
agent's tokens; the teacher-forced forwards of the update run over it and read the logits that
predict the agent's tokens only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def inserted_ids(infos: dict[str, Any], n: int) -> list[tuple[int, ...]]:
    """Each row's ``info["inserted_ids"]`` out of a vector env's batched infos (``()`` for rows
    whose step inserted nothing)."""
    values = infos.get("inserted_ids")
    if values is None:
        return [()] * n
    present = infos.get("_inserted_ids")
    out: list[tuple[int, ...]] = []
    for i in range(n):
        if present is not None and not present[i]:
            out.append(())
        else:
            out.append(tuple(int(t) for t in values[i]))
    return out


class EpisodeColumns:
    """Each row's columns after the prompt: agent tokens and inserted tokens in env order.

    Args:
        num_rows: N.
        width: E, the env's ``max_episode_tokens`` (the columns after the prompt).
        pad_id: the id the env pads with (read from its first observation).
    """

    def __init__(self, num_rows: int, width: int, pad_id: int) -> None:
        self.width = width
        self.ids = torch.full((num_rows, width), pad_id, dtype=torch.long)  # (N, E)
        self.agent = torch.zeros(num_rows, width, dtype=torch.bool)  # (N, E)
        self.used = np.zeros(num_rows, dtype=np.int64)  # (N,) columns written per row

    def append(self, tokens: torch.Tensor, rows: np.ndarray, inserted: list[tuple[int, ...]]
               ) -> None:
        """Write ``tokens[i]`` (an action), then ``inserted[i]``, for every row ``i`` in ``rows``.

        Raises:
            ValueError: a row would pass ``width`` columns (the env broke its own layout).
        """
        for i in rows.tolist():
            start, extra = int(self.used[i]), inserted[i]
            end = start + 1 + len(extra)
            if end > self.width:
                raise ValueError(
                    f"env row {i} wrote {end} tokens after its prompt, more than its "
                    f"max_episode_tokens={self.width}; the env broke its observation layout")
            self.ids[i, start] = tokens[i]
            self.agent[i, start] = True
            if extra:
                self.ids[i, start + 1: end] = torch.as_tensor(extra, dtype=torch.long)
            self.used[i] = end

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids, attention mask (int64), agent mask (bool))``, each ``(N, E')`` with ``E'``
        the most columns any row used."""
        used = max(int(self.used.max()), 1)
        cols = torch.arange(used)
        mask = (cols[None, :] < torch.from_numpy(self.used)[:, None]).long()
        return self.ids[:, :used].clone(), mask, self.agent[:, :used].clone()
