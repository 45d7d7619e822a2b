"""Atomic, exactly-resumable training checkpoints.

A checkpoint is a directory ``OUT/checkpoints/iter_000010/`` holding

- ``weights.safetensors``: every trainable tensor (policy or its LoRA adapters, value head);
- ``optimizer.pt``: the optimizer's state dict;
- ``rng.pt``: torch's global RNG state and the agent's generators (tensors only);
- ``state.json``: iteration counter, KL controller, numpy and python RNG states, the config and
  any caller metadata;
- ``ranks.pt`` and ``"world_size"`` in ``state.json``, in runs of several processes only: every
  rank's random state (:mod:`tokengym.agents.rank_state`). Rank 0 alone writes; every rank
  calls :func:`save_checkpoint` (it gathers the ranks' states) and :func:`load_checkpoint`.

It is written into a temporary sibling directory and renamed into place, and ``LATEST`` (a text
file naming the newest checkpoint) is replaced atomically afterwards, so a run killed at any
moment leaves the previous checkpoint intact. ``.pt`` files are read with
``torch.load(weights_only=True)``: no pickled code is ever executed.

Damage is detected, never trusted: ``state.json`` records the SHA-256 of every other file, checked
on load; ``LATEST`` may only name a checkpoint folder next to it; when it is missing or names a
missing or incomplete checkpoint, the newest complete one is used, with a warning. Every problem
ends in one :class:`CheckpointError` that names the file and the checkpoint to fall back to.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tokengym.agents import rank_state
from tokengym.agents.distributed import is_main
from tokengym.agents.fsdp import full_optimizer_state, is_sharded, shard_optimizer_state
from tokengym.fileio import atomic_directory, atomic_write_text

LATEST = "LATEST"
FILES = ("weights.safetensors", "optimizer.pt", "rng.pt")  # hashed in state.json
_NAME = re.compile(r"iter_(\d{6,})")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (damaged, incomplete, edited); the message names the
    file and, where there is one, the previous checkpoint to resume from instead."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoints(root: str | os.PathLike[str]) -> list[Path]:
    """The ``iter_NNNNNN`` folders under ``root``, oldest first (complete or not)."""
    root = Path(root)
    found = [p for p in root.glob("iter_*") if p.is_dir() and _NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(_NAME.fullmatch(p.name).group(1)))


def is_complete(ckpt: Path) -> bool:
    """Whether ``ckpt`` holds ``state.json`` and every file it lists."""
    return all((ckpt / name).is_file() for name in ("state.json", *FILES))


def clean_stale(root: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary folders of checkpoint writes that never finished (a kill mid-write
    leaves ``.iter_NNNNNN-xxxx``, as big as a checkpoint). Call it only while holding the run
    directory's lock (:func:`tokengym.fileio.run_lock`): another writer's may be in progress."""
    stale = [p for p in Path(root).glob(".iter_*") if p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _previous(ckpt: Path) -> Path | None:
    """The newest complete checkpoint older than ``ckpt`` in the same folder."""
    older = [c for c in checkpoints(ckpt.parent) if c.name < ckpt.name and is_complete(c)]
    return older[-1] if older else None


def _fallback_hint(ckpt: Path) -> str:
    prev = _previous(ckpt)
    return (f"; the previous checkpoint {prev} looks intact: resume from it with --resume {prev}"
            if prev else "; there is no older checkpoint to fall back to")


def save_checkpoint(
    root: str | os.PathLike[str], agent: Any, metadata: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write ``agent``'s full training state under ``root``; returns the checkpoint directory.

    ``agent`` needs ``policy`` (with ``trainable_state_dict``), ``optimizer``, ``config``,
    ``iteration`` and ``state_dict()``; keeps the ``keep`` newest checkpoints. In a run of
    several processes every rank calls it and only rank 0 writes; with FSDP every rank first
    helps gather the whole tensors, so the files are those of a run without it.
    """
    ranks = rank_state.gather(agent)  # every rank's random state; None in one process
    root = Path(root)
    name = f"iter_{agent.iteration:06d}"
    sharded = any(is_sharded(p) for p in agent.policy.parameters())
    if sharded:  # collectives: every rank takes part
        weights, optimizer_state = (agent.policy.trainable_state_dict(),
                                    full_optimizer_state(agent.optimizer))
    if not is_main():
        return root / name
    if not sharded:
        weights, optimizer_state = agent.policy.trainable_state_dict(), agent.optimizer.state_dict()
    root.mkdir(parents=True, exist_ok=True)
    with atomic_directory(root / name) as tmp:  # re-saving an iteration replaces it whole
        save_file({k: v.contiguous().cpu() for k, v in weights.items()}, tmp / "weights.safetensors")
        torch.save(optimizer_state, tmp / "optimizer.pt")
        state = agent.state_dict()
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        tensors["torch_rng"] = torch.get_rng_state()
        torch.save(tensors, tmp / "rng.pt")
        files = FILES
        if ranks is not None:
            rank_state.save(ranks, tmp)
            files = (*FILES, rank_state.RANK_FILE)
        np_state = np.random.get_state()
        py_state = random.getstate()
        info = {
            "agent": {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)},
            "config": agent.config.to_dict(),
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
            "metadata": metadata or {},
            "files": {name: _sha256(tmp / name) for name in files},
        }
        if ranks is not None:
            info["world_size"] = len(ranks)
        (tmp / "state.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    final = root / name
    atomic_write_text(root / LATEST, name)
    old = [p for p in checkpoints(root) if p.name != name]
    for path in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def _match_param_groups(state: dict[str, Any], optimizer: torch.optim.Optimizer
                        ) -> dict[str, Any]:
    """``state`` with its parameters regrouped like ``optimizer``'s groups, when only the
    grouping differs: tokengym 0.1.0 kept the policy and its value head in one group, later
    versions give the critic its own (``value_lr``), and since 0.2 a separate value trunk and
    the value head are two groups. The per-parameter state (Adam's moments) is in the same
    order either way; the groups' settings come from the agent's config."""
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
    (its ``LATEST``), or a run directory containing ``checkpoints/``.

    ``LATEST`` must name a complete ``iter_NNNNNN`` folder beside it; otherwise (missing,
    dangling, garbled, or naming anything else) the newest complete checkpoint is used, with a
    ``UserWarning`` saying why. ``FileNotFoundError`` when there is none.
    """
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    for root in (path, path / "checkpoints"):
        latest = root / LATEST
        found = checkpoints(root) if root.is_dir() else []
        if not latest.is_file() and not found:
            continue
        problem = f"{latest} is missing"
        if latest.is_file():
            name = latest.read_text(encoding="utf-8", errors="replace").strip()
            if not _NAME.fullmatch(name):  # never a path: a run must not resume from elsewhere
                problem = f"{latest} names {name[:80]!r}, which is not a checkpoint folder name"
            elif is_complete(root / name):
                return root / name
            else:
                problem = f"{latest} names {name}, which is missing or incomplete"
        complete = [c for c in found if is_complete(c)]
        if complete:
            warnings.warn(f"{problem}; using the newest complete checkpoint, {complete[-1]}",
                          stacklevel=2)
            return complete[-1]
    raise FileNotFoundError(
        f"no checkpoint found at {path}: expected a checkpoint directory (with state.json), or a "
        f"run directory whose checkpoints/ holds a complete iter_NNNNNN folder"
    )


def _read_state(ckpt: Path) -> dict[str, Any]:
    """``state.json`` of ``ckpt``, checked for the shape a checkpoint writes."""
    path = ckpt / "state.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read ({exc}){_fallback_hint(ckpt)}") from None
    agent = info.get("agent") if isinstance(info, dict) else None
    iteration = agent.get("iteration") if isinstance(agent, dict) else None
    named = _NAME.fullmatch(ckpt.name)
    problems = []
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        problems.append(f"agent.iteration is {iteration!r}, not an integer >= 0")
    elif named and int(named.group(1)) != iteration:
        problems.append(f"agent.iteration is {iteration} but the folder is {ckpt.name}")
    for key in ("config", "metadata"):
        if not isinstance(info.get(key) if isinstance(info, dict) else None, dict):
            problems.append(f"{key} is not a table")
    if problems:
        raise CheckpointError(f"{path}: {'; '.join(problems)}{_fallback_hint(ckpt)}")
    return info


def read_checkpoint_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``state.json`` of the checkpoint at ``path`` (config, iteration, metadata), checked."""
    return _read_state(find_checkpoint(path))


def verify_checkpoint(ckpt: Path, info: dict[str, Any]) -> None:
    """Check every file against the SHA-256 in ``state.json`` (checkpoints of tokengym 0.1.0
    have none: only their presence is checked); :class:`CheckpointError` naming the file."""
    extra = (rank_state.RANK_FILE,) if rank_state.RANK_FILE in info.get("files", {}) else ()
    for name in (*FILES, *extra):
        file = ckpt / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing{_fallback_hint(ckpt)}")
        expected = info.get("files", {}).get(name)
        if expected is not None and _sha256(file) != expected:
            raise CheckpointError(f"{file} is damaged: its SHA-256 differs from the one recorded "
                                  f"in state.json{_fallback_hint(ckpt)}")


def load_checkpoint(path: str | os.PathLike[str], agent: Any) -> dict[str, Any]:
    """Restore ``agent`` (weights, optimizer, KL controller, RNGs, iteration) in place.

    Returns the checkpoint's ``state.json`` content (its ``metadata`` included), plus
    ``"world_size_note"``: what resuming at another world size changes, or None.
    """
    ckpt = find_checkpoint(path)
    info = _read_state(ckpt)
    verify_checkpoint(ckpt, info)
    device = agent.policy.device
    current = ckpt / "state.json"
    try:
        current = ckpt / "weights.safetensors"
        weights = load_file(current, device=str(device))
        current = ckpt / "optimizer.pt"
        optimizer_state = torch.load(current, weights_only=True, map_location=device)
        current = ckpt / "rng.pt"
        tensors = torch.load(current, weights_only=True)
        torch_rng = tensors.pop("torch_rng")
        current = ckpt / "state.json"
        kind, keys, pos, *rest = info["numpy_rng"]
        numpy_rng = (kind, np.asarray(keys, dtype=np.uint32), pos, *rest)
        version, internal, gauss = info["python_rng"]
        # Every file is read and parsed before anything is restored, so a damaged one is reported
        # before the agent changes.
        current = ckpt / "weights.safetensors"
        agent.policy.load_trainable_state_dict(weights)
        current = ckpt / "optimizer.pt"
        optimizer_state = _match_param_groups(optimizer_state, agent.optimizer)
        if any(is_sharded(p) for p in agent.policy.parameters()):  # FSDP: each rank its shards
            optimizer_state = shard_optimizer_state(optimizer_state, agent.optimizer)
        agent.optimizer.load_state_dict(optimizer_state)
        current = ckpt / "rng.pt"
        torch.set_rng_state(torch_rng)
        agent.load_state_dict({**info["agent"], **tensors})
        current = ckpt / "state.json"
        np.random.set_state(numpy_rng)
        random.setstate((version, tuple(internal), gauss))
        current = ckpt / rank_state.RANK_FILE
        note = rank_state.restore(ckpt, info, agent)
    except CheckpointError:
        raise
    except Exception as exc:  # any library's error on a damaged or foreign file: name the file
        raise CheckpointError(f"{current} cannot be restored ({type(exc).__name__}: {exc})"
                              f"{_fallback_hint(ckpt)}") from exc
    return {**info, "world_size_note": note}
