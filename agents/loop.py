"""The one training loop: ``tokengym train`` and every trainable run of ``tokengym bench`` use it.

:func:`train_loop` runs a built agent for ``run.iterations`` iterations in a run directory and
owns everything around the algorithm:

- **one writer**: the run directory is locked (:func:`tokengym.fileio.run_lock`) for the whole
  loop; unfinished checkpoint writes of killed processes are removed; ``manifest.json`` records
  what made the run (:mod:`tokengym.manifest`);
- **resume**: from a checkpoint (``resume_from``), then the changed settings applied with a log
  line (:meth:`~tokengym.agents.base.TrainableAgent.reconfigure`); ``metrics.jsonl`` and
  ``evals.jsonl`` keep only the records up to the restored iteration;
- **budget**: ``run.iterations``, or fewer when ``run.token_budget`` sampled tokens are reached;
- **logging**: one record per iteration in ``metrics.jsonl`` (and TensorBoard), each with the
  cumulative ``tokens_total`` generated and the training ``wall_time_s``;
- **evaluations**: ``evaluate(agent)`` before training and every ``run.eval_every`` iterations,
  appended to ``evals.jsonl``;
- **checkpoints**: every ``run.checkpoint_every`` iterations and at the end (never twice for
  one iteration), ``run.keep_checkpoints`` kept, with the run's metadata and settings;
- **Ctrl-C and SIGTERM**: the iteration in flight finishes, a checkpoint is written, the loop
  returns ``interrupted=True`` (a second signal aborts at once);
- **several processes** (:mod:`tokengym.agents.distributed`, every rank calls this loop): rank 0
  alone holds the lock and writes logs, TensorBoard, evaluations, the manifest and checkpoints
  (every rank's random state goes into them); every rank restores the same checkpoint; a signal
  to any rank stops every rank after the same iteration;
- **non-finite training**: a :class:`~tokengym.agents.base.NonFiniteError` from the agent (NaN or
  inf reward, gradient or weight) propagates *before* anything is saved, so the last checkpoint
  written stays ``LATEST`` and holds finite weights.

What happens before (building the agent) and after (plots, sample tables, final evaluations)
belongs to the caller.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tokengym.agents.agent_config import RUN_SETTINGS, ConfigMixin, rename_deprecated
from tokengym.agents.checkpoint import (
    clean_stale,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from tokengym.agents.distributed import (
    broadcast_object,
    is_main,
    local_only,
    max_int,
    rank,
    world_size,
)
from tokengym.agents.fsdp import gathered
from tokengym.agents.logging import MetricsLogger, read_metrics
from tokengym.checks import int_at_least
from tokengym.fileio import atomic_write_jsonl, run_lock
from tokengym.manifest import write_manifest


@dataclass
class RunConfig(ConfigMixin):
    """How a training run is run and recorded (not how the agent learns: that is the agent's
    config). TOML files set these at the top level; ``tokengym train`` has a flag for each."""

    # Training iterations to reach (a resumed run continues up to this many in all).
    iterations: int = 20
    # Stop once this many completion tokens have been sampled for training (RLOO/GRPO's k samples
    # per prompt count), whichever of this and `iterations` comes first; 0: no token budget.
    # Comparisons give every agent the same budget (docs/benchmarks.md).
    token_budget: int = 0
    # Write a checkpoint every this many iterations (and always at the end).
    checkpoint_every: int = 10
    # Checkpoints kept on disk (older ones are deleted).
    keep_checkpoints: int = 2
    # Episodes in the before/after sample table of `tokengym train` (0: no table).
    num_samples: int = 4
    # Evaluate every this many iterations (and before training) when an evaluation is given;
    # 0: no evaluations during training.
    eval_every: int = 0
    # Also write TensorBoard scalars under OUT/tensorboard.
    tensorboard: bool = True

    def validate(self) -> RunConfig:
        """Raise ``ValueError``/``TypeError`` naming the bad value; returns ``self``."""
        self.check_types()
        self._check_positive_ints("iterations", "checkpoint_every", "keep_checkpoints")
        int_at_least("num_samples", self.num_samples, 0)
        int_at_least("token_budget", self.token_budget, 0)
        int_at_least("eval_every", self.eval_every, 0)
        return self


@dataclass
class LoopResult:
    """What :func:`train_loop` did."""

    checkpoint: Path  # the newest checkpoint (written at the end, or at the interruption)
    interrupted: bool  # stopped by Ctrl-C or SIGTERM before reaching run.iterations
    signal: int | None  # the signal that stopped it (signal.SIGINT / SIGTERM), else None
    tokens_total: int  # completion tokens generated by training, over the whole run
    wall_time_s: float  # seconds spent in training iterations, over the whole run
    changes: list[str]  # settings changed on resume ("name: old -> new")


def _kept(path: Path, iteration: int, log: Callable[[str], None], required: bool = True
          ) -> list[dict[str, Any]]:
    """Records of ``path`` up to ``iteration`` (those after it will be redone); says what is
    lost when the file is gone or has unreadable lines."""
    if not path.exists():
        if iteration > 0 and required:
            log(f"warning: {path} is missing; the records of iterations 1-{iteration} are lost "
                "(training resumes exactly all the same)")
        return []
    records = read_metrics(path)
    lines = sum(1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                if line.strip())
    if lines > len(records):
        log(f"warning: {lines - len(records)} unreadable line(s) in {path} skipped")
    return [r for r in records if isinstance(r.get("iteration"), int) and r["iteration"] <= iteration]


def train_loop(
    agent: Any,
    out: str | Path,
    run: RunConfig,
    *,
    metadata: dict[str, Any] | None = None,
    resume_from: str | Path | None = None,
    new_config: Any = None,
    evaluate: Callable[[Any], dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> LoopResult:
    """Train ``agent`` in run directory ``out`` up to ``run.iterations`` (module docstring).

    Args:
        agent: a trainable agent (:class:`~tokengym.agents.base.TrainableAgent` or one with
            the same ``train_iteration``/``state_dict`` contract).
        out: the run directory (``metrics.jsonl``, ``evals.jsonl``, ``checkpoints/``).
        run: the run settings.
        metadata: what the run is (agent, model, env, ...), stored in every checkpoint next to
            ``run``; a resumed run reads it back.
        resume_from: a checkpoint, a ``checkpoints/`` folder or a run directory to restore
            first; None starts from the agent as it is.
        new_config: the agent config to continue with after restoring (flags given with
            ``--resume``); applied by ``agent.reconfigure``, which refuses fields that cannot
            change. None keeps the checkpoint's.
        evaluate: ``evaluate(agent) -> metrics`` for ``evals.jsonl``; needs ``run.eval_every``.
        log: where one-line messages go.
        progress: show a progress bar on stderr.
    """
    run = run.validate()
    out = Path(out)
    with run_lock(out) if is_main() else contextlib.nullcontext():
        return _train_loop(agent, out, run, metadata, resume_from, new_config, evaluate, log,
                           progress)


def _train_loop(agent: Any, out: Path, run: RunConfig, metadata: dict[str, Any] | None,
                resume_from: str | Path | None, new_config: Any,
                evaluate: Callable[[Any], dict[str, Any]] | None,
                log: Callable[[str], None], progress: bool) -> LoopResult:
    """:func:`train_loop`'s body, run while holding the run directory's lock (rank 0)."""
    main = is_main()
    if not main:  # rank 0 alone writes and speaks
        log, progress = (lambda message: None), False
    ckpt_root = out / "checkpoints"
    for stale in clean_stale(ckpt_root) if main else []:
        log(f"removed {stale}: an unfinished checkpoint write of an earlier, killed process")
    changes: list[str] = []
    if resume_from is not None:
        # Every rank restores the checkpoint rank 0 chose (LATEST changes once rank 0 saves).
        resume_from = broadcast_object(str(find_checkpoint(resume_from).resolve()) if main else "")
        info = load_checkpoint(resume_from, agent)
        if info["world_size_note"]:
            log(f"warning: {info['world_size_note']}")
        old_run = checkpoint_run(info)
        changes = [f"{k}: {old_run[k]!r} -> {v!r}" for k, v in run.to_dict().items()
                   if k in old_run and old_run[k] != v]
        if new_config is not None:
            changes += agent.reconfigure(new_config)
        if changes:
            log(f"resumed at iteration {agent.iteration} with changed settings: "
                + "; ".join(changes))
    start = agent.iteration
    metadata = {**(metadata or {}), "run": run.to_dict()}
    metrics_path, evals_path = out / "metrics.jsonl", out / "evals.jsonl"
    tokens, wall, evals, logger = 0, 0.0, [], None
    if main:
        write_manifest(out, {**metadata, "config": agent.config.to_dict()},
                       str(agent.policy.device), world_size())
        kept = _kept(metrics_path, start, log)
        tokens = int(kept[-1].get("tokens_total", sum(r.get("tokens", 0) for r in kept))
                     ) if kept else 0
        wall = float(kept[-1].get("wall_time_s", sum(r.get("time_iteration_s", 0.0)
                                                     for r in kept))) if kept else 0.0
        evals = _kept(evals_path, start, log, required=False)
        if evals or evals_path.exists():
            atomic_write_jsonl(evals_path, evals)
        logger = MetricsLogger(out, tensorboard=run.tensorboard, start_iteration=start)
    # The token budget stops every rank at once; every rank joins rank 0's evaluations.
    tokens, wall, had_evals = broadcast_object((tokens, wall, bool(evals)))
    saved_at: int | None = None

    def log_eval() -> None:  # every rank enters (FSDP: the weights are gathered); rank 0 evaluates
        with gathered(agent.policy):
            if not main:
                return
            with local_only():
                record = {"iteration": agent.iteration, "tokens_total": tokens,
                          "wall_time_s": wall, **evaluate(agent)}
        with evals_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # Ctrl-C, and SIGTERM (what Slurm and Kubernetes send before killing): finish the current
    # iteration, checkpoint, return. A second signal aborts at once.
    stop: dict[str, Any] = {"signal": None}
    who = f"rank {rank()}: " if world_size() > 1 else ""

    def on_signal(signum: int, frame: Any) -> None:
        if stop["signal"] is not None:
            raise KeyboardInterrupt
        stop["signal"] = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        tqdm.write(f"{who}{name}: checkpointing after this iteration (again to abort now)")

    def stop_signal() -> int | None:
        """The signal that stops the run: the same on every rank (any rank's stops them all)."""
        return max_int(stop["signal"] or 0) or None

    # Signal handlers can only be set from the main thread (the loop may run in another one).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
                } if main_thread else {}
    bar = tqdm(total=run.iterations, initial=start, desc=type(agent).__name__, unit="it",
               file=sys.stderr, disable=not progress)
    stopped_by: int | None = None
    try:
        if evaluate is not None and run.eval_every and not had_evals:
            log_eval()
        while agent.iteration < run.iterations and not (run.token_budget
                                                        and tokens >= run.token_budget):
            stopped_by = stop_signal()
            if stopped_by is not None:
                break
            t0 = time.perf_counter()
            record = agent.train_iteration()
            wall += time.perf_counter() - t0
            tokens += int(record.get("tokens", 0))
            if logger is not None:
                logger.log({**record, "tokens_total": tokens, "wall_time_s": wall})
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward_mean']:+.3f}",
                            kl=f"{record['kl_mean']:.2f}", beta=f"{record['beta']:.3g}")
            if evaluate is not None and run.eval_every and agent.iteration % run.eval_every == 0:
                log_eval()
            if agent.iteration % run.checkpoint_every == 0:
                save_checkpoint(ckpt_root, agent, metadata, keep=run.keep_checkpoints)
                saved_at = agent.iteration
    finally:
        bar.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if logger is not None:
            logger.close()
    if saved_at == agent.iteration:
        ckpt = ckpt_root / f"iter_{agent.iteration:06d}"
    else:
        ckpt = save_checkpoint(ckpt_root, agent, metadata, keep=run.keep_checkpoints)
    interrupted = stopped_by is not None  # the loop only stops early for a signal
    return LoopResult(ckpt, interrupted, stopped_by, tokens, wall, changes)


def run_settings_from_checkpoint(info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(agent config dict, RunConfig dict)`` of a checkpoint's ``state.json`` content.

    Checkpoints of tokengym 0.1.0 kept the run bookkeeping in the agent config and the
    iteration target in the metadata; both layouts are read.
    """
    config = {k: v for k, v in info["config"].items() if k not in RUN_SETTINGS}
    return rename_deprecated(config, "checkpoint config"), checkpoint_run(info)


def checkpoint_run(info: dict[str, Any]) -> dict[str, Any]:
    """The run settings a checkpoint's ``state.json`` content was written under (both layouts:
    see :func:`run_settings_from_checkpoint`)."""
    metadata = info.get("metadata", {})
    run = dict(metadata.get("run", {}))
    for key in RUN_SETTINGS:
        if info["config"].get(key) is not None:
            run.setdefault(key, info["config"][key])
    if "iterations" in metadata:
        run.setdefault("iterations", metadata["iterations"])
    return run
