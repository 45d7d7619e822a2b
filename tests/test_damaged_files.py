"""Damaged files beyond the checkpoint (see test_run_safety.py for those): every case ends in one
clear message naming the file, or in a correct fallback that says what it did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tokengym.agents.logging import read_metrics
from tokengym.cli import main

ENV_ARGS = ["--env", "tokengym/Sentiment-v0", "--model", "tiny-llama",
            "--env-kwarg", "max_new_tokens=4", "--env-kwarg", "max_prompt_tokens=16"]
SMALL = ["--num-envs", "2", "--num-minibatches", "1", "--epochs", "1", "--no-tensorboard",
         "--checkpoint-every", "1", "--keep-checkpoints", "3"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_with_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("damaged") / "run"
    assert main(["train", *ENV_ARGS, *SMALL, "--num-samples", "2", "--iterations", "2",
                 "--out", str(out)]) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def _resume(out: Path, iterations: int = 3) -> int:
    return main(["train", "--resume", str(out), "--iterations", str(iterations),
                 "--no-tensorboard"])


def test_a_truncated_weights_file_is_named(run_with_samples: Path, tmp_path: Path) -> None:
    out = _copy(run_with_samples, tmp_path)
    weights = out / "checkpoints" / "iter_000002" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(SystemExit, match="weights.safetensors is damaged.*iter_000001"):
        _resume(out)


def test_a_deleted_weights_file_falls_back_to_the_previous_checkpoint(run_with_samples: Path,
                                                                      tmp_path: Path) -> None:
    out = _copy(run_with_samples, tmp_path)
    (out / "checkpoints" / "iter_000002" / "weights.safetensors").unlink()
    with pytest.warns(UserWarning, match="missing or incomplete"):
        assert _resume(out) == 0
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]


def test_no_checkpoint_at_all_is_one_clear_error(run_with_samples: Path, tmp_path: Path) -> None:
    out = _copy(run_with_samples, tmp_path)
    shutil.rmtree(out / "checkpoints")
    (out / "checkpoints").mkdir()
    with pytest.raises(SystemExit, match="no checkpoint found"):
        _resume(out)


def test_a_garbled_line_in_metrics_is_said_and_skipped(run_with_samples: Path, tmp_path: Path,
                                                       capsys) -> None:
    out = _copy(run_with_samples, tmp_path)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text(lines[0] + "\n{garbage\n" + lines[1] + "\n")
    assert _resume(out) == 0
    captured = capsys.readouterr()
    assert "1 unreadable line(s)" in captured.out + captured.err
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]


def test_a_garbled_sample_table_source_only_skips_the_table(run_with_samples: Path,
                                                           tmp_path: Path, capsys) -> None:
    out = _copy(run_with_samples, tmp_path)
    (out / "samples_before.json").write_bytes(b"\x89PNG not json")
    assert _resume(out) == 0
    assert "no samples.md" in capsys.readouterr().err


def test_a_garbled_manifest_is_rebuilt(run_with_samples: Path, tmp_path: Path) -> None:
    out = _copy(run_with_samples, tmp_path)
    (out / "manifest.json").write_text("{")
    assert _resume(out) == 0
    assert len(json.loads((out / "manifest.json").read_text())["sessions"]) == 1


def test_a_garbage_lock_file_does_not_block(run_with_samples: Path, tmp_path: Path) -> None:
    out = _copy(run_with_samples, tmp_path)
    (out / ".lock").write_text("not a pid, left by something else")
    assert _resume(out) == 0


def test_damaged_benchmark_files_are_named(tmp_path: Path) -> None:
    from tokengym.benchmarks.report import write_report

    run = tmp_path / "runs" / "Sentiment" / "sample" / "seed0"
    run.mkdir(parents=True)
    (run / "eval.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"eval.json is damaged.*delete it to rerun"):
        write_report(tmp_path)
    (run / "eval.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a run's evaluation"):
        write_report(tmp_path)
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "bench.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="bench.json is damaged"):
        write_report(tmp_path)
