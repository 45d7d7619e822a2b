"""The report's CI math and tables on a synthetic run directory; suite and CLI validation."""

from __future__ import annotations

import csv
import json
import math

import pytest

from tokengym.benchmarks.report import write_report
from tokengym.benchmarks.stats import t_quantile_975
from tokengym.benchmarks.suites import get_suite
from tokengym.cli import main


def _write_run(out, task, agent, seed, reward, kl, trainable=True, gold=None):
    where = out / "runs" / task / agent / f"seed{seed}"
    where.mkdir(parents=True)
    metrics = {"reward_mean": reward, "kl_mean": kl, "ref_perplexity": 10.0 + seed,
               "distinct_1": 0.5, "distinct_2": 0.75, "mean_length": 12.0}
    if gold is not None:
        metrics["gold_reward_mean"] = gold
    (where / "eval.json").write_text(json.dumps({
        "task": task, "agent": agent, "seed": seed, "model": "m", "iterations": 2 if trainable else 0,
        "trainable": trainable, "tokens": 100 * (seed + 1) if trainable else 0,
        "wall_time_s": 2.0, "metrics": metrics}))
    if trainable:
        lines = [{"iteration": i, "reward_mean": reward * i / 2, "tokens_total": 50 * i}
                 for i in (1, 2)]
        (where / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


@pytest.fixture
def synthetic(tmp_path):
    for seed, reward in enumerate([0.1, 0.2, 0.6]):
        _write_run(tmp_path, "Length", "ppo", seed, reward, kl=4.0 * (seed + 1))
        _write_run(tmp_path, "Overoptimization", "ppo", seed, reward, kl=1.0, gold=reward / 2)
    _write_run(tmp_path, "Length", "sample", 0, 0.05, kl=0.0, trainable=False)
    return tmp_path


def test_report_ci_math_and_tables(synthetic):
    paths = write_report(synthetic)
    with paths["csv"].open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7
    assert [(r["task"], r["agent"], r["seed"]) for r in rows][:4] == [
        ("Length", "ppo", "0"), ("Length", "ppo", "1"), ("Length", "ppo", "2"),
        ("Length", "sample", "0")]  # no bench.json: tasks and agents sorted
    assert float(rows[1]["sqrt_kl"]) == pytest.approx(math.sqrt(8.0))

    md = paths["md"].read_text(encoding="utf-8")
    xs = [0.1, 0.2, 0.6]
    mean = sum(xs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / 2)
    half = t_quantile_975(2) * sd / math.sqrt(3)
    length = md.split("## Length")[1].split("##")[0]
    assert f"| ppo | 3 | {mean:.3f} ± {half:.3f} |" in length
    kl_half = t_quantile_975(2) * 4.0 / math.sqrt(3)  # KL 4, 8, 12: sd 4
    assert f"| 8.00 ± {kl_half:.2f} |" in length
    assert "| sample | 1 | 0.050 | 0.00 | 10.0 |" in length  # one seed: no interval
    assert "gold reward" not in length
    over = md.split("## Overoptimization")[1]
    assert "gold reward" in over and f"{mean / 2:.3f} ± {half / 2:.3f}" in over
    for name in ("learning_Length", "learning_Overoptimization", "frontier", "overoptimization"):
        assert paths[name].is_file()
    assert "Parallel" not in md  # no bench.json saying the runs were split

    (synthetic / "bench.json").write_text(json.dumps({"command": "tokengym bench", "shards": 2}))
    md = write_report(synthetic)["md"].read_text(encoding="utf-8")
    assert "- Parallel: 2 processes" in md and "split the runs" in md


def test_report_of_empty_dir_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="no finished run"):
        write_report(tmp_path)
    with pytest.raises(SystemExit, match="no finished run"):
        main(["bench", "--report", str(tmp_path)])


def test_suite_and_cli_validation(tmp_path):
    with pytest.raises(ValueError, match="unknown suite"):
        get_suite("huge")
    with pytest.raises(SystemExit, match="unknown task"):
        main(["bench", "--suite", "smoke", "--tasks", "Poetry", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown agent"):
        main(["bench", "--suite", "smoke", "--agents", "dqn", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="positive integer"):
        main(["bench", "--suite", "smoke", "--seeds", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--suite"):
        main(["bench"])
    for name in ("quick", "full"):
        get_suite(name).validate()
