"""Nothing lost, nothing silently wrong: damaged checkpoints, LATEST, the run lock, SIGTERM and
the manifest of ``tokengym train`` runs (tiny-llama, seconds each)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tokengym.agents.logging import read_metrics
from tokengym.cli import main
from tokengym.fileio import RunLockedError, run_lock

ENV_ARGS = ["--env", "tokengym/Sentiment-v0", "--model", "tiny-llama",
            "--env-kwarg", "max_new_tokens=4", "--env-kwarg", "max_prompt_tokens=16"]
SMALL = ["--num-envs", "2", "--num-minibatches", "1", "--epochs", "1", "--num-samples", "0",
         "--no-tensorboard", "--checkpoint-every", "1", "--keep-checkpoints", "3"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "run"
    assert main(["train", *ENV_ARGS, *SMALL, "--iterations", "2", "--out", str(out)]) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _resume(out: Path, iterations: int = 3) -> int:
    return main(["train", "--resume", str(out), "--iterations", str(iterations),
                 "--no-tensorboard"])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["weights.safetensors", "optimizer.pt", "rng.pt"])
def test_a_flipped_byte_is_caught_naming_the_file_and_the_fallback(two_checkpoints: Path,
                                                                  tmp_path: Path,
                                                                  name: str) -> None:
    out = _copy(two_checkpoints, tmp_path)
    _flip_a_byte(out / "checkpoints" / "iter_000002" / name)
    with pytest.raises(SystemExit, match=rf"iter_000002/{name} is damaged.*iter_000001"):
        _resume(out)
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]  # untouched


@pytest.mark.parametrize("content, problem", [
    ("{not json", "cannot be read"),
    (json.dumps({"agent": {"iteration": -5}, "config": {}, "metadata": {}}), "iteration"),
    (json.dumps({"agent": {"iteration": 7}, "config": {}, "metadata": {}}), "folder is iter_000002"),
    (json.dumps([1, 2]), "not an integer"),
])
def test_a_bad_state_json_is_one_clear_error_and_loses_no_history(
        two_checkpoints: Path, tmp_path: Path, content: str, problem: str) -> None:
    out = _copy(two_checkpoints, tmp_path)
    (out / "checkpoints" / "iter_000002" / "state.json").write_text(content)
    with pytest.raises(SystemExit, match=problem):
        _resume(out)
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize("latest", [None, "iter_000009", "../../elsewhere/iter_000001", "/tmp",
                                    "garbage\x00"])
def test_latest_missing_dangling_or_a_path_falls_back_to_the_newest_complete(
        two_checkpoints: Path, tmp_path: Path, latest: str | None) -> None:
    out = _copy(two_checkpoints, tmp_path)
    path = out / "checkpoints" / "LATEST"
    if latest is None:
        path.unlink()
    else:
        path.write_text(latest)
    with pytest.warns(UserWarning, match="using the newest complete checkpoint"):
        assert _resume(out) == 0
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    assert (out / "checkpoints" / "LATEST").read_text() == "iter_000003"


def test_an_incomplete_newest_checkpoint_is_skipped(two_checkpoints: Path, tmp_path: Path) -> None:
    out = _copy(two_checkpoints, tmp_path)
    (out / "checkpoints" / "iter_000002" / "optimizer.pt").unlink()
    with pytest.warns(UserWarning, match="iter_000001"):
        assert _resume(out, 2) == 0
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]


def test_stale_temporary_checkpoint_folders_are_removed(two_checkpoints: Path,
                                                        tmp_path: Path) -> None:
    out = _copy(two_checkpoints, tmp_path)
    stale = out / "checkpoints" / ".iter_000003-abcd1234"
    stale.mkdir()
    (stale / "weights.safetensors").write_bytes(b"half written")
    assert _resume(out) == 0
    assert not stale.exists()


def test_a_missing_metrics_file_is_said_and_training_resumes(two_checkpoints: Path,
                                                            tmp_path: Path, capsys) -> None:
    out = _copy(two_checkpoints, tmp_path)
    (out / "metrics.jsonl").unlink()
    assert _resume(out) == 0
    captured = capsys.readouterr()
    assert "metrics.jsonl is missing" in captured.out + captured.err
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [3]


def test_the_manifest_traces_every_session(two_checkpoints: Path, tmp_path: Path) -> None:
    out = _copy(two_checkpoints, tmp_path)
    assert _resume(out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["sessions"]) == 2  # the first start and this resume
    last = manifest["sessions"][-1]
    assert set(last["versions"]) == {"tokengym", "torch", "transformers", "gymnasium"}
    assert all(last["versions"].values())
    assert last["device"] == "cpu" and len(manifest["settings_sha256"]) == 64
    assert manifest["settings"]["config"]["num_envs"] == 2
    assert manifest["settings"]["env"] == "tokengym/Sentiment-v0"


@contextmanager
def another_process_holding(path: Path) -> Iterator[int]:
    """A second process that holds ``path``'s run lock until the block ends (then it is killed
    with SIGKILL, which releases the lock with the process); yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from tokengym.fileio import run_lock\n"
         f"with run_lock({str(path)!r}):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with another_process_holding(out) as pid:
        with pytest.raises(SystemExit, match=rf"in use by another tokengym process \(pid {pid}\)"):
            main(["train", *ENV_ARGS, *SMALL, "--iterations", "1", "--out", str(out)])
        with pytest.raises(RunLockedError):
            with run_lock(out):
                pass
    with run_lock(out):
        pass
    assert main(["train", *ENV_ARGS, *SMALL, "--iterations", "1", "--out", str(out)]) == 0


def test_sigterm_checkpoints_and_exits_143(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokengym", "train", *ENV_ARGS, *SMALL, "--checkpoint-every", "100",
         "--iterations", "10000", "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "metrics.jsonl").is_file():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    printed, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    done = read_metrics(out / "metrics.jsonl")[-1]["iteration"]
    assert (out / "checkpoints" / "LATEST").read_text() == f"iter_{done:06d}"
    assert "SIGTERM: checkpointing" in printed + err


def test_resume_never_imports_what_a_run_directory_names(two_checkpoints: Path,
                                                         tmp_path: Path) -> None:
    out = _copy(two_checkpoints, tmp_path)
    marker = tmp_path / "ran"
    state_path = out / "checkpoints" / "iter_000002" / "state.json"
    state = json.loads(state_path.read_text())
    state["metadata"]["env_kwargs"].update(reward_model="os:system",
                                           reward_model_kwargs={"command": f"touch {marker}"})
    state_path.write_text(json.dumps(state))
    with pytest.raises(SystemExit, match=r"names code to import: \['os:system'\].*--trust-run-dir"):
        _resume(out)
    assert not marker.exists()
    state["metadata"]["env_kwargs"] = {"reward_model": "hf-classifier",
                                       "reward_model_kwargs": {"trust_remote_code": True}}
    state_path.write_text(json.dumps(state))
    with pytest.raises(SystemExit, match="trust_remote_code=true"):
        _resume(out)


def test_a_bench_run_in_use_is_refused(tmp_path: Path) -> None:
    from tokengym.benchmarks.runner import BenchRunner, run_dir
    from tokengym.benchmarks.suites import get_suite

    where = run_dir(tmp_path / "bench", "Sentiment", "sample", 0)
    with another_process_holding(where) as pid:
        runner = BenchRunner(get_suite("smoke"), tmp_path / "bench", log=lambda line: None)
        with pytest.raises(RunLockedError, match=f"pid {pid}"):
            runner.run_one("Sentiment", "sample", 0)
    assert not (where / "eval.json").exists()


def test_the_manifest_says_when_the_loaded_code_changed_on_disk(monkeypatch) -> None:
    from tokengym import manifest
    root = Path(manifest.__file__).resolve().parent.parent
    monkeypatch.setattr(manifest, "_process_start", lambda: time.time() + 1e6)
    assert manifest.changed_since_loaded(root) == []  # nothing edited after the start
    monkeypatch.setattr(manifest, "_process_start", lambda: 0.0)  # every file is newer
    changed = manifest.changed_since_loaded(root)
    assert "tokengym/manifest.py" in changed and all(not c.startswith("/") for c in changed)
    if (root / ".git").exists():
        assert manifest.source_commit()["changed_since_loaded"] == changed
