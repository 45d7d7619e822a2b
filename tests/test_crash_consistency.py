"""kill -9 at many moments of a real ``tokengym train`` process, then ``--resume``: every resume
works, at most the iteration in flight is lost, and the run ends bit-identical to one that was
never interrupted (tiny-llama, one thread, so that floating point is reproducible).

A killed process is a subprocess that patches one function of the write path (the weights, the
optimizer state, ``LATEST``, the metrics log, the rename of a checkpoint folder, the rewrite of
``metrics.jsonl`` on resume) to SIGKILL itself at its n-th call, then runs the CLI as usual.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tokengym.agents.logging import read_metrics
from tokengym.cli import main

ITERATIONS = 5
ARGS = ["train", "--env", "tokengym/Sentiment-v0", "--model", "tiny-llama",
        "--env-kwarg", "max_new_tokens=4", "--env-kwarg", "max_prompt_tokens=16",
        "--num-envs", "2", "--num-minibatches", "1", "--epochs", "1", "--num-samples", "0",
        "--no-tensorboard", "--checkpoint-every", "1", "--keep-checkpoints", "2",
        "--iterations", str(ITERATIONS)]

# "module:attr.path" -> that attribute patched so that its n-th call kills the process
# (SIGKILL: no cleanup, no atexit), before tokengym is imported.
KILLER = """
import importlib, os, signal, sys
target, nth = sys.argv[1], int(sys.argv[2])
module_name, path = target.split(":")
owner = importlib.import_module(module_name)
*parents, name = path.split(".")
for parent in parents:
    owner = getattr(owner, parent)
original = getattr(owner, name)
calls = [0]
def killer(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(owner, name, killer)
from tokengym.cli import main
sys.exit(main(sys.argv[3:]))
"""

# (function, n-th call) pairs: each a moment of the write path of a 5-iteration run with a
# checkpoint every iteration. save_file/torch.save write a checkpoint's files, os.replace renames
# its folder into place (and LATEST's temp file), log appends to metrics.jsonl.
MOMENTS = [
    ("safetensors.torch:save_file", 1), ("safetensors.torch:save_file", 3),
    ("safetensors.torch:save_file", 5),
    ("torch:save", 1), ("torch:save", 4), ("torch:save", 8),
    ("os:replace", 1), ("os:replace", 2), ("os:replace", 5), ("os:replace", 8),
    ("os:replace", 10),
    ("tokengym.agents.logging:MetricsLogger.log", 1),
    ("tokengym.agents.logging:MetricsLogger.log", 3),
    ("tokengym.agents.logging:MetricsLogger.log", 5),
    ("tokengym.agents.checkpoint:atomic_write_text", 2),
    ("tokengym.agents.checkpoint:atomic_write_text", 5),
    ("tokengym.agents.checkpoint:shutil.rmtree", 1),
    ("tokengym.agents.checkpoint:shutil.rmtree", 3),
    ("tokengym.agents.loop:save_checkpoint", 3),
    ("tokengym.agents.loop:save_checkpoint", 5),
]

pytestmark = pytest.mark.usefixtures("one_thread")


def _run_killed(target: str, nth: int, argv: list[str]) -> int:
    """Run the CLI with ``argv`` in a subprocess that kills itself at ``target``'s n-th call."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", KILLER, target, str(nth), *argv], env=env,
                          capture_output=True, text=True, timeout=300)
    return done.returncode


def _weights(out: Path) -> dict:
    return load_file(out / "checkpoints" / f"iter_{ITERATIONS:06d}" / "weights.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # One thread, as in the killed subprocesses and the resumes (the function-scoped one_thread
    # fixture starts after this module-scoped one): the thread count changes float rounding.
    out = tmp_path_factory.mktemp("crash") / "straight"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*ARGS, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return _weights(out)


@pytest.mark.parametrize("target, nth", MOMENTS, ids=[f"{t}#{n}" for t, n in MOMENTS])
def test_kill_then_resume_is_exact(reference: dict, tmp_path: Path, target: str,
                                   nth: int) -> None:
    out = tmp_path / "run"
    code = _run_killed(target, nth, [*ARGS, "--out", str(out)])
    assert code == -9, f"the process was not killed at {target} #{nth} (exit {code})"
    done = [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] \
        if (out / "metrics.jsonl").exists() else []
    if (out / "checkpoints").exists() and any((out / "checkpoints").glob("iter_*")):
        assert main(["train", "--resume", str(out), "--iterations", str(ITERATIONS),
                     "--no-tensorboard"]) == 0
    else:  # killed before the first checkpoint: the run starts again, as a user would
        assert main([*ARGS, "--out", str(out)]) == 0
    records = [r["iteration"] for r in read_metrics(out / "metrics.jsonl")]
    assert records == list(range(1, ITERATIONS + 1))  # each iteration logged exactly once
    assert len(done) - sum(1 for i in done if i in records) <= 1  # at most the one in flight
    weights = _weights(out)
    assert weights.keys() == reference.keys()
    assert all(weights[k].equal(reference[k]) for k in reference), "resume is not bit-exact"
    assert not list((out / "checkpoints").glob(".iter_*")), "a stale temp folder was left"


def test_kill_during_the_metrics_rewrite_of_a_resume(reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run_killed("tokengym.agents.logging:MetricsLogger.log", 4,
                       [*ARGS, "--out", str(out)]) == -9
    kept = read_metrics(out / "metrics.jsonl")
    code = _run_killed("tokengym.agents.logging:atomic_write_jsonl", 1,
                       ["train", "--resume", str(out), "--iterations", str(ITERATIONS),
                        "--no-tensorboard"])
    assert code == -9
    assert read_metrics(out / "metrics.jsonl") == kept  # the rewrite is all or nothing
    assert main(["train", "--resume", str(out), "--iterations", str(ITERATIONS),
                 "--no-tensorboard"]) == 0
    weights = _weights(out)
    assert all(weights[k].equal(reference[k]) for k in reference)
