"""The comparison protocol's machinery: suite cells (first seed, per-label tasks), the
learning-rate sweep's choice, and diverged runs recorded as results."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import pytest

from tokengym.bench import add_arguments, build_suite
from tokengym.benchmarks.report import write_report
from tokengym.benchmarks.runner import BenchRunner
from tokengym.benchmarks.suites import SUITES, Suite
from tokengym.benchmarks.sweep import choose, sweep_runs, write_sweep
from tokengym.checks import NonFiniteError


def _suite(**changes) -> Suite:
    base = Suite(name="t", model="tiny-llama", tasks=("Sentiment", "Length"),
                 agents=("ppo", "ppo-b0.2", "sample"), seeds=2, iterations=2, num_envs=4,
                 eval_episodes=4, device="cpu", variants={"ppo-b0.2": ("ppo", {"beta": 0.2})},
                 agent_tasks={"ppo-b0.2": ("Sentiment",)},
                 env_kwargs={"*": {"max_new_tokens": 4}})
    return dataclasses.replace(base, **changes).validate()


def test_cells_follow_first_seed_and_agent_tasks():
    cells = _suite(first_seed=100).cells()
    assert cells == [(t, a, k) for k in (100, 101) for t in ("Sentiment", "Length")
                     for a in ("ppo", "ppo-b0.2", "sample")
                     if not (a == "ppo-b0.2" and t == "Length")]
    with pytest.raises(ValueError, match="agent_tasks names 'rloo'"):
        _suite(agent_tasks={"rloo": ("Sentiment",)})
    with pytest.raises(ValueError, match=r"agent_tasks\['ppo-b0.2'\] must list tasks"):
        _suite(agent_tasks={"ppo-b0.2": ("Arithmetic",)})
    with pytest.raises(ValueError, match="first_seed"):
        _suite(first_seed=-1)


def test_shipped_suites_hold_to_the_protocol():
    quick, tune = SUITES["quick"], SUITES["tune"]
    trainable = ("ppo", "reinforce", "rloo", "grpo")
    assert set(trainable) <= set(quick.agents) and {"sample", "best-of-n"} <= set(quick.agents)
    # the same sampled-token budget for every trainable run, >= 1,000 episodes' worth
    tokens = quick.task_env_kwargs("Sentiment")["max_new_tokens"]
    assert quick.token_budget >= 1000 * tokens and quick.iterations * quick.num_envs >= 1000
    # every trainable agent at >= 3 betas on the frontier's task
    for agent in trainable:
        betas = {quick.overrides(label, 0).get("beta", 0.05) for label in quick.agents
                 if quick.algorithm(label) == agent
                 and "Sentiment" in quick.agent_tasks.get(label, quick.tasks)}
        assert len(betas) >= 3, (agent, betas)
    # PPO, sample and best-of-n on every task (PPO against sampling is paired per task and seed)
    for label in ("ppo", "sample", "best-of-n"):
        assert {t for t, a, _ in quick.cells() if a == label} == set(quick.tasks), label
    # tuning happens on seeds no reported cell uses, at quick's budget
    reported = {k for _, _, k in quick.cells()}
    assert not reported & {k for _, _, k in tune.cells()}
    assert tune.token_budget == quick.token_budget


def _quick(*argv: str) -> Suite:
    parser = argparse.ArgumentParser(prog="tokengym bench")
    add_arguments(parser, "bench")
    return build_suite(parser.parse_args(["--suite", "quick", *argv]))


def test_cli_subsets_keep_agent_tasks_consistent():
    suite = _quick("--agents", "ppo", "ppo-b0.2", "--tasks", "Length", "Sentiment")
    assert suite.agent_tasks == {"ppo-b0.2": ("Sentiment",)}
    assert not [c for c in _quick("--tasks", "Length").cells() if c[1] == "ppo-b0.2"]


def _write_run(root, agent, lr, beta, reward, kl, diverged=None):
    where = root / "runs" / "Sentiment" / agent / "seed100"
    where.mkdir(parents=True)
    data = {"task": "Sentiment", "agent": agent, "algorithm": agent.split("-")[0], "seed": 100,
            "trainable": True, "config": {"lr": lr, "beta": beta},
            "metrics": {} if diverged else {"reward_mean": reward, "kl_mean": kl,
                                            "ref_perplexity": 30.0}}
    if diverged:
        data["diverged"] = diverged
    (where / "eval.json").write_text(json.dumps(data))
    rows = [{"iteration": i, "reward_mean": reward / 2} for i in range(1, 11)]
    (where / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_sweep_picks_the_best_kl_regularised_reward(tmp_path):
    # ppo: 1e-4 has the highest reward but pays for it in KL; 3e-5 wins reward - beta * KL
    _write_run(tmp_path, "ppo-lr1e-05", 1e-5, 0.05, 0.20, 1.0)
    _write_run(tmp_path, "ppo-lr3e-05", 3e-5, 0.05, 0.50, 4.0)   # 0.30
    _write_run(tmp_path, "ppo-lr0.0001", 1e-4, 0.05, 0.70, 10.0)  # 0.20
    # rloo: the largest lr diverged and cannot be chosen; a tie goes to the smaller lr
    _write_run(tmp_path, "rloo-lr1e-05", 1e-5, 0.05, 0.30, 2.0)   # 0.20
    _write_run(tmp_path, "rloo-lr3e-05", 3e-5, 0.05, 0.35, 3.0)   # 0.20
    _write_run(tmp_path, "rloo-lr0.0001", 1e-4, 0.05, 0, 0, diverged="non-finite gradient")
    rows = sweep_runs(tmp_path)
    assert [r["lr"] for r in rows] == [1e-5, 3e-5, 1e-4] * 2
    assert math.isclose(rows[1]["objective"], 0.30) and rows[1]["train_reward_late"] == 0.25
    assert choose(rows) == {"ppo": 3e-5, "rloo": 1e-5}
    text, _ = write_sweep(tmp_path)
    assert "| rloo | 0.0001 | 0.05 | diverged |" in text and "**3e-05**" in text
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["chosen"] == {"ppo": 3e-5, "rloo": 1e-5}


def test_a_diverged_run_is_recorded_and_not_rerun(tmp_path, monkeypatch):
    from tokengym.agents.base import TrainableAgent

    def boom(self):
        raise NonFiniteError("non-finite gradient norm (nan) in iteration 1")

    monkeypatch.setattr(TrainableAgent, "train_iteration", boom)
    suite = _suite(tasks=("Sentiment",), agents=("ppo", "sample"), seeds=1, agent_tasks={},
                   variants={})
    logs: list[str] = []
    runner = BenchRunner(suite, tmp_path, command="test", log=logs.append)
    assert runner.run_all() == {"ran": 2, "skipped": 0}
    data = json.loads((tmp_path / "runs/Sentiment/ppo/seed0/eval.json").read_text())
    assert data["diverged"].startswith("non-finite gradient") and data["metrics"] == {}
    assert data["config"]["beta"] == 0.05 and any("diverged" in line for line in logs)
    # the untrained policy is unaffected, and a rerun skips the diverged run
    sample = json.loads((tmp_path / "runs/Sentiment/sample/seed0/eval.json").read_text())
    assert "diverged" not in sample and math.isfinite(sample["metrics"]["reward_mean"])
    assert BenchRunner(suite, tmp_path, command="test", log=logs.append).run_all() == {
        "ran": 0, "skipped": 2}
    # the report shows it as diverged and keeps it out of every mean
    write_report(tmp_path, plots=False)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "- Runs: 2 of 2 finished (seeds 0); diverged (a NaN or inf stopped them" in text
    assert "| ppo | 0 (+1 diverged) | diverged |" in text
