"""``tokengym bench --suite perf``: the speed benchmarks, each in a subprocess, into ``PERF.md``.

Runs ``python -m tokengym.benchmarks.<name>`` for env overhead, reward-model throughput, PPO vs
its floor and (when present) the agents side by side, and collects what each prints (its tables)
under one heading per benchmark, with the command, exit status and duration.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tokengym.fileio import atomic_write_text

# (title, module, the flag that names the policy model)
BENCHMARKS: tuple[tuple[str, str, str], ...] = (
    ("Env overhead", "tokengym.benchmarks.env_overhead", "--model"),
    ("Reward model throughput", "tokengym.benchmarks.reward_models", "--policy"),
    ("PPO vs its floor", "tokengym.benchmarks.ppo_speed", "--model"),
    ("Agents side by side", "tokengym.benchmarks.agents_speed", "--model"),
)


def run_perf(out: str | os.PathLike[str], *, model: str | None = None, timeout: float = 1800.0,
             log: Callable[[str], None] = print) -> Path:
    """Run every available benchmark of :data:`BENCHMARKS`; write and return ``out/PERF.md``.

    Args:
        out: the output directory.
        model: the policy model passed to each benchmark (their default, SmolLM2-135M, if None).
        timeout: seconds allowed per benchmark; a benchmark over it is reported as timed out.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = ["# tokengym speed benchmarks", ""]
    for title, module, model_flag in BENCHMARKS:
        if importlib.util.find_spec(module) is None:
            log(f"{title}: {module} is not installed, skipped")
            continue
        cmd = [sys.executable, "-m", module] + ([model_flag, model] if model else [])
        shown = " ".join(["python", *cmd[1:]])
        log(f"{title}: {shown}")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            status, text = f"exit {proc.returncode}", proc.stdout
            if proc.returncode:
                text += "\n--- stderr (tail) ---\n" + proc.stderr[-3000:]
        except subprocess.TimeoutExpired as exc:
            status = f"timed out after {timeout:.0f} s"
            text = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        seconds = time.perf_counter() - t0
        sections += [f"## {title}", "", f"`{shown}` ({status}, {seconds:.0f} s)", "", "```",
                     text.strip(), "```", ""]
    path = out / "PERF.md"
    atomic_write_text(path, "\n".join(sections))
    return path
