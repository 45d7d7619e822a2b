"""PNG plots of a benchmark directory (matplotlib, Agg backend), from its run logs alone.

- ``plots/learning_<task>.png``: training reward vs tokens generated, per trainable agent (mean
  over seeds, band = min..max); untrained agents as horizontal lines at their eval reward.
- ``plots/frontier.png``: eval reward vs KL to the reference, one panel per task, one point per
  agent (mean ± 95 % CI over seeds both ways, seeds as faint dots); an algorithm run at several
  settings (suite variants) is one line through its variants' points sorted by KL, each point
  labelled with its variant; inference-time agents are single square markers.
- ``plots/overoptimization.png``: on tasks with a gold reward model, proxy (solid) and gold
  (dashed) reward vs sqrt(KL) along training (``evals.jsonl``), averaged over seeds point by
  point, each seed's points faint behind; untrained agents as one marker each (their mean).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokengym.agents.logging import read_metrics
from tokengym.benchmarks.runner import run_dir
from tokengym.benchmarks.stats import aggregate


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def _records(path: Path) -> list[dict[str, Any]]:
    return read_metrics(path) if path.is_file() else []


def _colors(agents: Sequence[str]) -> dict[str, Any]:
    cmap = _pyplot().get_cmap("tab10")
    return {a: cmap(i % 10) for i, a in enumerate(agents)}


def learning_curves(out: Path, rows: Sequence[dict[str, Any]], task: str,
                    agents: Sequence[str]) -> Path:
    """``plots/learning_<task>.png`` (see the module docstring)."""
    plt = _pyplot()
    colors = _colors(agents)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for agent in agents:
        mine = [r for r in rows if r["task"] == task and r["agent"] == agent]
        if not mine:
            continue
        if not mine[0]["trainable"]:
            mean = aggregate(mine, "reward_mean")[0]
            ax.axhline(mean, color=colors[agent], linestyle=":", label=f"{agent} (eval)")
            continue
        curves = [_records(run_dir(out, task, agent, r["seed"]) / "metrics.jsonl") for r in mine]
        n = min((len(c) for c in curves), default=0)
        if n == 0:
            continue
        xs = np.array([[c[i]["tokens_total"] for i in range(n)] for c in curves]).mean(0)
        ys = np.array([[c[i]["reward_mean"] for i in range(n)] for c in curves])
        ax.plot(xs, ys.mean(0), color=colors[agent], marker="." if n < 40 else None, label=agent)
        ax.fill_between(xs, ys.min(0), ys.max(0), color=colors[agent], alpha=0.2)
    ax.set_xlabel("tokens generated")
    ax.set_ylabel("training reward")
    ax.set_title(f"{task}: learning curves ({len({r['seed'] for r in rows})} seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "plots" / f"learning_{task}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _algorithm(row: dict[str, Any]) -> str:
    return row.get("algorithm") or row["agent"]


def frontier(out: Path, rows: Sequence[dict[str, Any]], tasks: Sequence[str],
             agents: Sequence[str]) -> Path:
    """``plots/frontier.png``: eval reward vs KL per task, one colour per algorithm, a line
    through an algorithm's variants (sorted by KL)."""
    plt = _pyplot()
    algorithms = list(dict.fromkeys(_algorithm(r) for a in agents for r in rows if r["agent"] == a))
    colors = _colors(algorithms)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for algorithm in algorithms:
            points = []  # (kl, reward, label) of each of its agents on this task
            for agent in agents:
                mine = [r for r in rows if r["task"] == task and r["agent"] == agent
                        and _algorithm(r) == algorithm]
                if not mine:
                    continue
                trainable = bool(mine[0]["trainable"])
                ax.scatter([r["kl_mean"] for r in mine], [r["reward_mean"] for r in mine],
                           color=colors[algorithm], alpha=0.3, s=10)
                kx, kh, _ = aggregate(mine, "kl_mean")
                ry, rh, _ = aggregate(mine, "reward_mean")
                if math.isnan(kx) or math.isnan(ry):
                    continue
                ax.errorbar(kx, ry, xerr=0 if math.isnan(kh) else kh,
                            yerr=0 if math.isnan(rh) else rh, color=colors[algorithm],
                            marker="o" if trainable else "s", capsize=3, linestyle="none",
                            label=None if points else algorithm)
                points.append((kx, ry, agent))
            if len(points) > 1:  # variants: the algorithm's frontier, sorted by KL
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], color=colors[algorithm])
                for kx, ry, agent in points:
                    ax.annotate(agent, (kx, ry), textcoords="offset points", xytext=(4, 4),
                                fontsize=6, color=colors[algorithm])
        ax.set_title(task)
        ax.set_xlabel("KL to reference (nats)")
        ax.set_ylabel("eval reward")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "plots" / "frontier.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _sqrt_kl(kl: float) -> float:
    return math.sqrt(max(float(kl), 0.0))


def overoptimization(out: Path, rows: Sequence[dict[str, Any]], tasks: Sequence[str],
                     agents: Sequence[str]) -> Path:
    """``plots/overoptimization.png``: proxy and gold reward vs sqrt(KL) (Gao et al. 2022)."""
    plt = _pyplot()
    colors = _colors(agents)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for agent in agents:
            mine = [r for r in rows if r["task"] == task and r["agent"] == agent]
            if not mine:
                continue
            color = colors[agent]
            runs = [_records(run_dir(out, task, agent, r["seed"]) / "evals.jsonl") for r in mine]
            n = min((len(e) for e in runs), default=0)
            if mine[0]["trainable"] and n > 0:
                # Seeds share the eval schedule, so point i of every seed is the same iteration:
                # average them into one curve per agent, with each seed's points faint behind it.
                kl = np.array([[_sqrt_kl(e[i]["kl_mean"]) for i in range(n)] for e in runs])
                for key, marker, style, name in (("reward_mean", "o", "-", "proxy"),
                                                 ("gold_reward_mean", "x", "--", "gold")):
                    ys = np.array([[e[i][key] for i in range(n)] for e in runs], dtype=float)
                    ax.scatter(kl.ravel(), ys.ravel(), color=color, marker=marker, s=8, alpha=0.25)
                    ax.plot(kl.mean(0), ys.mean(0), color=color, marker=marker, markersize=4,
                            linestyle=style, label=f"{agent} {name}")
            else:
                x = [0.0 if math.isnan(r["sqrt_kl"]) else r["sqrt_kl"] for r in mine]
                ax.scatter(x, [r["reward_mean"] for r in mine], color=color, marker="o", s=8,
                           alpha=0.25)
                ax.scatter(x, [r["gold_reward_mean"] for r in mine], color=color, marker="x",
                           s=8, alpha=0.25)
                x_mean = float(np.mean(x))
                ax.scatter([x_mean], [aggregate(mine, "reward_mean")[0]], color=color,
                           marker="o", label=f"{agent} proxy")
                ax.scatter([x_mean], [aggregate(mine, "gold_reward_mean")[0]],
                           color=color, marker="x", s=50, label=f"{agent} gold")
        ax.set_title(f"{task}: proxy (solid, o) vs gold (dashed, x)")
        ax.set_xlabel("sqrt(KL to reference)")
        ax.set_ylabel("reward")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "plots" / "overoptimization.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def make_plots(out: str | os.PathLike[str], rows: Sequence[dict[str, Any]], tasks: Sequence[str],
               agents: Sequence[str]) -> list[Path]:
    """Every plot of the module docstring for the runs ``rows``, tasks and agents in the order
    given (:func:`~tokengym.benchmarks.report.suite_order`); returns the PNG paths."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    tasks = [t for t in tasks if any(r["task"] == t for r in rows)]
    paths = [learning_curves(out, rows, t, agents) for t in tasks]
    paths.append(frontier(out, rows, tasks, agents))
    gold_tasks = [t for t in tasks
                  if any(r["task"] == t and not math.isnan(r["gold_reward_mean"]) for r in rows)]
    if gold_tasks:
        paths.append(overoptimization(out, rows, gold_tasks, agents))
    return paths
