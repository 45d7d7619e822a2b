"""How the agents of a benchmark directory compare, from its run rows alone
(:func:`~tokengym.benchmarks.report.read_runs`): the numbers behind ``statistics.csv`` and the
comparison sections of ``RESULTS.md`` (written by
:mod:`~tokengym.benchmarks.comparisons_markdown`).

- paired differences of eval reward against ``sample`` on the same seeds (:func:`paired_rows`);
- an aggregate over tasks: the interquartile mean of normalised reward with a stratified
  bootstrap interval (:func:`aggregate_rows`);
- reward at matched KL along each algorithm's frontier of variants (:func:`matched_kl`).

:func:`statistics` computes all three; :func:`statistics_rows` lays them out in long form, one
row per estimate (columns :data:`STAT_COLUMNS`). Bootstraps use fixed seeds, so the same logs
give the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tokengym.benchmarks.stats import (
    aggregate,
    bootstrap_interpolated,
    ci_includes_zero,
    interpolate,
    iqm,
    matched_grid,
    normalised,
    paired_difference,
    stratified_bootstrap_ci,
)
from tokengym.benchmarks.suites import TASKS

BASELINE = "sample"  # the untrained policy: paired differences and normalisation are against it
BOOTSTRAP_REPS = 2000


def _runs(rows: Sequence[dict[str, Any]], task: str, agent: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["task"] == task and r["agent"] == agent]


def _by_seed(rows: Sequence[dict[str, Any]], key: str = "reward_mean") -> dict[int, float]:
    return {int(r["seed"]): float(r[key]) for r in rows}


def _finite(value: Any) -> bool:
    return value is not None and not math.isnan(float(value))


def paired_rows(rows: Sequence[dict[str, Any]], tasks: Sequence[str], agents: Sequence[str],
                baseline: str = BASELINE) -> list[dict[str, Any]]:
    """Per task x agent (other than ``baseline``, on tasks where ``baseline`` ran): the paired
    difference of eval reward, ``reward_mean(agent, k) - reward_mean(baseline, k)`` over the
    seeds ``k`` both have (same seed, same eval prompts); mean, 95 % CI half-width (Student's
    t over the differences), n, and whether the CI includes 0."""
    out = []
    for task in tasks:
        base = _by_seed(_runs(rows, task, baseline))
        if not base:
            continue
        for agent in agents:
            mine = _runs(rows, task, agent)
            if agent == baseline or not mine:
                continue
            mean, half, n = paired_difference(_by_seed(mine), base)
            out.append({"task": task, "agent": agent, "algorithm": mine[0]["algorithm"],
                        "mean": mean, "half": half, "n": n,
                        "includes_zero": ci_includes_zero(mean, half)})
    return out


def normalisers(rows: Sequence[dict[str, Any]], tasks: Sequence[str], baseline: str = BASELINE
                ) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """Per task of the aggregate, ``(baseline mean reward, task max reward)``; and why each
    other task is left out. A task needs a known ``TaskInfo.max_reward``, ``baseline`` runs and
    a baseline below the maximum."""
    norms, left_out = {}, []
    for task in tasks:
        best = TASKS[task].max_reward if task in TASKS else None
        base, _, n = aggregate(_runs(rows, task, baseline), "reward_mean")
        if best is None:
            left_out.append(f"{task} (its reward has no maximum)")
        elif n == 0:
            left_out.append(f"{task} (no `{baseline}` runs)")
        elif not base < best:
            left_out.append(f"{task} (`{baseline}` already at the maximum reward)")
        else:
            norms[task] = (base, float(best))
    return norms, left_out


def aggregate_rows(rows: Sequence[dict[str, Any]], tasks: Sequence[str], agents: Sequence[str],
                   baseline: str = BASELINE) -> tuple[list[dict[str, Any]], list[str]]:
    """Per agent, the interquartile mean (IQM) of its normalised eval rewards over every
    (task, seed) run of the aggregate's tasks (:func:`normalisers`), with a 95 % stratified
    bootstrap interval (seeds resampled within each task, :data:`BOOTSTRAP_REPS` resamples,
    fixed seed) and the plain mean; and the notes of :func:`normalisers`."""
    norms, left_out = normalisers(rows, tasks, baseline)
    out = []
    for agent in agents:
        per_task = {}
        for task, (base, best) in norms.items():
            scores = [normalised(float(r["reward_mean"]), base, best)
                      for r in _runs(rows, task, agent) if _finite(r["reward_mean"])]
            if scores:
                per_task[task] = scores
        if not per_task:
            continue
        pooled = [x for scores in per_task.values() for x in scores]
        lo, hi = stratified_bootstrap_ci(list(per_task.values()), reps=BOOTSTRAP_REPS, seed=0)
        algorithm = next(r["algorithm"] for r in rows if r["agent"] == agent)
        out.append({"agent": agent, "algorithm": algorithm, "tasks": len(per_task),
                    "of_tasks": len(norms), "n": len(pooled), "iqm": float(iqm(pooled)),
                    "low": lo, "high": hi, "mean": sum(pooled) / len(pooled)})
    return out, left_out


def matched_kl(rows: Sequence[dict[str, Any]], task: str, agents: Sequence[str],
               count: int = 3) -> dict[str, Any]:
    """Reward at matched KL on ``task``.

    An algorithm with runs at two or more KL values (its variants, each the mean over seeds
    of eval KL and eval reward) has a *frontier*: those points sorted by KL, joined by straight
    lines. The KL values compared are ``count`` values evenly spaced strictly inside the KL
    range every frontier covers (:func:`~tokengym.benchmarks.stats.matched_grid`; over the
    union when they share none). Each frontier's reward there is interpolated, with a
    percentile bootstrap interval over seeds
    (:func:`~tokengym.benchmarks.stats.bootstrap_interpolated`); NaN = not covered.

    Returns ``{"kls", "overlap", "frontiers": [{"algorithm", "agents", "points", "values":
    [(estimate, low, high, covered fraction), ...]}], "singles": [{"agent", "algorithm", "kl",
    "reward"}]}``: singles are the agents of algorithms run at one KL value only (best-of-n,
    sample, greedy, or a trainable agent without variants).
    """
    groups: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {}
    for agent in agents:
        mine = [r for r in _runs(rows, task, agent)
                if _finite(r["kl_mean"]) and _finite(r["reward_mean"])]
        if mine:
            groups.setdefault(mine[0]["algorithm"], []).append((agent, mine))
    frontiers, singles = [], []
    for algorithm, members in groups.items():
        points = [(aggregate(m, "kl_mean")[0], aggregate(m, "reward_mean")[0]) for _, m in members]
        if len({kl for kl, _ in points}) >= 2:
            order = sorted(range(len(members)), key=lambda i: points[i][0])
            frontiers.append({"algorithm": algorithm,
                              "agents": [members[i][0] for i in order],
                              "points": [points[i] for i in order],
                              "runs": [members[i][1] for i in order]})
        else:
            singles += [{"agent": a, "algorithm": algorithm, "kl": kl, "reward": reward}
                        for (a, _), (kl, reward) in zip(members, points)]
    kls, overlap = matched_grid([(f["points"][0][0], f["points"][-1][0]) for f in frontiers],
                                count)
    for f in frontiers:
        seeds = [([float(r["kl_mean"]) for r in m], [float(r["reward_mean"]) for r in m])
                 for m in f.pop("runs")]
        f["values"] = []
        for x in kls:
            estimate = interpolate(f["points"], x)
            low, high, covered = ((math.nan,) * 3 if math.isnan(estimate) else
                                  bootstrap_interpolated(seeds, x, reps=BOOTSTRAP_REPS, seed=0))
            f["values"].append((estimate, low, high, covered))
    return {"kls": kls, "overlap": overlap, "frontiers": frontiers, "singles": singles}


def statistics(rows: Sequence[dict[str, Any]], tasks: Sequence[str], agents: Sequence[str]
               ) -> dict[str, Any]:
    """Every statistic of the report: ``paired``, ``aggregate``, ``left_out``, ``matched``."""
    present = [t for t in tasks if any(r["task"] == t for r in rows)]
    agg, left_out = aggregate_rows(rows, present, agents)
    return {"paired": paired_rows(rows, present, agents), "aggregate": agg, "left_out": left_out,
            "matched": {t: matched_kl(rows, t, agents) for t in present}}


# -- statistics.csv ------------------------------------------------------------------------------
STAT_COLUMNS = ("statistic", "task", "agent", "algorithm", "kl", "estimate", "ci_low", "ci_high",
                "n", "note")


def statistics_rows(paired: Sequence[dict[str, Any]], agg: Sequence[dict[str, Any]],
                    matched: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``statistics.csv`` (see :data:`STAT_COLUMNS`)."""
    out: list[dict[str, Any]] = []
    for p in paired:
        out.append({"statistic": f"reward_minus_{BASELINE}", "task": p["task"],
                    "agent": p["agent"], "algorithm": p["algorithm"], "estimate": p["mean"],
                    "ci_low": p["mean"] - p["half"], "ci_high": p["mean"] + p["half"],
                    "n": p["n"], "note": "CI includes 0" if p["includes_zero"] else
                    ("no CI (n < 2)" if math.isnan(p["half"]) else "")})
    for a in agg:
        out.append({"statistic": "iqm_normalised_reward", "task": "*", "agent": a["agent"],
                    "algorithm": a["algorithm"], "estimate": a["iqm"], "ci_low": a["low"],
                    "ci_high": a["high"], "n": a["n"],
                    "note": f"{a['tasks']} of {a['of_tasks']} tasks; mean {a['mean']:.4f}"})
    for task, m in matched.items():
        for f in m["frontiers"]:
            for x, (estimate, low, high, covered) in zip(m["kls"], f["values"]):
                note = ("not covered" if math.isnan(estimate) else
                        "" if math.isnan(covered) or covered >= 0.95 else
                        f"CI from {covered:.0%} of resamples")
                out.append({"statistic": "reward_at_kl", "task": task, "agent": " ".join(f["agents"]),
                            "algorithm": f["algorithm"], "kl": x, "estimate": estimate,
                            "ci_low": low, "ci_high": high, "n": len(f["agents"]), "note": note})
    return out
