"""The report's CI math and tables on a synthetic run directory (paired differences, the IQM
aggregate and its bootstrap, reward at matched KL, the frontier plot); suite variants and their
overrides; suite and CLI validation."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest

from tokengym.benchmarks.comparisons import matched_kl
from tokengym.benchmarks.report import read_runs, write_report
from tokengym.benchmarks.runner import BenchRunner, _same_suite, resolve_run
from tokengym.benchmarks.stats import (
    interpolate,
    iqm,
    matched_grid,
    paired_difference,
    stratified_bootstrap_ci,
    t_quantile_975,
)
from tokengym.benchmarks.suites import TASKS, Suite, get_suite
from tokengym.cli import main


def _write_run(out, task, agent, seed, reward, kl, trainable=True, gold=None, algorithm=None):
    """An eval.json as the runner writes it; without ``algorithm`` as logs written before
    suite variants existed."""
    where = out / "runs" / task / agent / f"seed{seed}"
    where.mkdir(parents=True)
    metrics = {"reward_mean": reward, "kl_mean": kl, "ref_perplexity": 10.0 + seed,
               "distinct_1": 0.5, "distinct_2": 0.75, "mean_length": 12.0}
    if gold is not None:
        metrics["gold_reward_mean"] = gold
    data = {"task": task, "agent": agent, "seed": seed, "model": "m",
            "iterations": 2 if trainable else 0, "trainable": trainable,
            "tokens": 100 * (seed + 1) if trainable else 0, "wall_time_s": 2.0, "metrics": metrics}
    if algorithm is not None:
        data.update(algorithm=algorithm, overrides={"seed": seed})
    (where / "eval.json").write_text(json.dumps(data))
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
    assert all(r["algorithm"] == r["agent"] for r in rows)  # eval.json without "algorithm"

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
    # The new sections degrade gracefully on logs without variants or algorithm:
    assert "| agent | algorithm |" not in md  # no variants: the table as before
    assert "No algorithm ran at more than one KL value" in md
    assert "Left out: Overoptimization (its reward has no maximum)" in md
    assert paths["statistics"].is_file()

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


# -- suite variants --------------------------------------------------------------------------------
def _suite(**changes):
    base = Suite(name="t", model="tiny-llama", tasks=("Length",), agents=("ppo", "ppo-b0.1"),
                 seeds=2, iterations=3, num_envs=4, eval_episodes=5,
                 agent_overrides={"*": {"temperature": 0.9}, "ppo": {"lr": 2e-4, "epochs": 3},
                                  "best-of-n": {"samples_per_prompt": 3}},
                 variants={"ppo-b0.1": ("ppo", {"beta": 0.1, "epochs": 1}),
                           "bon-2": ("best-of-n", {"samples_per_prompt": 2})})
    return dataclasses.replace(base, **changes)


def test_variants_resolve_to_their_agent_with_merged_overrides(tmp_path):
    suite = _suite(agents=("ppo", "ppo-b0.1", "best-of-n", "bon-2", "sample")).validate()
    assert suite.resolve("ppo-b0.1") == ("ppo", {"beta": 0.1, "epochs": 1})
    assert suite.resolve("ppo") == ("ppo", {})
    # seed/num_envs, then "*", then the base agent's, then the variant's (later ones win)
    assert suite.overrides("ppo-b0.1", 7) == {"seed": 7, "num_envs": 4, "temperature": 0.9,
                                              "lr": 2e-4, "epochs": 1,
                                              "beta": 0.1}
    assert suite.overrides("ppo", 7) == {"seed": 7, "num_envs": 4, "temperature": 0.9,
                                         "lr": 2e-4, "epochs": 3}
    assert suite.overrides("sample", 1) == {"seed": 1, "num_envs": 4, "temperature": 0.9}
    assert resolve_run(suite, "ppo-b0.1", 1)[:2] == ("ppo", True)
    # inference-time agents are built on the eval env: eval_episodes x N rows
    assert resolve_run(suite, "bon-2", 0) == ("best-of-n", False, {
        "seed": 0, "num_envs": 10, "temperature": 0.9, "samples_per_prompt": 2})
    assert resolve_run(suite, "best-of-n", 0)[2]["num_envs"] == 15
    runner = BenchRunner(suite, tmp_path, log=lambda line: None)
    assert ("Length", "ppo-b0.1", 1) in runner.runs()  # run dirs are named by the label

    # bench.json round trip; an older bench.json without the new fields is the same suite
    as_json = json.loads(json.dumps(suite.to_dict()))
    assert Suite.from_dict(as_json) == suite
    plain = json.loads(json.dumps(_suite(variants={}).to_dict()))
    old = {k: v for k, v in plain.items() if k not in ("variants", "token_budget")}
    assert _same_suite(old, plain) and not _same_suite(old, as_json)


def test_unknown_labels_and_bad_variants_fail_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown agent 'ppo-x'.*variants: ppo-b0.1, bon-2"):
        _suite(agents=("ppo-x",)).validate()
    with pytest.raises(ValueError, match="variant 'v': unknown agent 'dqn'"):
        _suite(variants={"v": ("dqn", {})}).validate()
    with pytest.raises(ValueError, match="is a registry agent name"):
        _suite(variants={"rloo": ("ppo", {"beta": 0.1})}).validate()
    with pytest.raises(ValueError, match="names the run directories"):
        _suite(variants={"a/b": ("ppo", {})}).validate()
    with pytest.raises(ValueError, match=r"must be \(agent name"):
        _suite(variants={"v": "ppo"}).validate()
    with pytest.raises(ValueError, match="token_budget"):
        _suite(token_budget=-1).validate()
    with pytest.raises(ValueError, match="listed twice"):
        _suite(agents=("ppo", "ppo")).validate()
    # a config the agent refuses fails when the runner is built, before any run
    bad = _suite(variants={"ppo-b0.1": ("ppo", {"no_such_field": 1})})
    with pytest.raises(ValueError, match="agent 'ppo-b0.1' of the suite"):
        BenchRunner(bad, tmp_path)
    assert not (tmp_path / "bench.json").exists()


# -- the statistics ------------------------------------------------------------------------------
def test_iqm_and_its_stratified_bootstrap():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)  # drops 2 per end: (3+4+5+6)/4
    assert iqm([5, 1, 4, 2, 3]) == pytest.approx(3.0)  # floor(5/4) = 1 per end: (2+3+4)/3
    assert iqm([2.0, 4.0]) == pytest.approx(3.0)  # n < 4: the mean
    # Stratified: task A's seeds are 0, 0 and task B's 1, 1, so every resample pools two 0s and
    # two 1s and the IQM is always 0.5 (a pooled bootstrap would vary).
    assert stratified_bootstrap_ci([[0.0, 0.0], [1.0, 1.0]]) == (0.5, 0.5)
    # Two tasks of seeds (0, 1): K ones ~ Binomial(4, 1/2); IQM = 0 for K <= 1, 0.5 for K = 2,
    # 1 for K >= 3: probabilities 5/16, 6/16, 5/16, so the 95 % interval is [0, 1].
    seen = []

    def recorded(x, axis):
        values = iqm(x, axis=axis)
        seen.append(values)
        return values

    ci = stratified_bootstrap_ci([[0.0, 1.0], [1.0, 0.0]], recorded, reps=20000, seed=1)
    assert ci == (0.0, 1.0)
    freq = {v: float(np.mean(seen[0] == v)) for v in (0.0, 0.5, 1.0)}
    assert freq == pytest.approx({0.0: 5 / 16, 0.5: 6 / 16, 1.0: 5 / 16}, abs=0.015)
    assert stratified_bootstrap_ci([[0.1, 0.5, 0.2], [0.9, 0.4]], seed=3) == \
        stratified_bootstrap_ci([[0.1, 0.5, 0.2], [0.9, 0.4]], seed=3)  # deterministic
    assert all(math.isnan(v) for v in stratified_bootstrap_ci([[0.1], [0.2, 0.3]]))


def test_paired_difference_and_interpolation_by_hand():
    mean, half, n = paired_difference({0: 0.5, 1: 0.5, 2: 0.9, 3: 7.0}, {0: 0.2, 1: 0.3, 2: 0.4})
    assert n == 3 and mean == pytest.approx(1 / 3)  # seed 3 has no baseline: left out
    assert half == pytest.approx(4.303 * 0.152753 / math.sqrt(3), rel=1e-4)  # diffs .3 .2 .5
    assert interpolate([(3, 0.6), (1, 0.2), (5, 0.7)], 2.75) == pytest.approx(0.55)
    assert interpolate([(1, 0.2), (3, 0.6)], 1.0) == pytest.approx(0.2)
    assert math.isnan(interpolate([(1, 0.2), (3, 0.6)], 3.5))  # never extrapolated
    assert matched_grid([(1, 5), (2, 6)]) == ([2.75, 3.5, 4.25], True)
    assert matched_grid([(1, 2), (4, 6)]) == ([2.25, 3.5, 4.75], False)  # no overlap: union


@pytest.fixture
def variants_dir(tmp_path):
    """Length: ppo at three settings (KL 1, 3, 5), rloo at two (KL 2, 6), best-of-n and sample;
    Sentiment: frontiers that do not overlap. Seeds spread symmetrically around the means."""
    spread = (-1, 0, 1)
    length = {"ppo-lo": ("ppo", 1.0, 0.2), "ppo": ("ppo", 3.0, 0.6), "ppo-hi": ("ppo", 5.0, 0.7),
              "rloo-a": ("rloo", 2.0, 0.3), "rloo-b": ("rloo", 6.0, 0.9)}
    for agent, (algorithm, kl, reward) in length.items():
        for seed, d in enumerate(spread):
            _write_run(tmp_path, "Length", agent, seed, reward + 0.01 * d, kl + 0.1 * d,
                       algorithm=algorithm)
    for seed, (s, b) in enumerate([(0.2, 0.3), (0.3, 0.45), (0.4, 0.5)]):
        _write_run(tmp_path, "Length", "sample", seed, s, 0.0, trainable=False, algorithm="sample")
        if seed < 2:  # best-of-n has seeds 0 and 1 only
            _write_run(tmp_path, "Length", "best-of-n", seed, b, 0.64, trainable=False,
                       algorithm="best-of-n")
    sentiment = {"ppo-lo": ("ppo", 1.0, 0.1), "ppo": ("ppo", 2.0, 0.2),
                 "rloo-a": ("rloo", 4.0, 0.3), "rloo-b": ("rloo", 6.0, 0.5)}
    for agent, (algorithm, kl, reward) in sentiment.items():
        for seed, d in enumerate(spread):
            _write_run(tmp_path, "Sentiment", agent, seed, reward + 0.01 * d, kl + 0.1 * d,
                       algorithm=algorithm)
    (tmp_path / "bench.json").write_text(json.dumps({"suite": {
        "name": "v", "model": "m", "tasks": ["Length", "Sentiment"],
        "agents": ["ppo-lo", "ppo", "ppo-hi", "rloo-a", "rloo-b", "best-of-n", "sample"],
        "seeds": 3, "iterations": 2, "num_envs": 4, "eval_episodes": 8, "eval_seed": 10000,
        "token_budget": 4096,
        "variants": {"ppo-lo": ["ppo", {"beta": 0.5}], "ppo-hi": ["ppo", {"beta": 0.01}],
                     "rloo-a": ["rloo", {"beta": 0.1}], "rloo-b": ["rloo", {"beta": 0.01}]}}}))
    return tmp_path


def test_matched_kl_by_hand_and_not_covered(variants_dir):
    rows = read_runs(variants_dir)
    agents = ["ppo-lo", "ppo", "ppo-hi", "rloo-a", "rloo-b", "best-of-n", "sample"]
    m = matched_kl(rows, "Length", agents)
    assert m["overlap"] and m["kls"] == pytest.approx([2.75, 3.5, 4.25])  # inside [2, 5]
    ppo, rloo = m["frontiers"]
    assert ppo["algorithm"] == "ppo" and ppo["agents"] == ["ppo-lo", "ppo", "ppo-hi"]
    # ppo: (1, .2) (3, .6) (5, .7); rloo: (2, .3) (6, .9)
    assert [v[0] for v in ppo["values"]] == pytest.approx([0.55, 0.625, 0.6625])
    assert [v[0] for v in rloo["values"]] == pytest.approx([0.4125, 0.525, 0.6375])
    for estimate, low, high, covered in ppo["values"] + rloo["values"]:
        assert low <= estimate <= high and covered == 1.0
    assert {s["agent"] for s in m["singles"]} == {"best-of-n", "sample"}

    s = matched_kl(rows, "Sentiment", agents)  # ppo covers [1, 2], rloo [4, 6]: no overlap
    assert not s["overlap"] and s["kls"] == pytest.approx([2.25, 3.5, 4.75])
    ppo, rloo = s["frontiers"]
    assert all(math.isnan(v[0]) for v in ppo["values"])
    assert math.isnan(rloo["values"][1][0]) and rloo["values"][2][0] == pytest.approx(0.375)


def test_report_with_variants_paired_aggregate_and_frontier(variants_dir):
    paths = write_report(variants_dir)
    md = paths["md"].read_text(encoding="utf-8")
    assert "| agent | algorithm | seeds |" in md and "| ppo-lo | ppo | 3 |" in md
    assert "budget of 4096 sampled training tokens" in md
    assert "`ppo-lo` = ppo with beta=0.5" in md

    # paired against sample, Length: ppo's diffs 0.59-0.2, 0.6-0.3, 0.61-0.4 = .39 .30 .21
    paired = md.split("## Paired differences")[1].split("\n## ")[0]
    half = t_quantile_975(2) * 0.09 / math.sqrt(3)
    assert f"| ppo | +0.300 ± {half:.3f} |" in paired
    # best-of-n: seeds 0 and 1 only: diffs .1 .15 -> mean .125, half 12.706 * .025 = .318: †
    assert "+0.125 ± 0.318 † (n=2)" in paired
    assert "| sample |" not in paired

    agg = md.split("## Aggregate over tasks")[1].split("\n## ")[0]
    # Length only (Sentiment has no sample runs): normalised = (r - 0.3) / (1 - 0.3)
    assert "Left out: Sentiment (no `sample` runs)" in agg
    x = [(r - 0.3) / 0.7 for r in (0.59, 0.6, 0.61)]
    assert iqm(x) == pytest.approx(0.3 / 0.7)  # 3 values: none dropped, their mean
    assert "| ppo | 1 | 3 | 0.429 [" in agg
    assert "| best-of-n | 1 | 2 | 0.107 [" in agg  # ((.3-.3) + (.45-.3)) / 2 / .7

    matched = md.split("## Reward at matched KL")[1].split("\n## ")[0]
    assert "KL values (nats): 2.75, 3.50, 4.25" in matched
    assert "| ppo | ppo-lo, ppo, ppo-hi (1.00–5.00) | 0.550 [" in matched
    assert "(the frontiers share no KL range: union)" in matched
    assert "| ppo | ppo-lo, ppo (1.00–2.00) | not covered | not covered | not covered |" in matched
    assert "Single KL values: best-of-n (KL 0.64, reward 0.375); sample (KL 0.00" in matched

    evidence = md.split("## Where the evidence is not enough")[1].split("\n## ")[0]
    assert "best-of-n on Length" in evidence and "includes 0" in evidence
    assert "Not covered" in evidence and "ppo on Sentiment at KL 2.25" in evidence

    with paths["statistics"].open(encoding="utf-8") as f:
        stats = list(csv.DictReader(f))
    at_kl = [r for r in stats if r["statistic"] == "reward_at_kl" and r["task"] == "Length"
             and r["algorithm"] == "rloo"]
    assert [float(r["estimate"]) for r in at_kl] == pytest.approx([0.4125, 0.525, 0.6375])
    assert any(r["note"] == "not covered" for r in stats)
    with paths["csv"].open(encoding="utf-8") as f:
        assert {r["agent"]: r["algorithm"] for r in csv.DictReader(f)}["ppo-hi"] == "ppo"
    assert paths["frontier"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_sample_says_so(tmp_path):
    for seed in (0, 1):
        _write_run(tmp_path, "Length", "ppo", seed, 0.5 + 0.1 * seed, 1.0, algorithm="ppo")
    md = write_report(tmp_path, plots=False)["md"].read_text(encoding="utf-8")
    assert "The suite has no `sample` runs, so there are no paired differences" in md
    assert "No `sample` runs: the normalisation needs" in md
    assert "Without `sample` runs there is no paired comparison" in md


def test_task_max_rewards():
    assert {t: info.max_reward for t, info in TASKS.items()} == {
        "Sentiment": 1.0, "Keywords": 1.0, "Length": 1.0, "Arithmetic": 1.0,
        "Overoptimization": None, "Calculator": 1.0, "GuessNumber": 1.0, "Support": 1.0}
