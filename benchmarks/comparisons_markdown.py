"""The comparison sections of ``RESULTS.md``, in Markdown, from the numbers of
:mod:`~tokengym.benchmarks.comparisons`: paired differences against ``sample``, the IQM
aggregate over tasks, reward at matched KL, and a paragraph, generated from these numbers, on
where the evidence is not enough (:func:`comparison_sections` gives all four in order)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tokengym.benchmarks.comparisons import BASELINE, BOOTSTRAP_REPS, statistics
from tokengym.benchmarks.stats import t_quantile_975

MARK_ZERO = "†"  # a paired difference whose 95 % CI includes 0
MARK_NO_CI = "‡"  # fewer than 2 paired seeds: no interval


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


def comparison_sections(rows: Sequence[dict[str, Any]], tasks: Sequence[str],
                        agents: Sequence[str]) -> list[str]:
    """The lines of every section above, in order, for the runs ``rows`` (tasks and agents in
    the order given)."""
    stats = statistics(rows, tasks, agents)
    has_baseline = any(r["agent"] == BASELINE for r in rows)
    lines = paired_section(stats["paired"], tasks, agents, has_baseline)
    lines += aggregate_section(stats["aggregate"], stats["left_out"], has_baseline)
    lines += matched_section(stats["matched"])
    lines += evidence_section(rows, stats["paired"], stats["aggregate"], stats["matched"],
                              has_baseline)
    return lines
