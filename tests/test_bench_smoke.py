"""The smoke suite end to end on tiny-llama: runs, tables, plots, report regeneration, skipping,
and exact resume from a checkpoint."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os

import pytest
import torch

from tokengym.benchmarks.report import write_report
from tokengym.benchmarks.runner import BenchRunner, run_dir
from tokengym.benchmarks.suites import get_suite
from tokengym.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke"
    assert main(["bench", "--suite", "smoke", "--out", str(out)]) == 0
    return out


def test_smoke_suite_writes_every_run_table_and_plot(smoke_dir):
    suite = get_suite("smoke")
    with (smoke_dir / "results.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(suite.tasks) * len(suite.agents) * suite.seeds
    assert {(r["task"], r["agent"], r["seed"]) for r in rows} == {
        (t, a, str(k)) for t in suite.tasks for a in suite.agents for k in range(suite.seeds)}
    for r in rows:
        assert float(r["ref_perplexity"]) > 1 and 0 <= float(r["distinct_1"]) <= 1
        assert (r["gold_reward_mean"] != "") == (r["task"] == "Overoptimization")
        assert int(r["tokens"]) > 0  # training tokens, or the evaluation's for untrained agents
    bon = [r for r in rows if r["agent"] == "best-of-n"]
    for r in bon:  # the analytic bound, and the measured estimate under it
        metrics = json.loads((run_dir(smoke_dir, r["task"], "best-of-n", int(r["seed"]))
                              / "eval.json").read_text())["metrics"]
        assert metrics["kl_bound"] == pytest.approx(math.log(4) - 3 / 4)
        assert 0 <= float(r["kl_mean"]) <= metrics["kl_bound"] + 1e-9
    assert all(int(r["tokens"]) > int(s["tokens"]) for r, s in zip(
        bon, [r for r in rows if r["agent"] == "sample"]))  # N samples per prompt

    md = (smoke_dir / "RESULTS.md").read_text(encoding="utf-8")
    assert "| agent | seeds | eval reward |" in md and "KL to ref" in md and "±" in md
    assert "gold reward" in md and "tokens generated" in md and "wall time (s)" in md
    assert "--suite smoke" in md  # the command that made it
    for name in ("learning_Sentiment", "learning_Overoptimization", "frontier",
                 "overoptimization"):
        png = smoke_dir / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f"plots/{name}.png" in md

    ppo = run_dir(smoke_dir, "Overoptimization", "ppo", 0)
    records = [json.loads(line) for line in (ppo / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    assert records[1]["tokens_total"] == records[0]["tokens_total"] + records[1]["tokens"]
    assert records[1]["wall_time_s"] > records[0]["wall_time_s"] > 0
    evals = [json.loads(line) for line in (ppo / "evals.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in evals] == [0, 1, 2]  # before training, then eval_every=1
    assert all("gold_reward_mean" in e and "kl_mean" in e for e in evals)
    assert not (ppo / "checkpoints").exists()  # deleted once the run finished


def test_report_regenerates_identical_tables_from_logs(smoke_dir):
    md = (smoke_dir / "RESULTS.md").read_text(encoding="utf-8")
    table = (smoke_dir / "results.csv").read_text(encoding="utf-8")
    (smoke_dir / "RESULTS.md").unlink()
    (smoke_dir / "results.csv").unlink()
    (smoke_dir / "plots" / "frontier.png").unlink()
    assert main(["bench", "--report", str(smoke_dir)]) == 0
    assert (smoke_dir / "RESULTS.md").read_text(encoding="utf-8") == md
    assert (smoke_dir / "results.csv").read_text(encoding="utf-8") == table
    assert (smoke_dir / "plots" / "frontier.png").is_file()


def test_rerun_skips_finished_runs(smoke_dir, capsys):
    evals = sorted(smoke_dir.glob("runs/*/*/seed*/eval.json"))
    before = {p: p.stat().st_mtime_ns for p in evals}
    capsys.readouterr()
    assert main(["bench", "--suite", "smoke", "--out", str(smoke_dir)]) == 0
    assert f"0 run(s) done, {len(evals)} already finished" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in evals} == before


def test_unfinished_run_resumes_exactly_from_its_checkpoint(tmp_path):
    suite = dataclasses.replace(get_suite("smoke"), tasks=("Sentiment",), agents=("ppo",),
                                seeds=1, iterations=3, checkpoint_every=2)
    quiet = dict(log=lambda line: None)
    straight = BenchRunner(suite, tmp_path / "a", **quiet).run_one("Sentiment", "ppo", 0)

    # Run b stops after iteration 2 (its checkpoint), as if killed during iteration 3.
    short = dataclasses.replace(suite, iterations=2)
    BenchRunner(short, tmp_path / "b", keep_checkpoints=True, **quiet).run_one("Sentiment", "ppo", 0)
    where = run_dir(tmp_path / "b", "Sentiment", "ppo", 0)
    (where / "eval.json").unlink()
    with (where / "metrics.jsonl").open("a") as f:
        f.write('{"iteration": 3, "tokens_total": 1, "wall_time_s": 1}\n{"torn')  # lost work
    resumed = BenchRunner(suite, tmp_path / "b", **quiet).run_one("Sentiment", "ppo", 0)

    lines = (where / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    a = [json.loads(line) for line in
         (run_dir(tmp_path / "a", "Sentiment", "ppo", 0) / "metrics.jsonl").read_text().splitlines()]
    assert [r["tokens_total"] for r in records] == [r["tokens_total"] for r in a]
    assert records[-1]["reward_mean"] == pytest.approx(a[-1]["reward_mean"], abs=1e-6)
    assert resumed["metrics"]["reward_mean"] == pytest.approx(straight["metrics"]["reward_mean"],
                                                              abs=1e-6)
    assert resumed["iterations"] == 3


def test_shards_split_the_suite_between_runners(tmp_path, monkeypatch):
    done: list[tuple[int, tuple[str, str, int]]] = []

    def fake_run_one(self, task, agent, seed):  # records who ran what, then marks it finished
        done.append((self.shard[0], (task, agent, seed)))
        where = run_dir(self.out, task, agent, seed)
        where.mkdir(parents=True)
        (where / "eval.json").write_text("{}")

    monkeypatch.setattr(BenchRunner, "run_one", fake_run_one)
    suite, quiet = get_suite("smoke"), dict(log=lambda line: None)
    first = BenchRunner(suite, tmp_path, shard=(0, 2), **quiet)
    first.run_one("Sentiment", "sample", 1)  # finished earlier by someone: every shard skips it
    done.clear()
    grid = first.runs()
    assert grid[0] == ("Sentiment", "ppo", 0) and grid[-1] == ("Overoptimization", "sample", 1)
    assert [run[2] for run in grid] == sorted(run[2] for run in grid)  # seed by seed
    mine = 0 if grid.index(("Sentiment", "sample", 1)) % 2 == 0 else 1
    assert first.run_all() == {"ran": 6 - (mine == 0), "skipped": int(mine == 0)}
    assert BenchRunner(suite, tmp_path, shard=(1, 2), **quiet).run_all() == {
        "ran": 6 - (mine == 1), "skipped": int(mine == 1)}
    ran = [run for _, run in done]
    assert len(ran) == len(set(ran)) == len(first.runs()) - 1  # disjoint, and all of the rest
    assert {run for k, run in done if k == 0} == set(grid[0::2]) - {("Sentiment", "sample", 1)}
    assert json.loads((tmp_path / "bench.json").read_text())["shards"] == 2

    # --jobs hands out indices from a queue: a runner runs exactly those, in that order.
    done.clear()
    pulled = BenchRunner(suite, tmp_path / "pulled", processes=3, **quiet)
    assert pulled.run_all(iter([3, 0])) == {"ran": 2, "skipped": 0}
    assert [run for _, run in done] == [grid[3], grid[0]]
    assert json.loads((tmp_path / "pulled" / "bench.json").read_text())["shards"] == 3

    with pytest.raises(ValueError, match="shard"):
        BenchRunner(suite, tmp_path, shard=(2, 2))
    with pytest.raises(SystemExit):
        main(["bench", "--suite", "smoke", "--shard", "3/2", "--out", str(tmp_path)])


def test_jobs_split_the_runs_between_processes_with_the_same_results(tmp_path, capsys):
    args = ["--suite", "smoke", "--tasks", "Sentiment", "--agents", "sample", "best-of-n",
            "--seeds", "1"]
    assert main(["bench", *args, "--jobs", "2", "--out", str(tmp_path / "jobs")]) == 0
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert f"2 processes, {threads} thread(s) each" in capsys.readouterr().out
    bench = json.loads((tmp_path / "jobs" / "bench.json").read_text())
    assert bench["shards"] == 2 and f"({threads} thread(s) per process)" in bench["machine"]
    assert "--jobs" not in bench["command"]  # the runs are those of the one-process command
    assert bench["command"].count("--out") == 1 and "--command-argv" not in bench["command"]
    assert "- Parallel: 2 processes" in (tmp_path / "jobs" / "RESULTS.md").read_text()

    # The same runs in this process, with the same thread count, give the same numbers.
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert main(["bench", *args, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(before)
    for agent in ("sample", "best-of-n"):
        a, b = (json.loads((run_dir(tmp_path / d, "Sentiment", agent, 0) / "eval.json").read_text())
                for d in ("jobs", "one"))
        assert a["metrics"]["reward_mean"] == b["metrics"]["reward_mean"]
        assert a["metrics"]["kl_mean"] == b["metrics"]["kl_mean"]

    with pytest.raises(SystemExit, match="--jobs must be >= 1"):
        main(["bench", *args, "--jobs", "0", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="one at a time"):
        main(["bench", "--suite", "perf", "--jobs", "2", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="not both"):
        main(["bench", *args, "--jobs", "2", "--shard", "0/2", "--out", str(tmp_path / "x")])


def test_variants_and_token_budget_end_to_end(tmp_path):
    """Suite variants run under their labels with their agent and merged overrides (eval.json
    says which), the token budget ends training early, and best-of-n at two N is a frontier."""
    suite = dataclasses.replace(
        get_suite("smoke"), tasks=("Sentiment",), seeds=1, iterations=6, token_budget=40,
        agents=("ppo-b0.5", "best-of-n", "bon-2", "sample"),
        variants={"ppo-b0.5": ("ppo", {"beta": 0.5}),
                  "bon-2": ("best-of-n", {"samples_per_prompt": 2})})
    assert BenchRunner(suite, tmp_path, log=lambda line: None).run_all() == {"ran": 4, "skipped": 0}
    ppo = json.loads((run_dir(tmp_path, "Sentiment", "ppo-b0.5", 0) / "eval.json").read_text())
    assert ppo["agent"] == "ppo-b0.5" and ppo["algorithm"] == "ppo"
    assert ppo["overrides"] == {"seed": 0, "num_envs": 4, "epochs": 1, "num_minibatches": 2,
                                "lr": 1e-4, "beta": 0.5}
    assert ppo["token_budget"] == 40
    records = [json.loads(line) for line in
               (run_dir(tmp_path, "Sentiment", "ppo-b0.5", 0) / "metrics.jsonl").read_text()
               .splitlines()]
    assert ppo["iterations"] == len(records) < 6  # stopped by the budget, not by iterations
    assert records[-1]["tokens_total"] >= 40 > records[-2]["tokens_total"]
    bon = json.loads((run_dir(tmp_path, "Sentiment", "bon-2", 0) / "eval.json").read_text())
    assert bon["algorithm"] == "best-of-n" and bon["overrides"]["num_envs"] == 16
    assert bon["metrics"]["kl_bound"] == pytest.approx(math.log(2) - 1 / 2)
    assert 0 <= bon["metrics"]["kl_mean"] <= bon["metrics"]["kl_bound"] + 1e-9

    md = write_report(tmp_path, plots=False)["md"].read_text(encoding="utf-8")
    assert "| bon-2 | best-of-n | 1 |" in md
    assert "| best-of-n | bon-2, best-of-n (" in md  # a frontier of two N (KL grows with N)
