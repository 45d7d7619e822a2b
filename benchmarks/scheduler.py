"""``tokengym bench --jobs N``: one suite run by N local processes pulling runs from one queue.

:func:`run_jobs` starts the processes and sums their counts; :func:`_job_process` is what each
process runs. ``tokengym.bench`` (the command line) only parses the options and calls
:func:`run_jobs`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from tokengym.benchmarks.runner import BenchRunner
from tokengym.benchmarks.suites import Suite


def _job_process(todo: Any, results: Any, suite: Suite, out: str, jobs: int, threads: int,
                 keep_checkpoints: bool, command: str) -> None:
    """One process of :func:`run_jobs`: runs the indices it pulls from ``todo`` until a None."""
    # Its own process group: a terminal's Ctrl-C reaches the parent alone, which passes it on
    # once to every process (the same path as a `kill -INT` to the parent).
    os.setpgrp()
    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # as the parent's `tokengym` main does
    runner = BenchRunner(suite, out, keep_checkpoints=keep_checkpoints, command=command,
                         processes=jobs)
    try:
        results.put(runner.run_all(iter(todo.get, None)))
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # the parent says what happened, once


def run_jobs(suite: Suite, out: str, jobs: int, *, keep_checkpoints: bool,
             command: str) -> dict[str, int]:
    """Run ``suite`` in ``jobs`` fresh processes that split this machine's CPUs between them;
    returns the summed counts plus ``failed`` (processes that did not finish).

    Each process takes the next run of the grid from one shared queue when it is free, so a
    process that drew short runs (best-of-n, sample) takes more of them: a fixed K/N split would
    hand all of one agent's runs to the same process whenever N divides the number of agents.

    Why processes and not more threads: one forward of a small model on a few CPU threads
    spends much of its time waiting at each op's barrier, so two 1-thread processes get more
    done than one 2-thread process. Ctrl-C (or ``kill -INT`` to this process) is passed on to
    every process, and each stops where a one-process run would (a second Ctrl-C aborts at
    once); SIGTERM to this process ends them too. Rerunning the command resumes from the
    checkpoints.
    """
    # The processes are in their own process groups (_job_process), so that a terminal's Ctrl-C
    # reaches them once, through `forward`, as a `kill -INT` to this process does.
    # "spawn": a fresh interpreter per process, so no torch thread pool is inherited by fork.
    context = multiprocessing.get_context("spawn")
    todo, results = context.Queue(), context.Queue()
    todo.cancel_join_thread()  # what is left in it after a Ctrl-C must not hold up our exit
    for index in range(len(BenchRunner(suite, out).runs())):
        todo.put(index)
    for _ in range(jobs):
        todo.put(None)  # one "no more runs" per process
    threads = max(1, (os.cpu_count() or 1) // jobs)
    processes = [context.Process(target=_job_process, name=f"tokengym-bench-{k}-of-{jobs}",
                                 args=(todo, results, suite, out, jobs, threads, keep_checkpoints,
                                       command))
                 for k in range(jobs)]

    def stop(signum: int, frame: Any) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()
        raise SystemExit(128 + signum)

    interrupted: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        interrupted.append(signum)
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signum)

    print(f"{jobs} processes, {threads} thread(s) each")
    # signal handlers can only be set from the main thread (run_jobs may be called elsewhere)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGTERM, stop), (signal.SIGINT, forward))} if main_thread else {}
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    except KeyboardInterrupt:  # not in the main thread: no handler passes the signal on
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT)
        for process in processes:
            process.join()
        interrupted.append(signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if interrupted:
        raise SystemExit(f"interrupted: finished runs and checkpoints are in {out}; rerun the "
                         "same command to resume")
    failed = sum(process.exitcode != 0 for process in processes)
    counts = {"ran": 0, "skipped": 0, "failed": failed}
    for _ in range(jobs - failed):  # one result per process that finished
        for key, value in results.get(timeout=60).items():
            counts[key] += value
    return counts
