"""Atomic, exactly-resumable training checkpoints.

A checkpoint is a directory ``OUT/checkpoints/iter_000010/`` holding

- ``weights.safetensors``: every trainable tensor (policy or its LoRA adapters, value head);
- ``optimizer.pt``: the optimizer's state dict;
- ``rng.pt``: torch's global RNG state and the agent's generators (tensors only);
- ``state.json``: iteration counter, KL controller, numpy and python RNG states, the config and
  any caller metadata.

It is written into a temporary sibling directory and renamed into place, and ``LATEST`` (a text
file naming the newest checkpoint) is replaced atomically afterwards, so a run killed at any
moment leaves the previous checkpoint intact. ``.pt`` files are read with
``torch.load(weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tokengym.fileio import atomic_directory, atomic_write_text

LATEST = "LATEST"


def save_checkpoint(
    root: str | os.PathLike[str], agent: Any, metadata: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write ``agent``'s full training state under ``root``; returns the checkpoint directory.

    ``agent`` needs ``policy`` (with ``trainable_state_dict``), ``optimizer``, ``config``,
    ``iteration`` and ``state_dict()``; keeps the ``keep`` newest checkpoints.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"iter_{agent.iteration:06d}"
    with atomic_directory(root / name) as tmp:  # re-saving an iteration replaces it whole
        weights = {k: v.contiguous().cpu() for k, v in agent.policy.trainable_state_dict().items()}
        save_file(weights, tmp / "weights.safetensors")
        torch.save(agent.optimizer.state_dict(), tmp / "optimizer.pt")
        state = agent.state_dict()
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        tensors["torch_rng"] = torch.get_rng_state()
        torch.save(tensors, tmp / "rng.pt")
        np_state = np.random.get_state()
        py_state = random.getstate()
        info = {
            "agent": {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)},
            "config": agent.config.to_dict(),
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
            "metadata": metadata or {},
        }
        (tmp / "state.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    final = root / name
    atomic_write_text(root / LATEST, name)
    old = sorted(p for p in root.glob("iter_*") if p.is_dir() and p.name != name)
    for path in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def _match_param_groups(state: dict[str, Any], optimizer: torch.optim.Optimizer
                        ) -> dict[str, Any]:
    """``state`` with its parameters regrouped like ``optimizer``'s groups, when only the
    grouping differs: tokengym 0.1.0 kept the policy and its value head in one group, later
    versions give the critic its own (``value_lr``). The per-parameter state (Adam's moments)
    is in the same order either way; the groups' settings come from the agent's config."""
    groups = optimizer.param_groups
    if len(state["param_groups"]) == len(groups):
        return state
    ids = [i for group in state["param_groups"] for i in group["params"]]
    if len(ids) != sum(len(g["params"]) for g in groups):
        raise ValueError(f"the checkpoint's optimizer holds {len(ids)} parameters, this agent "
                         f"{sum(len(g['params']) for g in groups)}: it was written for another "
                         "model or agent")
    regrouped, start = [], 0
    for group in groups:
        end = start + len(group["params"])
        regrouped.append({**{k: v for k, v in group.items() if k != "params"},
                          "params": ids[start:end]})
        start = end
    return {"state": state["state"], "param_groups": regrouped}


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint directory for ``path``: a checkpoint itself, a ``checkpoints/`` folder
    (its ``LATEST``), or a run directory containing ``checkpoints/``."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    for root in (path, path / "checkpoints"):
        if (root / LATEST).is_file():
            ckpt = root / (root / LATEST).read_text(encoding="utf-8").strip()
            if (ckpt / "state.json").is_file():
                return ckpt
    raise FileNotFoundError(
        f"no checkpoint found at {path}: expected a checkpoint directory (with state.json), or a "
        f"run directory whose checkpoints/{LATEST} names one"
    )


def read_checkpoint_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``state.json`` of the checkpoint at ``path`` (config, iteration, metadata)."""
    return json.loads((find_checkpoint(path) / "state.json").read_text(encoding="utf-8"))


def load_checkpoint(path: str | os.PathLike[str], agent: Any) -> dict[str, Any]:
    """Restore ``agent`` (weights, optimizer, KL controller, RNGs, iteration) in place.

    Returns the checkpoint's ``state.json`` content (its ``metadata`` included).
    """
    ckpt = find_checkpoint(path)
    info = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    device = agent.policy.device
    weights = load_file(ckpt / "weights.safetensors", device=str(device))
    agent.policy.load_trainable_state_dict(weights)
    optimizer_state = torch.load(ckpt / "optimizer.pt", weights_only=True, map_location=device)
    agent.optimizer.load_state_dict(_match_param_groups(optimizer_state, agent.optimizer))
    tensors = torch.load(ckpt / "rng.pt", weights_only=True)
    torch.set_rng_state(tensors.pop("torch_rng"))
    agent.load_state_dict({**info["agent"], **tensors})
    kind, keys, pos, *rest = info["numpy_rng"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, *rest))
    version, internal, gauss = info["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return info
