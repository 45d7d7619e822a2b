"""``results.csv``, ``statistics.csv`` and ``RESULTS.md`` of a benchmark directory, from its
run logs alone.

Reads every ``runs/<task>/<agent>/seed<k>/eval.json`` (and ``bench.json`` for the header,
:func:`read_bench`) into one row per run (:func:`read_runs`, in :func:`suite_order`) and
writes one CSV row per run and, in ``RESULTS.md``:

- per task, a table of mean ± 95 % CI over seeds (Student's t,
  :func:`~tokengym.benchmarks.stats.mean_ci95`) per agent (run label) at its suite settings
  (:func:`task_table`);
- the comparisons of :mod:`~tokengym.benchmarks.comparisons` (paired differences against
  ``sample``, the IQM aggregate over tasks, reward at matched KL), with a paragraph on where the
  evidence is not enough (:mod:`~tokengym.benchmarks.comparisons_markdown`);
- the plots of :mod:`~tokengym.benchmarks.plots`.

``statistics.csv`` holds the comparisons in long form
(:func:`~tokengym.benchmarks.comparisons.statistics_rows`). ``<agent>`` is a run label (an
agent, or a suite variant of one); its registry name is eval.json's ``algorithm`` (the label
itself in logs written before variants existed). Nothing is re-run, so ``tokengym bench
--report DIR`` regenerates the same tables from the same logs (bootstraps use fixed seeds).
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

from tokengym.benchmarks.comparisons import STAT_COLUMNS, statistics, statistics_rows
from tokengym.benchmarks.comparisons_markdown import comparison_sections
from tokengym.benchmarks.plots import make_plots
from tokengym.benchmarks.stats import aggregate, format_ci
from tokengym.benchmarks.suites import TASKS, Suite
from tokengym.fileio import atomic_write_text, read_json

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
        try:
            data = read_json(path)
        except ValueError as exc:
            raise ValueError(f"{exc}; delete it to rerun that run") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a run's evaluation; delete it to rerun that run")
        metrics = data.get("metrics", {})
        row = {k: data.get(k) for k in ID_COLUMNS}
        row["algorithm"] = data.get("algorithm") or data.get("agent")  # older logs: the agent
        row.update({k: metrics.get(k, math.nan) for k in METRICS})
        kl = metrics.get("kl_mean", math.nan)
        row["sqrt_kl"] = math.sqrt(max(kl, 0.0)) if not math.isnan(kl) else math.nan
        row["tokens"], row["wall_time_s"] = data.get("tokens", 0), data.get("wall_time_s", math.nan)
        row["diverged"] = bool(data.get("diverged"))
        rows.append(row)
    tasks, agents = suite_order(out, rows)
    rows.sort(key=lambda r: (tasks.index(r["task"]), agents.index(r["agent"]), r["seed"]))
    return rows


def read_bench(out: str | os.PathLike[str]) -> dict[str, Any]:
    """``bench.json`` (suite, command, machine, date), or ``{}`` when missing."""
    path = Path(out) / "bench.json"
    data = read_json(path) if path.is_file() else {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a benchmark's settings (a JSON object)")
    return data


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
        runs = [r for r in rows if r["agent"] == agent]
        if not runs:
            continue
        mine = [r for r in runs if not r.get("diverged")]
        lost = len(runs) - len(mine)
        cells = [format_ci(*aggregate(mine, key)[:2], digits=d) if mine else "diverged"
                 for key, _, d in columns]
        lines.append(f"| {agent} | " + (f"{runs[0]['algorithm']} | " if algo else "")
                     + f"{len(mine)}{f' (+{lost} diverged)' if lost else ''} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(out: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> str:
    """The whole ``RESULTS.md``: header (suite, command, machine, date), tables, plots."""
    bench = read_bench(out)
    suite = bench.get("suite", {})
    tasks, agents = suite_order(out, rows)
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# tokengym benchmark results", ""]
    planned = len(Suite.from_dict(suite).cells()) if suite else len(rows)
    if suite:
        lines.append(
            f"Suite `{suite['name']}` on `{suite['model']}`: {len(suite['tasks'])} task(s) x "
            f"{len(suite['agents'])} agent(s) x {suite['seeds']} seed(s) ({planned} runs); "
            f"trainable agents run {suite['iterations']} iterations of {suite['num_envs']} "
            f"episodes; every agent is evaluated on {suite['eval_episodes']} held-out "
            f"(`split=\"eval\"`) episodes, seed k's runs with eval seed {suite['eval_seed']} + k.")
        for label, only in suite.get("agent_tasks", {}).items():
            lines.append(f"`{label}` runs on {', '.join(only)} only.")
        for agent, overrides in suite.get("agent_overrides", {}).items():
            if overrides:
                lines.append(f"Settings of `{agent}` (every run of it): " + ", ".join(
                    f"{k}={json.dumps(v)}" for k, v in overrides.items()) + ".")
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
    if bench.get("ranks", 1) > 1:
        lines.append(f"- Ranks: each trainable run trained in {bench['ranks']} processes "
                     f"(`--nproc {bench['ranks']}` or torchrun), the suite's episodes per "
                     "iteration split between them")
    diverged = [f"{r['task']}/{r['agent']}/seed{r['seed']}" for r in rows if r["diverged"]]
    lines += [f"- Runs: {len(rows)} of {planned} finished (seeds {', '.join(map(str, seeds))})"
              + (f"; diverged (a NaN or inf stopped them, left out of every mean): "
                 f"{', '.join(diverged)}" if diverged else ""), "",
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
    lines += comparison_sections([r for r in rows if not r["diverged"]], tasks, agents)
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
    finite = [r for r in rows if not r["diverged"]]
    stats = statistics(finite, *suite_order(out, rows))
    paths["statistics"] = write_csv(
        statistics_rows(stats["paired"], stats["aggregate"], stats["matched"]),
        out / "statistics.csv", STAT_COLUMNS)
    atomic_write_text(paths["md"], results_markdown(out, rows))
    if plots:
        for path in make_plots(out, finite, *suite_order(out, rows)):
            paths[path.stem] = path
    return paths
