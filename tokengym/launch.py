"""``tokengym train --nproc N`` (and ``tokengym bench --nproc N``): the same command in N processes
on this machine, through torchrun.

``tokengym train --nproc 2 ARGS`` runs ``python -m torch.distributed.run --standalone
--nproc-per-node 2 --shutdown-timeout S -m tokengym train ARGS`` (``--nproc`` left out: torchrun
would read it as an abbreviation of its ``--nproc-per-node``) and returns its exit status. Each
of those processes sees torchrun's ``WORLD_SIZE`` and trains as one rank
(:mod:`tokengym.agents.distributed`); ``torchrun --nproc-per-node N -m tokengym train ARGS`` (and
torchrun's multi-host options) does the same. See ``docs/distributed.md``.

Signals: Ctrl-C or SIGTERM to this launcher is passed on once to torchrun, which passes it on
to every rank: each finishes its iteration, rank 0 writes the checkpoint. torchrun waits
``--shutdown-timeout`` seconds (here: ``--dist-timeout``) before it kills the ranks.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import subprocess
import sys
from typing import Any

from tokengym.agents.distributed import DEFAULT_TIMEOUT_S, env_problem

_TRAIN_NPROC_HELP = ("train in N processes on this machine, started by torchrun (1: this "
                     "process); --num-envs is per process, so each iteration samples N x "
                     "num-envs episodes")


def add_arguments(parser: argparse.ArgumentParser, nproc_help: str = _TRAIN_NPROC_HELP) -> None:
    group = parser.add_argument_group("several processes (docs/distributed.md)")
    group.add_argument("--nproc", type=int, default=1, metavar="N", help=nproc_help)
    group.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                       help="seconds a process waits for the others at a collective before it "
                            "stops with an error naming the rank that failed (default "
                            f"{DEFAULT_TIMEOUT_S:g})")


def under_torchrun() -> bool:
    """Whether this process is one rank of a torchrun (or equivalently launched) group."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def check(args: argparse.Namespace) -> None:
    """``SystemExit`` for ``--nproc``/``--dist-timeout`` values that cannot work."""
    if args.nproc < 1:
        raise SystemExit(f"--nproc must be >= 1, got {args.nproc}")
    if not args.dist_timeout > 0 or args.dist_timeout == float("inf"):
        raise SystemExit(f"--dist-timeout must be a positive number of seconds, got "
                         f"{args.dist_timeout}")
    problem = env_problem()
    if problem:
        raise SystemExit(problem)
    world = os.environ.get("WORLD_SIZE", "")
    if under_torchrun() and args.nproc > 1 and world != str(args.nproc):
        raise SystemExit(f"--nproc {args.nproc}, but torchrun started {world} process(es): under "
                         "torchrun leave --nproc out (--nproc-per-node and --nnodes set the count)")


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--nproc="):
            skip = False
        elif arg == "--nproc":
            skip = True
        else:
            out.append(arg)
    return out


def launch(argv: list[str], nproc: int, timeout_s: float, command: str = "train") -> int:
    """Run ``tokengym COMMAND ARGV`` (less ``--nproc``) in ``nproc`` processes under torchrun;
    returns torchrun's exit status, or 128 + the signal's number after a Ctrl-C or SIGTERM (as
    an interrupted run of one process does)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", f"--shutdown-timeout={math.ceil(timeout_s)}",
           "-m", "tokengym", command, *without_nproc(argv)]
    print(f"starting {nproc} processes: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    # torchrun in its own session: a terminal's Ctrl-C reaches it once, through this process.
    proc = subprocess.Popen(cmd, start_new_session=True)
    forwarded: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)
            forwarded.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
        return 128 + forwarded[0] if forwarded and code != 0 else code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
