"""``tokengym bench``: run a benchmark suite (tasks x agents x seeds), or rebuild its report.

    tokengym bench --suite smoke --out bench/smoke
    tokengym bench --suite quick --tasks Sentiment Length --agents ppo sample --seeds 3 --out DIR
    tokengym bench --suite quick --env-kwarg max_new_tokens=8 --out DIR   # every task's env
    tokengym bench --suite quick --jobs 2 --out DIR   # two local processes, one thread each
    tokengym bench --suite quick --shard 0/2 --out DIR   # on machine 1 ...
    tokengym bench --suite quick --shard 1/2 --out DIR   # ... and machine 2, sharing DIR
    tokengym bench --suite full --nproc 8 --out DIR      # every training run on 8 GPUs (torchrun)
    tokengym bench --report DIR          # results.csv, RESULTS.md and plots from the run logs
    tokengym bench --suite perf --out DIR  # speed benchmarks into DIR/PERF.md

Finished runs in ``--out`` are skipped and unfinished ones resume from their checkpoint, so an
interrupted suite continues where it stopped. See ``docs/benchmarks.md``.

This module only parses the command line; the runs are :mod:`tokengym.benchmarks.runner`'s and
the ``--jobs`` processes :mod:`tokengym.benchmarks.scheduler`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import warnings
from typing import Any

from tokengym import launch
from tokengym.agents import distributed
from tokengym.agents.distributed import RankFailure, is_main
from tokengym.benchmarks.perf import run_perf
from tokengym.benchmarks.report import write_report
from tokengym.benchmarks.runner import BenchRunner
from tokengym.benchmarks.scheduler import run_jobs
from tokengym.benchmarks.suites import Suite, get_suite
from tokengym.train import parse_env_kwargs

SUITE_NAMES = ("smoke", "tune", "quick", "full", "perf")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--suite", choices=SUITE_NAMES, help="the suite to run")
    parser.add_argument("--report", metavar="DIR",
                        help="only rebuild results.csv, RESULTS.md and the plots of DIR")
    parser.add_argument("--out", help="benchmark directory (default bench/<suite>)")
    parser.add_argument("--tasks", nargs="+", help="subset of the suite's tasks (or others)")
    parser.add_argument("--agents", nargs="+", help="agents instead of the suite's")
    parser.add_argument("--seeds", type=int, help="N seeds per task x agent (from the suite's "
                        "first seed, 0 but for the tuning suite)")
    parser.add_argument("--model", help="policy model instead of the suite's")
    sizes = parser.add_argument_group("size overrides (e.g. to try a suite quickly)")
    sizes.add_argument("--iterations", type=int, help="training iterations per run")
    sizes.add_argument("--token-budget", type=int,
                       help="sampled training tokens per trainable run, the same for every agent "
                            "(RLOO/GRPO's k samples count); --iterations is then an upper bound")
    sizes.add_argument("--num-envs", type=int, help="episodes per training rollout")
    sizes.add_argument("--eval-episodes", type=int, help="held-out episodes per evaluation")
    sizes.add_argument("--eval-every", type=int, help="evaluations during training (gold tasks)")
    sizes.add_argument("--device", help="auto, cpu, cuda, ...")
    parser.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                        help="env keyword for every task of the suite, e.g. max_new_tokens=8 "
                             "(VALUE parsed as JSON when it can be; repeatable)")
    # Deprecated alias of --env-kwarg max_new_tokens=N, accepted for one release (0.1.x).
    parser.add_argument("--max-new-tokens", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--shard", metavar="K/N", type=parse_shard,
                        help="run only every N-th run starting at the K-th (0-based), so that N "
                             "processes or machines sharing --out split the suite between them")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="run the suite in N local processes, each taking the next run when "
                             "free, with CPUs/N threads (on a 2-core CPU, --jobs 2 does about "
                             "1.4x the runs per hour of one 2-thread process)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep finished runs' checkpoints (deleted by default)")
    parser.add_argument("--perf-timeout", type=float, default=1800.0,
                        help="seconds per speed benchmark (--suite perf)")
    launch.add_arguments(parser, nproc_help=(
        "train each run in N processes on this machine (one per GPU), started by torchrun; the "
        "suite's --num-envs is split between them, so the runs are the suite's own"))


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``; ``argparse`` reports the error otherwise."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 0/2, got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"K/N needs N >= 1 and 0 <= K < N, got {text!r}")
    return k, n


def fold_deprecated(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with ``--max-new-tokens N`` turned into ``--env-kwarg max_new_tokens=N``.

    Warns (``DeprecationWarning`` and a one-line note on stderr, since Python hides the warning
    outside ``__main__``); ``ValueError`` when both spellings set ``max_new_tokens``. Returns
    ``args`` itself when there is nothing to fold, so calling it again warns only once.
    """
    if args.max_new_tokens is None:
        return args
    if "max_new_tokens" in parse_env_kwargs(args.env_kwarg):
        raise ValueError("both --max-new-tokens (deprecated) and --env-kwarg max_new_tokens=... "
                         "are given; keep only --env-kwarg")
    message = (f"--max-new-tokens is deprecated (removed in tokengym 0.2); use "
               f"--env-kwarg max_new_tokens={args.max_new_tokens}")
    warnings.warn(message, DeprecationWarning, stacklevel=2)
    print(f"note: {message}", file=sys.stderr)
    return argparse.Namespace(**{**vars(args), "max_new_tokens": None,
                                 "env_kwarg": [f"max_new_tokens={args.max_new_tokens}",
                                               *args.env_kwarg]})


def build_suite(args: argparse.Namespace) -> Suite:
    """The named suite with the command line's overrides applied (and validated).

    ``--env-kwarg`` keywords go to every task, under the suite's ``"*"`` env keywords (so a
    keyword that the suite sets for one task by name stays that task's).
    """
    args = fold_deprecated(args)
    suite = get_suite(args.suite)
    changes: dict[str, Any] = {}
    for key in ("model", "seeds", "iterations", "token_budget", "num_envs", "eval_episodes",
                "eval_every", "device"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.tasks:
        changes["tasks"] = tuple(args.tasks)
    if args.agents:
        changes["agents"] = tuple(args.agents)
    if args.env_kwarg:
        env_kwargs = {k: dict(v) for k, v in suite.env_kwargs.items()}
        env_kwargs.setdefault("*", {}).update(parse_env_kwargs(args.env_kwarg))
        changes["env_kwargs"] = env_kwargs
    suite = dataclasses.replace(suite, **changes)
    # A label's task restriction follows the chosen agents and tasks.
    agent_tasks = {label: tuple(t for t in tasks if t in suite.tasks)
                   for label, tasks in suite.agent_tasks.items() if label in suite.agents}
    return dataclasses.replace(suite, agent_tasks=agent_tasks).validate()


def command_line(args: argparse.Namespace, out: str) -> str:
    """The ``tokengym bench`` command equivalent to ``args`` (recorded in RESULTS.md)."""
    words = ["tokengym", "bench"]
    for key, value in vars(args).items():
        # --shard and --jobs only split the work: the one-process command names the same runs.
        # command_argv: the CLI's copy of the arguments themselves (tokengym.cli), not a flag.
        # --nproc and --dist-timeout: how many processes train each run, not which runs.
        if (key in ("report", "out", "perf_timeout", "shard", "jobs", "command_argv", "nproc",
                    "dist_timeout")
                or value is None
                or value is False or value == []):
            continue
        flag = "--" + key.replace("_", "-")
        if key == "env_kwarg":  # repeatable: one flag per keyword
            words += [word for item in value for word in (flag, item)]
        elif value is True:
            words.append(flag)
        else:
            words += [flag, *([str(v) for v in value] if isinstance(value, (list, tuple))
                              else [str(value)])]
    return " ".join(shlex.quote(w) for w in [*words, "--out", out])


def run(args: argparse.Namespace, name: str) -> int:
    if args.report:
        try:
            paths = write_report(args.report)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        print("\n".join(f"{key}: {path}" for key, path in paths.items()))
        return 0
    if not args.suite:
        raise SystemExit("pass --suite {smoke,tune,quick,full,perf} (to run) or --report DIR")
    out = args.out or f"bench/{args.suite}"
    jobs = 1 if args.jobs is None else args.jobs
    if jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {jobs}")
    launch.check(args)
    several = args.nproc > 1 or launch.under_torchrun()
    if args.suite == "perf":
        if jobs > 1 or several:
            raise SystemExit("--suite perf runs its speed benchmarks one at a time (each times "
                             "the whole machine); --jobs and --nproc are for the training suites")
        print(f"wrote {run_perf(out, model=args.model, timeout=args.perf_timeout)}")
        return 0
    try:
        args = fold_deprecated(args)  # before the command line is recorded: the new spelling
        suite = build_suite(args)
    except ValueError as exc:
        raise SystemExit(f"invalid suite settings: {exc}") from None
    command = command_line(args, out)
    if jobs > 1 and args.shard is not None:
        raise SystemExit("pass --jobs (processes on this machine) or --shard (one of several "
                         "machines), not both")
    if jobs > 1 and several:
        raise SystemExit("pass --jobs (several runs at once, one process each) or --nproc / "
                         "torchrun (each run in several processes), not both")
    if args.nproc > 1 and not launch.under_torchrun():
        return launch.launch(args.command_argv, args.nproc, args.dist_timeout, command="bench")
    try:
        with distributed.session(args.dist_timeout):  # a no-op in one process
            return _run_suite(args, suite, out, jobs, command)
    except RankFailure as exc:
        raise SystemExit(str(exc)) from None


def _run_suite(args: argparse.Namespace, suite: Suite, out: str, jobs: int, command: str) -> int:
    """Run ``suite`` into ``out`` (one process, ``--jobs`` processes, or this rank of a
    torchrun group), then write the report (rank 0)."""
    try:
        if jobs > 1:
            counts = run_jobs(suite, out, jobs, keep_checkpoints=args.keep_checkpoints,
                              command=command)
        else:
            counts = BenchRunner(suite, out, keep_checkpoints=args.keep_checkpoints,
                                 command=command, shard=args.shard or (0, 1)).run_all()
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if not is_main():
        return 0
    paths = write_report(out)
    print(f"{counts['ran']} run(s) done, {counts['skipped']} already finished (skipped)")
    print("\n".join(f"{key}: {path}" for key, path in paths.items()))
    if counts.get("failed"):
        print(f"{counts['failed']} of {jobs} processes failed (see their errors above); "
              "rerun the same command to finish their runs")
        return 1
    return 0

