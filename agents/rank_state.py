"""Every rank's random state in the checkpoints of a multi-process run, so resuming is exact.

The ranks of one run share weights, optimizer state, KL controller and iteration, but each draws
its own samples: its sampling and shuffling generators, and torch's, numpy's and Python's global
RNGs, differ. Rank 0 writes the checkpoint (:mod:`tokengym.agents.checkpoint`) with its own state
in ``rng.pt``/``state.json`` as in one process, plus ``ranks.pt``: every rank's state, gathered
from all ranks (:func:`gather`), and ``"world_size": N`` in ``state.json``. On resume every rank
loads the checkpoint and then its own entry (:func:`restore`).

At another world size the run continues, and says so: ranks present in both keep their streams,
new ranks start theirs from the seed and their rank, dropped ranks' streams end, and each
iteration samples ``world_size x num_envs`` episodes instead of the old number, so the run is not
the one the old world size would have continued. Checkpoints of one process have no ``ranks.pt``
and no ``world_size`` (they are exactly what they were before multi-process training existed).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokengym.agents.distributed import all_gather_object, rank, world_size

RANK_FILE = "ranks.pt"


def rank_rng_state(agent: Any) -> dict[str, Any]:
    """This process's random state: the agent's generator tensors (``agent.state_dict()``),
    ``torch_rng``, ``numpy_rng`` and ``python_rng`` (as lists, loadable with weights_only)."""
    state = {k: v for k, v in agent.state_dict().items() if isinstance(v, torch.Tensor)}
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {**state, "torch_rng": torch.get_rng_state(),
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python_rng": [py_state[0], list(py_state[1]), py_state[2]]}


def gather(agent: Any) -> list[dict[str, Any]] | None:
    """Every rank's :func:`rank_rng_state`, in rank order (a collective: every rank calls it);
    None in one process."""
    if world_size() == 1:
        return None
    return all_gather_object(rank_rng_state(agent))


def save(states: list[dict[str, Any]], folder: Path) -> None:
    """Write :func:`gather`'s list into ``folder / RANK_FILE``."""
    torch.save({"ranks": states}, folder / RANK_FILE)


def _apply(entry: dict[str, Any], agent: Any, agent_info: dict[str, Any]) -> None:
    tensors = {k: v for k, v in entry.items() if isinstance(v, torch.Tensor) and k != "torch_rng"}
    agent.load_state_dict({**agent_info, **tensors})
    torch.set_rng_state(entry["torch_rng"])
    kind, keys, pos, *rest = entry["numpy_rng"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, *rest))
    version, internal, gauss = entry["python_rng"]
    random.setstate((version, tuple(internal), gauss))


def _ranks(first: int, last: int) -> str:
    return f"rank {first}" if first == last else f"ranks {first}-{last}"


def restore(ckpt: Path, info: dict[str, Any], agent: Any) -> str | None:
    """After the checkpoint's common state was restored: this rank's own random state from
    ``ranks.pt`` (ranks > 0; rank 0's is the common one). Returns what changed when the world
    size differs from the checkpoint's (module docstring), else None."""
    saved, now = int(info.get("world_size", 1)), world_size()
    if 0 < rank() < saved:
        entry = torch.load(ckpt / RANK_FILE, weights_only=True)["ranks"][rank()]
        _apply(entry, agent, info["agent"])
    if saved == now:
        return None
    kept = min(saved, now)
    fresh = f"; {_ranks(kept, now - 1)} start new sampling streams (from the seed and their " \
        "rank)" if now > saved else f"; the streams of {_ranks(now, saved - 1)} end"
    return (f"the checkpoint was written by {saved} process(es) and this run has {now}: weights, "
            f"optimizer, KL controller and the random streams of {_ranks(0, kept - 1)} are "
            f"restored{fresh}. Each iteration now samples {now} x num_envs episodes instead of "
            f"{saved} x num_envs, so the run continues differently from one at {saved} "
            "process(es)")
