"""``results.csv``, ``statistics.csv`` and ``RESULTS.md`` of a benchmark directory, from its
run logs alone.

Reads every ``runs/<task>/<agent>/seed<k>/eval.json`` (and ``bench.json`` for the header) and
writes one CSV row per run and, in ``RESULTS.md``:

- per task, a table of mean ± 95 % CI over seeds (Student's t,
  :func:`~tokengym.benchmarks.stats.mean_ci95`) per agent (run label) at its suite settings;
- paired differences of eval reward against ``sample`` on the same seeds (:func:`paired_rows`);
- an aggregate over tasks: the interquartile mean of normalised reward with a stratified
  bootstrap interval (:func:`aggregate_rows`);
- reward at matched KL along each algorithm's frontier of variants (:func:`matched_kl`);
- a paragraph, generated from these numbers, on where the evidence is not enough.

``statistics.csv`` holds the last three in long form. ``<agent>`` is a run label (an agent, or a
suite variant of one); its registry name is eval.json's ``algorithm`` (the label itself in logs
written before variants existed). Nothing is re-run, so ``tokengym bench --report DIR``
regenerates the same tables from the same logs (bootstraps use fixed seeds).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokengym.benchmarks.plots import make_plots
from tokengym.benchmarks.stats import (
    aggregate,
    bootstrap_interpolated,
    ci_includes_zero,
    format_ci,
    interpolate,
    iqm,
    matched_grid,
    normalised,
    paired_difference,
    stratified_bootstrap_ci,
    t_quantile_975,
)
from tokengym.benchmarks.suites import TASKS
from tokengym.fileio import atomic_write_text

BASELINE = "sample"  # the untrained policy: paired differences and normalisation are against it
MARK_ZERO = "†"  # a paired difference whose 95 % CI includes 0
MARK_NO_CI = "‡"  # fewer than 2 paired seeds: no interval
BOOTSTRAP_REPS = 2000

# results.csv columns after the identifying ones; the metric keys come from eval.json.
METRICS = ("reward_mean", "gold_reward_mean", "kl_mean", "sqrt_kl", "ref_perplexity",
           "distinct_1", "distinct_2", "mean_length", "tokens", "wall_time_s")
ID_COLUMNS = ("task", "agent", "algorithm", "seed", "model", "iterations", "trainable")

# RESULTS.md columns: (metric key, header, digits).
TABLE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("reward_mean", "eval reward", 3),
    ("gold_reward_mean", "gold reward", 3),
    ("kl_mean", "KL to ref (nats)", 2),
    ("ref_perplexity", "ref perplexity", 1),
    ("distinct_1", "distinct-1", 3),
    ("distinct_2", "distinct-2", 3),
    ("mean_length", "length (tokens)", 1),
    ("wall_time_s", "wall time (s)", 1),
    ("tokens", "tokens generated", 0),
)


def read_runs(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One flat row per finished run (``eval.json``), in suite order (tasks, agents, seed)."""
    out = Path(out)
    rows = []
    for path in (out / "runs").glob("*/*/seed*/eval.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        metrics = data.get("metrics", {})
        row = {k: data.get(k) for k in ID_COLUMNS}
        row["algorithm"] = data.get("algorithm") or data.get("agent")  # older logs: the agent
        row.update({k: metrics.get(k, math.nan) for k in METRICS})
        kl = metrics.get("kl_mean", math.nan)
        row["sqrt_kl"] = math.sqrt(max(kl, 0.0)) if not math.isnan(kl) else math.nan
        row["tokens"], row["wall_time_s"] = data.get("tokens", 0), data.get("wall_time_s", math.nan)
        rows.append(row)
    tasks, agents = suite_order(out, rows)
    rows.sort(key=lambda r: (tasks.index(r["task"]), agents.index(r["agent"]), r["seed"]))
    return rows


def read_bench(out: str | os.PathLike[str]) -> dict[str, Any]:
    """``bench.json`` (suite, command, machine, date), or ``{}`` when missing."""
    path = Path(out) / "bench.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def suite_order(out: str | os.PathLike[str], rows: Sequence[dict[str, Any]]
                ) -> tuple[list[str], list[str]]:
    """Tasks and agents in the suite's order, then any others found in the runs, sorted."""
    suite = read_bench(out).get("suite", {})
    tasks = list(suite.get("tasks", []))
    agents = list(suite.get("agents", []))
    tasks += sorted({r["task"] for r in rows} - set(tasks))
    agents += sorted({r["agent"] for r in rows} - set(agents))
    return tasks, agents


def write_csv(rows: Sequence[dict[str, Any]], path: Path,
              fieldnames: Sequence[str] = (*ID_COLUMNS, *METRICS)) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                         for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())


def has_variants(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether any run's label differs from its algorithm (a suite variant)."""
    return any(r["agent"] != r["algorithm"] for r in rows)


def task_table(rows: Sequence[dict[str, Any]], agents: Sequence[str]) -> str:
    """The Markdown table of one task: one line per agent, mean ± CI per column (with an
    algorithm column when some agents are variants)."""
    columns = [c for c in TABLE_COLUMNS
               if c[0] != "gold_reward_mean" or aggregate(rows, c[0])[2] > 0]
    algo = has_variants(rows)
    lines = ["| agent | " + ("algorithm | " if algo else "") + "seeds | "
             + " | ".join(h for _, h, _ in columns) + " |",
             "|---|" + ("---|" if algo else "") + "---:|" + "---:|" * len(columns)]
    for agent in agents:
        mine = [r for r in rows if r["agent"] == agent]
        if not mine:
            continue
        cells = [format_ci(*aggregate(mine, key)[:2], digits=d) for key, _, d in columns]
        lines.append(f"| {agent} | " + (f"{mine[0]['algorithm']} | " if algo else "")
                     + f"{len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- statistics over runs ------------------------------------------------------------------------
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


STAT_COLUMNS = ("statistic", "task", "agent", "algorithm", "kl", "estimate", "ci_low", "ci_high",
                "n", "note")


# -- RESULTS.md sections -------------------------------------------------------------------------
def _signed_ci(mean: float, half: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "–"
    text = f"{round(mean, digits) + 0.0:+.{digits}f}"  # no "-0.000"
    return text if math.isnan(half) else f"{text} ± {half:.{digits}f}"


def paired_section(paired: Sequence[dict[str, Any]], tasks: Sequence[str],
                   agents: Sequence[str], has_baseline: bool) -> list[str]:
    lines = [f"## Paired differences against `{BASELINE}`", ""]
    if not has_baseline:
        return lines + [f"The suite has no `{BASELINE}` runs, so there are no paired differences "
                        "against the untrained policy.", ""]
    cols = [t for t in tasks if any(p["task"] == t for p in paired)]
    nmax = max((p["n"] for p in paired), default=0)
    lines += [f"Eval reward of each agent minus `{BASELINE}`'s on the same seed (the same eval "
              "prompts: eval seed + k for every agent), mean ± 95 % CI over the seeds both have "
              f"(Student's t over the differences). {MARK_ZERO}: the CI includes 0 (no "
              f"evidence of a difference); {MARK_NO_CI}: fewer than 2 paired seeds, no "
              f"interval; (n=...) when fewer than {nmax} seeds are paired.", "",
              "| agent | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for agent in agents:
        mine = {p["task"]: p for p in paired if p["agent"] == agent}
        if not mine:
            continue
        cells = []
        for task in cols:
            p = mine.get(task)
            if p is None:
                cells.append("–")
                continue
            cell = _signed_ci(p["mean"], p["half"])
            if p["includes_zero"]:
                cell += f" {MARK_ZERO}"
            elif math.isnan(p["half"]):
                cell += f" {MARK_NO_CI}"
            if p["n"] < nmax:
                cell += f" (n={p['n']})"
            cells.append(cell)
        lines.append(f"| {agent} | " + " | ".join(cells) + " |")
    return lines + [""]


def aggregate_section(agg: Sequence[dict[str, Any]], left_out: Sequence[str],
                      has_baseline: bool) -> list[str]:
    lines = ["## Aggregate over tasks (IQM of normalised reward)", ""]
    if not has_baseline:
        return lines + [f"No `{BASELINE}` runs: the normalisation needs the untrained policy's "
                        "reward, so there is no aggregate.", ""]
    lines.append(
        "Each run's eval reward is normalised per task, (reward − mean reward of "
        f"`{BASELINE}` on the task) / (the task's maximum reward − that mean): 0 is the "
        "untrained policy, 1 the best reward possible. Per agent, the interquartile mean (IQM: "
        "the mean of the middle half of all its task × seed scores) with a 95 % stratified "
        f"bootstrap interval ({BOOTSTRAP_REPS} resamples of the seeds within each task; Agarwal "
        "et al. 2021), and the plain mean. The normaliser is held fixed (not resampled).")
    if left_out:
        lines.append(f"Left out: {', '.join(left_out)}.")
    lines.append("")
    if not agg:
        return lines + ["No task qualifies for the aggregate.", ""]
    lines += ["| agent | tasks | runs | IQM [95 % CI] | mean |", "|---|---:|---:|---:|---:|"]
    for a in agg:
        ci = "" if math.isnan(a["low"]) else f" [{a['low']:.3f}, {a['high']:.3f}]"
        tasks = f"{a['tasks']}" if a["tasks"] == a["of_tasks"] else f"{a['tasks']} of {a['of_tasks']}"
        lines.append(f"| {a['agent']} | {tasks} | {a['n']} | {a['iqm']:.3f}{ci} | "
                     f"{a['mean']:.3f} |")
    return lines + [""]


def matched_section(matched: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Reward at matched KL", ""]
    if not any(m["frontiers"] for m in matched.values()):
        return lines + [
            "No algorithm ran at more than one KL value on any task (no variants, "
            "`Suite.variants`), so reward cannot be compared at matched KL; the per-task tables "
            "compare each agent at its own KL.", ""]
    lines += [
        "An algorithm run at several settings (its variants) gives one point per variant: mean "
        "eval KL and mean eval reward over seeds. Sorted by KL and joined by straight lines they "
        "form its frontier, read off (linear interpolation, never extrapolated) at 3 KL values "
        "evenly spaced inside the KL range every frontier of the task covers (at 1/4, 1/2 and "
        "3/4 of it; over the union of the ranges when they share none, so that some are *not "
        "covered*). Interval: 95 % percentile bootstrap over seeds (each variant's seeds "
        f"resampled, {BOOTSTRAP_REPS} resamples, among those whose frontier reaches the KL "
        "value; the share is shown when under 95 %); none when a variant has one seed. "
        "Algorithms at a single KL value are listed below each table.", ""]
    for task, m in matched.items():
        if not m["frontiers"] and not m["singles"]:
            continue
        lines += [f"### {task}", ""]
        if m["frontiers"]:
            where = "" if m["overlap"] else " (the frontiers share no KL range: union)"
            lines += [f"KL values (nats){where}: " + ", ".join(f"{x:.2f}" for x in m["kls"]), "",
                      "| algorithm | variants (KL range) | "
                      + " | ".join(f"KL {x:.2f}" for x in m["kls"]) + " |",
                      "|---|---|" + "---:|" * len(m["kls"])]
            for f in m["frontiers"]:
                cells = []
                for estimate, low, high, covered in f["values"]:
                    if math.isnan(estimate):
                        cells.append("not covered")
                        continue
                    cell = f"{estimate:.3f}"
                    if not math.isnan(low):
                        cell += f" [{low:.3f}, {high:.3f}]"
                        if covered < 0.95:
                            cell += f" ({covered:.0%} of resamples)"
                    cells.append(cell)
                kl_lo, kl_hi = f["points"][0][0], f["points"][-1][0]
                lines.append(f"| {f['algorithm']} | {', '.join(f['agents'])} ({kl_lo:.2f}–"
                             f"{kl_hi:.2f}) | " + " | ".join(cells) + " |")
            lines.append("")
        if m["singles"]:
            lines += ["Single KL values: " + "; ".join(
                f"{s['agent']} (KL {s['kl']:.2f}, reward {s['reward']:.3f})" for s in m["singles"])
                + ".", ""]
    return lines


def evidence_section(rows: Sequence[dict[str, Any]], paired: Sequence[dict[str, Any]],
                     agg: Sequence[dict[str, Any]], matched: dict[str, dict[str, Any]],
                     has_baseline: bool) -> list[str]:
    """The paragraph on where the evidence is not enough, from the numbers above."""
    notes = []
    cells = {(r["task"], r["agent"]) for r in rows}
    counts = [sum(1 for r in rows if (r["task"], r["agent"]) == c) for c in cells]
    if counts:
        low, high = min(counts), max(counts)
        seeds = f"{low}" if low == high else f"{low} to {high}"
        if high < 2:
            notes.append(f"Every cell has {seeds} seed: no confidence interval can be given.")
        else:
            notes.append(f"Cells have {seeds} seeds; with n seeds the 95 % interval is the "
                         f"mean ± t·sd/√n with t = {t_quantile_975(max(low, 2) - 1):.2f} at "
                         f"n = {max(low, 2)}, so small differences are within the noise.")
    if not has_baseline:
        notes.append(f"Without `{BASELINE}` runs there is no paired comparison with the untrained "
                     "policy and no normalised aggregate.")
    else:
        zero = [f"{p['agent']} on {p['task']}" for p in paired if p["includes_zero"]]
        no_ci = [f"{p['agent']} on {p['task']}" for p in paired if math.isnan(p["half"])]
        if zero:
            notes.append(f"{len(zero)} of {len(paired)} paired differences against `{BASELINE}` "
                         f"have a 95 % CI that includes 0 ({MARK_ZERO}): {', '.join(zero)}. "
                         "These runs do not show an improvement (or a loss) over the untrained "
                         "policy.")
        elif paired:
            notes.append(f"Every paired difference against `{BASELINE}` with an interval excludes "
                         "0.")
        worse = [f"{p['agent']} on {p['task']}" for p in paired
                 if not math.isnan(p["half"]) and p["mean"] + p["half"] < 0]
        if worse:
            notes.append(f"Below `{BASELINE}` with a CI that excludes 0: {', '.join(worse)}.")
        if no_ci:
            notes.append(f"No interval (fewer than 2 paired seeds) for: {', '.join(no_ci)}.")
        ranked = [a for a in agg if not math.isnan(a["low"]) and a["agent"] != BASELINE]
        overlapping = [f"{a['agent']} and {b['agent']}" for i, a in enumerate(ranked)
                       for b in ranked[i + 1:] if a["low"] <= b["high"] and b["low"] <= a["high"]]
        if overlapping:
            notes.append("The aggregate's IQM intervals overlap for " + "; ".join(overlapping)
                         + ": the aggregate does not establish an order between them.")
        if agg and counts and min(counts) < 5:
            notes.append("With fewer than 5 seeds per task, percentile bootstrap intervals tend "
                         "to be narrower than their nominal 95 %: read them as a lower bound on "
                         "the uncertainty.")
    single_only = [t for t, m in matched.items() if not m["frontiers"] and m["singles"]]
    if single_only:
        notes.append("No algorithm has runs at several KL values on " + ", ".join(single_only)
                     + ": agents there are compared at different KL (see each task's KL "
                     "column), which mixes reward gained with distance moved from the reference.")
    uncovered = [f"{f['algorithm']} on {t} at KL {x:.2f}" for t, m in matched.items()
                 for f in m["frontiers"] for x, v in zip(m["kls"], f["values"])
                 if math.isnan(v[0])]
    if uncovered:
        notes.append("Not covered (a frontier does not reach the KL value): "
                     + ", ".join(uncovered) + ".")
    return ["## Where the evidence is not enough", "", " ".join(notes), ""]


def statistics(rows: Sequence[dict[str, Any]], tasks: Sequence[str], agents: Sequence[str]
               ) -> dict[str, Any]:
    """Every statistic of the report: ``paired``, ``aggregate``, ``left_out``, ``matched``."""
    present = [t for t in tasks if any(r["task"] == t for r in rows)]
    agg, left_out = aggregate_rows(rows, present, agents)
    return {"paired": paired_rows(rows, present, agents), "aggregate": agg, "left_out": left_out,
            "matched": {t: matched_kl(rows, t, agents) for t in present}}


def results_markdown(out: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> str:
    """The whole ``RESULTS.md``: header (suite, command, machine, date), tables, plots."""
    bench = read_bench(out)
    suite = bench.get("suite", {})
    tasks, agents = suite_order(out, rows)
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# tokengym benchmark results", ""]
    if suite:
        lines.append(
            f"Suite `{suite['name']}` on `{suite['model']}`: {len(suite['tasks'])} task(s) x "
            f"{len(suite['agents'])} agent(s) x {suite['seeds']} seed(s); trainable agents run "
            f"{suite['iterations']} iterations of {suite['num_envs']} episodes; every agent is "
            f"evaluated on {suite['eval_episodes']} held-out (`split=\"eval\"`) episodes, seed "
            f"k's runs with eval seed {suite['eval_seed']} + k.")
        if suite.get("token_budget"):
            lines.append(
                f"Every trainable run has the same budget of {suite['token_budget']} sampled "
                "training tokens (RLOO/GRPO's k samples per prompt count): it stops at the first "
                "iteration that reaches it, so the iterations above are an upper bound.")
        if suite.get("variants"):
            lines.append("Variants (an agent at other settings, on top of the suite's overrides "
                         "for it): " + "; ".join(
                             f"`{label}` = {agent} with "
                             + ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
                             for label, (agent, overrides) in suite["variants"].items()) + ".")
        lines.append("")
    for label, key in (("Command", "command"), ("Machine", "machine"), ("Date", "date")):
        if bench.get(key):
            value = f"`{bench[key]}`" if key == "command" else bench[key]
            lines.append(f"- {label}: {value}")
    code = bench.get("code")
    if isinstance(code, dict):
        commit = f", commit {code['commit'][:10]}" if code.get("commit") else ""
        dirty = " (with uncommitted changes)" if code.get("dirty") else ""
        note = f"; {code['note']}" if code.get("note") else ""
        lines.append(f"- Code: tokengym {code.get('tokengym', '?')}{commit}{dirty}{note}")
    if bench.get("shards", 1) > 1:
        lines.append(f"- Parallel: {bench['shards']} processes (`--jobs {bench['shards']}` or "
                     f"`--shard K/{bench['shards']}`) split the runs; a run's wall time is its "
                     "own process's, slowed by whatever shared its machine")
    lines += [f"- Runs: {len(rows)} finished (seeds {', '.join(map(str, seeds))})", "",
              "Each cell is the mean ± 95 % confidence interval over seeds (Student's t; a bare "
              "number when there is one seed). Columns are explained in `docs/benchmarks.md`. "
              "On Overoptimization, *eval reward* is the proxy reward model's score and *gold "
              "reward* VADER's.", ""]
    for task in tasks:
        mine = [r for r in rows if r["task"] == task]
        if not mine:
            continue
        env_id = TASKS[task].env_id if task in TASKS else task
        lines += [f"## {task} (`{env_id}`)", "", task_table(mine, agents), ""]
    stats = statistics(rows, tasks, agents)
    has_baseline = any(r["agent"] == BASELINE for r in rows)
    lines += paired_section(stats["paired"], tasks, agents, has_baseline)
    lines += aggregate_section(stats["aggregate"], stats["left_out"], has_baseline)
    lines += matched_section(stats["matched"])
    lines += evidence_section(rows, stats["paired"], stats["aggregate"], stats["matched"],
                              has_baseline)
    lines += ["## Plots", ""]
    for task in tasks:
        if any(r["task"] == task for r in rows):
            lines.append(f"- learning curves, {task}: ![learning {task}](plots/learning_{task}.png)")
    lines.append("- reward vs KL frontier (mean ± 95 % CI both ways; one line per algorithm "
                 "through its variants): ![frontier](plots/frontier.png)")
    if any(not math.isnan(r["gold_reward_mean"]) for r in rows):
        lines.append("- over-optimisation (gold and proxy reward vs sqrt KL): "
                     "![overoptimization](plots/overoptimization.png)")
    return "\n".join(lines) + "\n"


def write_report(out: str | os.PathLike[str], plots: bool = True) -> dict[str, Path]:
    """Write ``results.csv``, ``statistics.csv``, ``RESULTS.md`` (and the PNG plots) in
    ``out``; returns their paths.

    Raises:
        ValueError: ``out`` holds no finished run.
    """
    out = Path(out)
    rows = read_runs(out)
    if not rows:
        raise ValueError(f"{out} holds no finished run (no runs/<task>/<agent>/seed<k>/eval.json)")
    paths = {"csv": write_csv(rows, out / "results.csv"), "md": out / "RESULTS.md"}
    stats = statistics(rows, *suite_order(out, rows))
    paths["statistics"] = write_csv(
        statistics_rows(stats["paired"], stats["aggregate"], stats["matched"]),
        out / "statistics.csv", STAT_COLUMNS)
    atomic_write_text(paths["md"], results_markdown(out, rows))
    if plots:
        for path in make_plots(out, rows, *suite_order(out, rows)):
            paths[path.stem] = path
    return paths
