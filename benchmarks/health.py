"""A run's health from its ``metrics.jsonl``: is PPO's update inside its trust region, does the
critic fit, did anything go NaN? Reward alone does not say.

    python -m tokengym.benchmarks.health runs/sentiment [runs/other ...]

Prints, per run: iterations and training episodes; the median per-iteration ``approx_kl`` and
``clip_fraction`` (healthy PPO: about 0.02-0.05 and 0.1-0.2); the median ``explained_variance``
over the second half of training (a critic that fits: clearly above 0, >= 0.3 is good); the mean
reward of the first and last five iterations; the KL to the reference over the last five; the
median number of policy updates per iteration; and whether any record holds a NaN or inf.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokengym.agents.logging import read_metrics


def _median(records: Sequence[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else math.nan


def _mean(records: Sequence[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
    return statistics.fmean(values) if values else math.nan


def health(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The health figures of one run's iteration records (module docstring)."""
    second_half = records[len(records) // 2:]
    return {
        "iterations": float(len(records)),
        "episodes": float(sum(r.get("tokens", 0) / max(r.get("episode_length_mean", 1.0), 1e-9)
                              for r in records)),
        "approx_kl_median": _median(records, "approx_kl"),
        "clip_fraction_median": _median(records, "clip_fraction"),
        "explained_variance_median_2nd_half": _median(second_half, "explained_variance"),
        "reward_first5": _mean(records[:5], "reward_mean"),
        "reward_last5": _mean(records[-5:], "reward_mean"),
        "kl_last5": _mean(records[-5:], "kl_mean"),
        "updates_median": _median(records, "updates"),
        "non_finite": float(any(isinstance(v, float) and not math.isfinite(v)
                                for r in records for v in r.values())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories (or metrics.jsonl files)")
    args = parser.parse_args(argv)
    for run in args.runs:
        path = Path(run)
        path = path / "metrics.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise SystemExit(f"{path}: no metrics.jsonl there")
        h = health(read_metrics(path))
        parts = [f"{run}: {h['iterations']:.0f} iterations, {h['episodes']:.0f} episodes"]
        # PPO's trust-region figures and a critic's explained variance: only where logged.
        for label, key, fmt in (("approx_kl median", "approx_kl_median", ".4f"),
                                ("clip_fraction median", "clip_fraction_median", ".3f"),
                                ("explained_variance median (2nd half)",
                                 "explained_variance_median_2nd_half", ".3f")):
            if not math.isnan(h[key]):
                parts.append(f"{label} {h[key]:{fmt}}")
        parts += [f"reward {h['reward_first5']:+.3f} -> {h['reward_last5']:+.3f}",
                  f"KL (last 5) {h['kl_last5']:.2f}", f"updates median {h['updates_median']:.0f}",
                  f"NaN/inf: {'yes' if h['non_finite'] else 'no'}"]
        print(" | ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
