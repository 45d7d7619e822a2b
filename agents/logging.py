"""Run logs shared by every agent: ``metrics.jsonl``, TensorBoard, PNG plots, a sample table.

One record per iteration goes to ``OUT/metrics.jsonl`` (append-only, flushed each time, so a
killed run keeps every finished iteration) and to TensorBoard under ``OUT/tensorboard``. Metric
names and formulas: ``docs/metrics.md``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokengym.fileio import atomic_write_jsonl, atomic_write_text

PLOTTED = ("reward_mean", "kl_mean", "beta", "entropy", "value_loss")


class MetricsLogger:
    """Appends iteration records to ``metrics.jsonl`` and TensorBoard.

    Args:
        out_dir: the run directory.
        tensorboard: also write TensorBoard scalars (needs the ``tensorboard`` package).
        start_iteration: on resume, records with a larger ``iteration`` are dropped from
            ``metrics.jsonl`` first (they came after the checkpoint and will be redone).
    """

    def __init__(self, out_dir: str | os.PathLike[str], tensorboard: bool = True,
                 start_iteration: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "metrics.jsonl"
        if start_iteration is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("iteration", 0) <= start_iteration]
            atomic_write_jsonl(self.path, kept)  # a kill here must not lose the history
        self._file = self.path.open("a", encoding="utf-8")
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        """Write one iteration's record (needs an ``iteration`` key)."""
        if "iteration" not in record:
            raise ValueError(f"a metrics record needs an 'iteration' key, got {sorted(record)}")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            step = int(record["iteration"])
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a torn last line from a kill is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_metrics(metrics_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                 keys: Sequence[str] = PLOTTED) -> list[Path]:
    """PNG per metric in ``keys`` plus ``training_curves.png`` with all of them; returns paths."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = [k for k in keys if any(k in r for r in records)]
    paths: list[Path] = []
    if not keys:
        return paths
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        xs = [r["iteration"] for r in records if key in r]
        ys = [r[key] for r in records if key in r]
        ax.plot(xs, ys, marker="." if len(xs) < 50 else None)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        single, sax = plt.subplots(figsize=(4, 3))
        sax.plot(xs, ys)
        sax.set_title(key)
        sax.set_xlabel("iteration")
        single.tight_layout()
        path = out_dir / f"{key}.png"
        single.savefig(path, dpi=90)
        plt.close(single)
        paths.append(path)
    fig.tight_layout()
    combined = out_dir / "training_curves.png"
    fig.savefig(combined, dpi=90)
    plt.close(fig)
    return [combined, *paths]


def sample_rows(rollout: Any) -> list[dict[str, Any]]:
    """``[{prompt, completion, reward}]`` of a rollout, for :func:`write_sample_table`."""
    return [{"prompt": info.get("prompt", ""), "completion": info.get("completion", ""),
             "reward": float(r)} for info, r in zip(rollout.infos, rollout.rewards.tolist())]


def _cell(text: str, limit: int = 160) -> str:
    text = text.replace("\n", " ").replace("|", "\\|").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_sample_table(path: str | os.PathLike[str], before: Sequence[dict[str, Any]],
                       after: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the same prompts' completions before vs after training; returns it."""
    lines = ["| prompt | before | reward | after | reward |", "|---|---|---|---|---|"]
    for b, a in zip(before, after):
        lines.append(f"| {_cell(b['prompt'], 80)} | {_cell(b['completion'])} | "
                     f"{b['reward']:+.3f} | {_cell(a['completion'])} | {a['reward']:+.3f} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(path, text)
    return text
