"""``tokengym bench --nproc 2`` (issue 13, item 3): each training run of a suite under torchrun.

The same smoke-suite subset runs in one process and in two (gloo, tiny-llama): the two-process
bench splits the suite's ``num_envs`` between its ranks, so its runs are the one-process runs
(the same episodes per iteration and token count); rank 0 alone
evaluates, runs the evaluation-only agents and writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}
SUITE = ["--suite", "smoke", "--tasks", "Sentiment", "--agents", "ppo", "sample", "--seeds", "1"]


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokengym", "bench", *args], env=ENV,
                          capture_output=True, text=True, timeout=600)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def benches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bench_nproc")
    out = {"one": tmp / "one", "two": tmp / "two"}
    for name, extra in (("one", []), ("two", ["--nproc", "2"])):
        done = bench(*SUITE, *extra, "--out", str(out[name]))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_two_processes_run_the_suites_runs_and_rank_0_alone_writes(
        benches: dict[str, Path]) -> None:
    one, two = benches["one"], benches["two"]
    for run in ("ppo", "sample"):
        assert (two / "runs/Sentiment" / run / "seed0/eval.json").is_file()
    first, second = (records(d / "runs/Sentiment/ppo/seed0/metrics.jsonl") for d in (one, two))
    assert [r["iteration"] for r in second] == [1, 2]  # one writer: no rank's lines twice
    # An iteration samples the suite's 4 episodes, 2 per rank (each rank draws its own samples:
    # tests/test_distributed.py checks that the prompts are the one-process run's).
    assert [r["tokens"] for r in second] == [r["tokens"] for r in first] == [4 * 8, 4 * 8]
    evals = {d: json.loads((d / "runs/Sentiment/ppo/seed0/eval.json").read_text())
             for d in (one, two)}
    assert evals[two]["tokens"] == second[-1]["tokens_total"]  # every rank's tokens count
    assert evals[two]["config"]["num_envs"] == 2  # per rank: the suite's 4 split in two
    # `sample` is evaluated by rank 0 alone, exactly as one process does.
    samples = [json.loads((d / "runs/Sentiment/sample/seed0/eval.json").read_text())["metrics"]
               for d in (one, two)]
    assert samples[0]["reward_mean"] == samples[1]["reward_mean"]


def test_the_report_says_how_many_processes_trained_each_run(benches: dict[str, Path]) -> None:
    meta = json.loads((benches["two"] / "bench.json").read_text())
    assert meta["ranks"] == 2
    assert "--nproc" not in meta["command"]  # the same runs as the one-process command
    assert "Ranks: each trainable run trained in 2 processes" in \
        (benches["two"] / "RESULTS.md").read_text()
    assert "Ranks:" not in (benches["one"] / "RESULTS.md").read_text()


def test_jobs_and_nproc_together_are_refused(tmp_path: Path) -> None:
    done = bench(*SUITE, "--jobs", "2", "--nproc", "2", "--out", str(tmp_path))
    assert done.returncode != 0
    assert "not both" in done.stderr
