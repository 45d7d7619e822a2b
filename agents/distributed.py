"""Multi-process training on ``torch.distributed``: the collectives the agents use, no-ops in one
process.

A run started by ``torchrun --nproc-per-node N -m tokengym train ...`` (or ``tokengym train
--nproc N``, which starts torchrun) is N copies of one program, the ranks. Each rank plays its
own shard of episodes (its own vector env, ``num_envs`` rows, prompts seeded apart from the other
ranks'), and the ranks stay in step through the helpers here:

- :func:`init_from_env`: the process group from torchrun's environment variables (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), gloo on CPU (gloo for CPU
  tensors and NCCL for CUDA ones where CUDA is present), with a timeout on every collective;
- :func:`world_size`, :func:`rank`, :func:`is_main`: who is who (1, 0, True in one process);
- :func:`all_reduce_sum`, :func:`all_reduce_float`, :func:`global_mean`, :func:`global_std`,
  :func:`max_int`: statistics over every rank's rows;
- :func:`all_reduce_grads`: after the backward passes of an optimizer step, each gradient becomes
  the SUM over ranks (each rank's loss is already divided by the global token count, so the sum
  is the gradient one process would get on the whole batch);
- :func:`broadcast_module`, :func:`broadcast_object`, :func:`all_gather_object`, :func:`barrier`;
- :func:`local_only`: inside it every helper acts as in one process (rank 0 evaluating alone).

In one process (no process group, ``WORLD_SIZE`` unset or 1) every helper returns its input
unchanged, so single-process training is bit-for-bit what it was before. A collective that fails
(a rank died, or did not answer within the timeout) raises :class:`RankFailure`, whose message
names the failed rank (:mod:`tokengym.agents.rank_failure`).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from tokengym.agents import rank_failure
from tokengym.agents.rank_failure import RankFailure

__all__ = ["RankFailure", "all_gather_object", "all_reduce_float", "all_reduce_grads",
           "all_reduce_sum", "barrier", "broadcast_module", "broadcast_object", "global_mean",
           "global_std", "init_from_env", "is_main", "is_sharded", "local_only", "max_int", "rank",
           "session", "shutdown", "world_size"]

DEFAULT_TIMEOUT_S = 600.0
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_BUCKET = 1 << 25  # gradient elements per all-reduce (128 MiB of float32)
_local_depth = [0]  # open local_only() blocks
T = TypeVar("T")


def _group_up() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Ranks training together: 1 without a process group and inside :func:`local_only`."""
    return 1 if _local_depth[0] or not _group_up() else dist.get_world_size()


def rank() -> int:
    """This process's rank (0 without a process group; unchanged inside :func:`local_only`)."""
    return dist.get_rank() if _group_up() else 0


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes the run directory."""
    return rank() == 0


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Within the block, every helper acts as in one process: statistics of this rank's own
    rows, no collective. For work one rank does alone (rank 0's evaluations and sample tables)."""
    _local_depth[0] += 1
    try:
        yield
    finally:
        _local_depth[0] -= 1


def _collective(name: str, op: Callable[[], T]) -> T:
    """Run collective ``op``; a failure becomes :class:`RankFailure` naming the failed rank."""
    try:
        return op()
    except RankFailure:
        raise
    except RuntimeError as exc:  # gloo/NCCL errors and timeouts are RuntimeErrors
        raise RankFailure(rank_failure.describe(name, exc)) from exc


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``x`` (any shape) over the ranks; ``x`` itself in one process."""
    if world_size() == 1:
        return x
    out = x.detach().clone()
    _collective("all_reduce", lambda: dist.all_reduce(out))
    return out


def all_reduce_float(x: float) -> float:
    """The sum of a Python float over the ranks (float64); ``x`` itself in one process."""
    if world_size() == 1:
        return x
    return float(all_reduce_sum(torch.tensor(x, dtype=torch.float64)))


def max_int(x: int) -> int:
    """The largest of the ranks' ``x``; ``x`` itself in one process."""
    if world_size() == 1:
        return x
    out = torch.tensor(x, dtype=torch.int64)
    _collective("all_reduce", lambda: dist.all_reduce(out, op=dist.ReduceOp.MAX))
    return int(out)


def global_mean(x: torch.Tensor) -> float:
    """Mean of ``x`` ``(n,)`` over every rank's entries; ``float(x.mean())`` in one process."""
    if world_size() == 1:
        return float(x.mean())
    total = all_reduce_sum(torch.stack([x.double().sum(), x.new_tensor(float(x.numel()),
                                                                       dtype=torch.float64)]))
    return float(total[0] / total[1]) if total[1] > 0 else math.nan


def global_std(x: torch.Tensor) -> float:
    """Unbiased standard deviation of ``x`` ``(n,)`` over every rank's entries (two passes: the
    global mean, then the squared deviations from it); 0.0 for fewer than 2 entries in all. In one
    process ``float(x.std())`` (0.0 for one entry)."""
    if world_size() == 1:
        return float(x.std()) if x.numel() > 1 else 0.0
    count = all_reduce_float(float(x.numel()))
    if count < 2:
        return 0.0
    mean = global_mean(x)
    squares = all_reduce_float(float(((x.double() - mean) ** 2).sum()))
    return math.sqrt(squares / (count - 1))


def all_reduce_grads(params: Iterable[nn.Parameter]) -> None:
    """Replace each ``param.grad`` by its sum over the ranks, in buckets of flattened gradients.

    Parameters without a gradient are skipped; every rank must hold gradients for the same
    parameters (true here: every rank runs the same steps, and the approximate-KL early stop
    that drops the policy's gradients is decided globally). No-op in one process.
    """
    if world_size() == 1:
        return
    # FSDP-sharded gradients (DTensors) were already summed by FSDP's reduce-scatter.
    grads = [p.grad for p in params if p.grad is not None and not is_sharded(p.grad)]
    by_kind: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for grad in grads:
        by_kind.setdefault((grad.dtype, grad.device), []).append(grad)
    for kind in by_kind.values():
        start = 0
        while start < len(kind):
            end, size = start, 0
            while end < len(kind) and (end == start or size + kind[end].numel() <= _BUCKET):
                size += kind[end].numel()
                end += 1
            bucket = kind[start:end]
            flat = torch.cat([g.reshape(-1) for g in bucket])
            _collective("all_reduce (gradients)", lambda f=flat: dist.all_reduce(f))
            offset = 0
            for grad in bucket:
                grad.copy_(flat[offset: offset + grad.numel()].view_as(grad))
                offset += grad.numel()
            start = end


def is_sharded(tensor: Any) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (an FSDP-sharded parameter, gradient or Adam moment;
    :mod:`tokengym.agents.fsdp`)."""
    from torch.distributed.tensor import DTensor  # imported only when asked

    return isinstance(tensor, DTensor)


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module`` (in place). No-op in
    one process."""
    if world_size() == 1:
        return
    for tensor in module.state_dict().values():
        _collective("broadcast (weights)", lambda t=tensor: dist.broadcast(t, src=0))


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` (picklable) on every rank; ``obj`` itself in one process."""
    if world_size() == 1:
        return obj
    box = [obj]
    _collective("broadcast_object_list", lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    _collective("all_gather_object", lambda: dist.all_gather_object(out, obj))
    return out


def barrier() -> None:
    """Wait until every rank gets here. No-op in one process."""
    if world_size() > 1:
        _collective("barrier", dist.barrier)


def _backend() -> str:
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def env_problem() -> str | None:
    """What is wrong with torchrun's environment variables in this process, or None (unset,
    a world size of 1, or complete and well formed)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world > 1:
            int(os.environ.get("RANK", "0") or 0), int(os.environ.get("LOCAL_RANK", "0") or 0)
    except ValueError:
        return ("WORLD_SIZE, RANK and LOCAL_RANK must be integers, got "
                f"{[os.environ.get(v) for v in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK')]}")
    missing = [v for v in ENV_VARS if not os.environ.get(v)]
    if world > 1 and missing:
        return (f"WORLD_SIZE={world} but {missing} are not set: start the processes with "
                "torchrun (or tokengym train --nproc N)")
    return None


def init_from_env(timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the process group torchrun describes in the environment; False (and nothing done)
    when ``WORLD_SIZE`` is unset or 1, or a group is already up.

    Every collective then fails after ``timeout_s`` seconds without an answer (gloo honours it;
    on NCCL its watchdog ends the process). With CUDA, ``LOCAL_RANK`` picks this rank's GPU.
    ``ValueError`` names a missing or malformed variable.
    """
    if not isinstance(timeout_s, (int, float)) or not timeout_s > 0 or math.isinf(timeout_s):
        raise ValueError(f"the collective timeout must be a positive number of seconds, "
                         f"got {timeout_s!r}")
    problem = env_problem()
    if problem:
        raise ValueError(problem)
    if _group_up() or int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    dist.init_process_group(_backend(), timeout=datetime.timedelta(seconds=timeout_s))
    rank_failure.register(timeout_s)
    return True


def shutdown() -> None:
    """Leave the process group (if any)."""
    if _group_up():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[bool]:
    """:func:`init_from_env` for the block (yields whether a group was started), then
    :func:`shutdown`. A rank leaving the block with an error first tells the others why
    (:func:`tokengym.agents.rank_failure.note`), so that their messages name it."""
    started = init_from_env(timeout_s)
    try:
        yield started
    except RankFailure:
        raise
    except BaseException as exc:
        if started and not (isinstance(exc, SystemExit) and exc.code in (0, None)):
            rank_failure.note(exc)
        raise
    finally:
        if started:
            shutdown()
