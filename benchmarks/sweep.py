"""The learning-rate sweep: which lr each trainable agent gets in the comparison suites.

The ``tune`` suite (:data:`~tokengym.benchmarks.suites.SUITES`) trains every trainable agent at
each learning rate of one grid, on a task and seed that no reported cell uses. This module reads
its run logs and picks, per agent (registry ``algorithm``), the lr with the highest held-out
**KL-regularised reward** ``reward_mean - beta * kl_mean``: the objective all of them maximise,
with the exact KL of :func:`~tokengym.benchmarks.evaluate.evaluate_policy` (nats per episode), so
an lr that buys reward only by leaving the reference does not win. A run that diverged (NaN or
inf, ``eval.json``'s ``diverged``) cannot be chosen. Ties go to the smaller lr.

Run: ``python -m tokengym.benchmarks.sweep DIR`` prints the table and writes ``DIR/SWEEP.md`` and
``DIR/sweep.json`` (``{"chosen": {algorithm: lr}, "runs": [...]}``).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokengym.agents.logging import read_metrics
from tokengym.fileio import atomic_write_json, atomic_write_text, read_json

# Training iterations averaged for the "late training reward" column (context only).
LATE_ITERATIONS = 8


def sweep_runs(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One row per trainable run of ``out``: ``task``, ``agent`` (label), ``algorithm``,
    ``seed``, ``lr``, ``beta``, the held-out ``reward``, ``kl`` and ``ref_perplexity``,
    ``objective`` (reward - beta * kl; NaN when diverged), ``train_reward_late`` (mean training
    reward of the last :data:`LATE_ITERATIONS` iterations) and ``diverged`` (message or None);
    sorted by algorithm, then lr."""
    rows = []
    for path in sorted(Path(out).glob("runs/*/*/seed*/eval.json")):
        data = read_json(path)
        if not isinstance(data, dict) or not data.get("trainable"):
            continue
        config = data.get("config")
        if not isinstance(config, dict):
            raise ValueError(f"{path} records no agent config (written before tokengym 0.2's "
                             "sweep); rerun that run")
        metrics = data.get("metrics", {})
        reward = float(metrics.get("reward_mean", math.nan))
        kl = float(metrics.get("kl_mean", math.nan))
        beta = float(config["beta"])
        records = read_metrics(path.parent / "metrics.jsonl") \
            if (path.parent / "metrics.jsonl").is_file() else []
        late = [r["reward_mean"] for r in records[-LATE_ITERATIONS:] if "reward_mean" in r]
        rows.append({
            "task": data["task"], "agent": data["agent"], "algorithm": data["algorithm"],
            "seed": data["seed"], "lr": float(config["lr"]), "beta": beta, "reward": reward,
            "kl": kl, "ref_perplexity": float(metrics.get("ref_perplexity", math.nan)),
            "objective": reward - beta * kl,
            "train_reward_late": sum(late) / len(late) if late else math.nan,
            "diverged": data.get("diverged"),
        })
    rows.sort(key=lambda r: (r["algorithm"], r["lr"], r["task"], r["seed"]))
    return rows


def choose(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per algorithm, the lr with the highest mean objective over its runs (diverged runs and
    NaN objectives excluded; ties to the smaller lr). Algorithms whose every run diverged are
    left out."""
    by_lr: dict[str, dict[float, list[float]]] = {}
    for row in rows:
        if row["diverged"] is None and math.isfinite(row["objective"]):
            by_lr.setdefault(row["algorithm"], {}).setdefault(row["lr"], []).append(
                row["objective"])
    chosen = {}
    for algorithm, lrs in by_lr.items():
        means = {lr: sum(v) / len(v) for lr, v in lrs.items()}
        chosen[algorithm] = min(means, key=lambda lr: (-means[lr], lr))
    return chosen


def sweep_markdown(rows: Sequence[dict[str, Any]], chosen: dict[str, float]) -> str:
    """The sweep as a Markdown table, the chosen lr of each agent in bold."""
    lines = ["| agent | lr | beta | held-out reward | exact KL (nats) | reward - beta * KL | "
             "ref perplexity | training reward, last 8 iterations |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "**" if chosen.get(r["algorithm"]) == r["lr"] else ""
        if r["diverged"] is not None:
            lines.append(f"| {r['algorithm']} | {r['lr']:g} | {r['beta']:g} | diverged | | | | |")
            continue
        lines.append(f"| {r['algorithm']} | {mark}{r['lr']:g}{mark} | {r['beta']:g} | "
                     f"{r['reward']:.3f} | {r['kl']:.2f} | {mark}{r['objective']:.3f}{mark} | "
                     f"{r['ref_perplexity']:.1f} | {r['train_reward_late']:.3f} |")
    cells = sorted({(r["task"], r["seed"]) for r in rows})
    where = ", ".join(f"{task} seed {seed}" for task, seed in cells)
    return "\n".join([
        "# Learning-rate sweep", "",
        f"Runs: {where}. Chosen per agent (bold): the highest held-out reward - beta x exact KL.",
        "", *lines, "",
        "One seed per cell and held-out means over the suite's evaluation episodes: a choice "
        "between two lrs whose objectives differ by less than the reward's standard error is a "
        "coin toss, and says only that both are reasonable.", ""])


def write_sweep(out: str | os.PathLike[str]) -> tuple[str, dict[str, float]]:
    """Write ``SWEEP.md`` and ``sweep.json`` into ``out``; returns (markdown, chosen)."""
    rows = sweep_runs(out)
    if not rows:
        raise ValueError(f"{out} holds no finished trainable run (runs/*/*/seed*/eval.json)")
    chosen = choose(rows)
    text = sweep_markdown(rows, chosen)
    atomic_write_text(Path(out) / "SWEEP.md", text)
    finite = [{k: None if isinstance(v, float) and not math.isfinite(v) else v
               for k, v in row.items()} for row in rows]  # strict JSON: no NaN
    atomic_write_json(Path(out) / "sweep.json", {"chosen": chosen, "runs": finite},
                      sort_keys=True)
    return text, chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokengym.benchmarks.sweep",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="the tuning suite's benchmark directory")
    args = parser.parse_args(argv)
    try:
        text, _ = write_sweep(args.dir)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
