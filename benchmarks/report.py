"""``results.csv`` and ``RESULTS.md`` of a benchmark directory, from its run logs alone.

Reads every ``runs/<task>/<agent>/seed<k>/eval.json`` (and ``bench.json`` for the header) and
writes one CSV row per run and, per task, a Markdown table of mean ± 95 % CI over seeds
(Student's t, :func:`~tokengym.benchmarks.stats.mean_ci95`) per agent. Nothing is re-run, so
``tokengym bench --report DIR`` regenerates the same tables from the same logs.
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
from tokengym.benchmarks.stats import aggregate, format_ci
from tokengym.benchmarks.suites import TASKS
from tokengym.fileio import atomic_write_text

# results.csv columns after the identifying ones; the metric keys come from eval.json.
METRICS = ("reward_mean", "gold_reward_mean", "kl_mean", "sqrt_kl", "ref_perplexity",
           "distinct_1", "distinct_2", "mean_length", "tokens", "wall_time_s")
ID_COLUMNS = ("task", "agent", "seed", "model", "iterations", "trainable")

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


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*ID_COLUMNS, *METRICS], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                         for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())


def task_table(rows: Sequence[dict[str, Any]], agents: Sequence[str]) -> str:
    """The Markdown table of one task: one line per agent, mean ± CI per column."""
    columns = [c for c in TABLE_COLUMNS
               if c[0] != "gold_reward_mean" or aggregate(rows, c[0])[2] > 0]
    lines = ["| agent | seeds | " + " | ".join(h for _, h, _ in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for agent in agents:
        mine = [r for r in rows if r["agent"] == agent]
        if not mine:
            continue
        cells = [format_ci(*aggregate(mine, key)[:2], digits=d) for key, _, d in columns]
        lines.append(f"| {agent} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
        lines.append("")
    for label, key in (("Command", "command"), ("Machine", "machine"), ("Date", "date")):
        if bench.get(key):
            value = f"`{bench[key]}`" if key == "command" else bench[key]
            lines.append(f"- {label}: {value}")
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
    lines += ["## Plots", ""]
    for task in tasks:
        if any(r["task"] == task for r in rows):
            lines.append(f"- learning curves, {task}: ![learning {task}](plots/learning_{task}.png)")
    lines.append("- reward vs KL frontier: ![frontier](plots/frontier.png)")
    if any(not math.isnan(r["gold_reward_mean"]) for r in rows):
        lines.append("- over-optimisation (gold and proxy reward vs sqrt KL): "
                     "![overoptimization](plots/overoptimization.png)")
    return "\n".join(lines) + "\n"


def write_report(out: str | os.PathLike[str], plots: bool = True) -> dict[str, Path]:
    """Write ``results.csv``, ``RESULTS.md`` (and the PNG plots) in ``out``; returns their paths.

    Raises:
        ValueError: ``out`` holds no finished run.
    """
    out = Path(out)
    rows = read_runs(out)
    if not rows:
        raise ValueError(f"{out} holds no finished run (no runs/<task>/<agent>/seed<k>/eval.json)")
    paths = {"csv": write_csv(rows, out / "results.csv"), "md": out / "RESULTS.md"}
    atomic_write_text(paths["md"], results_markdown(out, rows))
    if plots:
        for path in make_plots(out, rows, *suite_order(out, rows)):
            paths[path.stem] = path
    return paths
