"""``tokengym bench --suite perf``: each speed benchmark in a subprocess, collected in PERF.md."""

from __future__ import annotations

import pytest

import tokengym.benchmarks.perf as perf
from tokengym.cli import main


def test_perf_collects_each_benchmark_output_and_skips_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(perf, "BENCHMARKS", (
        ("Zen", "this", "--model"),  # any module that prints: stands in for a benchmark
        ("Absent", "tokengym.benchmarks.no_such_benchmark", "--model"),
    ))
    assert main(["bench", "--suite", "perf", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "PERF.md").read_text(encoding="utf-8")
    assert "## Zen" in text and "Beautiful is better than ugly." in text
    assert "`python -m this` (exit 0," in text
    assert "Absent" not in text


@pytest.mark.slow
def test_perf_suite_runs_the_real_benchmarks_on_tiny_llama(tmp_path):
    assert main(["bench", "--suite", "perf", "--model", "tiny-llama", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "PERF.md").read_text(encoding="utf-8")
    for title, _, _ in perf.BENCHMARKS[:3]:
        assert f"## {title}" in text
    assert "exit 0" in text and "timed out" not in text
