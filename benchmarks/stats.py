"""The report's statistics, from per-run numbers alone.

- mean and 95 % confidence interval over seeds (Student's t, two-sided): :func:`mean_ci95`;
- paired differences on the same seeds (Student's t over the differences):
  :func:`paired_difference`;
- the interquartile mean (IQM) with a stratified bootstrap interval (resampling seeds within each
  task; Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice"): :func:`iqm`,
  :func:`stratified_bootstrap_ci`;
- reward at matched KL: piecewise-linear interpolation along a frontier of (KL, reward) points,
  with a bootstrap over seeds: :func:`interpolate`, :func:`matched_grid`,
  :func:`bootstrap_interpolated`.

Bootstraps draw from ``numpy.random.default_rng(seed)`` with a fixed seed, so a report
regenerated from the same logs has the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# Two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom; beyond, the normal 1.96.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)


def t_quantile_975(dof: int) -> float:
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    return _T975[dof - 1] if dof <= len(_T975) else 1.96


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, half_width)``: the 95 % CI is mean ± half_width; half_width is NaN for one value."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, math.nan
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, t_quantile_975(len(xs) - 1) * math.sqrt(var / len(xs))


def format_ci(mean: float, half: float, digits: int = 3) -> str:
    """``"0.512 ± 0.031"``, or just the mean when there is no interval."""
    if math.isnan(mean):
        return "–"
    if math.isnan(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def aggregate(rows: Sequence[dict[str, Any]], key: str) -> tuple[float, float, int]:
    """``(mean, 95 % CI half-width, n)`` of ``key`` over ``rows`` (NaNs dropped)."""
    values = [float(r[key]) for r in rows
              if r.get(key) is not None and not math.isnan(float(r[key]))]
    mean, half = mean_ci95(values)
    return mean, half, len(values)


# -- paired differences ---------------------------------------------------------------------------
def paired_difference(values: dict[int, float], baseline: dict[int, float]
                      ) -> tuple[float, float, int]:
    """``(mean, 95 % CI half-width, n)`` of ``values[k] - baseline[k]`` over the seeds ``k``
    present (and not NaN) in both: a paired comparison, Student's t over the n differences
    (half-width NaN when n < 2)."""
    diffs = [values[k] - baseline[k] for k in sorted(set(values) & set(baseline))
             if not (math.isnan(values[k]) or math.isnan(baseline[k]))]
    mean, half = mean_ci95(diffs)
    return mean, half, len(diffs)


def ci_includes_zero(mean: float, half: float) -> bool:
    """Whether ``mean ± half`` contains 0 (``False`` without an interval)."""
    return not math.isnan(half) and mean - half <= 0.0 <= mean + half


# -- interquartile mean and the stratified bootstrap (Agarwal et al. 2021) -----------------------
def iqm(values: Sequence[float] | np.ndarray, axis: int = -1) -> Any:
    """Interquartile mean: the mean of the values left once ``floor(n / 4)`` of the smallest
    and of the largest are dropped (``scipy.stats.trim_mean(x, 0.25)``, as ``rliable`` computes
    it); along ``axis`` of an array."""
    x = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = x.shape[axis]
    if n == 0:
        return math.nan
    cut = n // 4
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stratified_bootstrap_ci(scores: Sequence[Sequence[float]], statistic: Any = iqm,
                            reps: int = 2000, seed: int = 0, level: float = 0.95
                            ) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over all of ``scores`` (one sequence of
    per-seed scores per task): each resample draws every task's seeds with replacement within
    that task (a stratified bootstrap: each task keeps its number of runs), then applies
    ``statistic`` to the pooled scores. ``statistic`` takes an array and ``axis``. NaNs when a
    task has fewer than 2 scores (nothing to resample)."""
    groups = [np.asarray(s, dtype=float) for s in scores if len(s)]
    if not groups or min(len(g) for g in groups) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([g[rng.integers(0, len(g), size=(reps, len(g)))] for g in groups],
                            axis=1)
    stats = np.asarray(statistic(pooled, axis=1))
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(stats, [tail, 100.0 - tail])
    return float(lo), float(hi)


def normalised(reward: float, baseline: float, best: float) -> float:
    """``(reward - baseline) / (best - baseline)``: 0 at the baseline (the untrained policy's
    mean reward), 1 at the task's best possible reward."""
    return (reward - baseline) / (best - baseline)


# -- reward at matched KL ------------------------------------------------------------------------
def interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear ``y`` at ``x`` through ``(x, y)`` points (any order; points with the same
    ``x`` averaged); NaN when ``x`` lies outside the points' range (no extrapolation)."""
    if not points:
        return math.nan
    by_x: dict[float, list[float]] = {}
    for px, py in points:
        by_x.setdefault(float(px), []).append(float(py))
    xs = sorted(by_x)
    if not xs[0] <= x <= xs[-1]:
        return math.nan
    return float(np.interp(x, xs, [sum(by_x[v]) / len(by_x[v]) for v in xs]))


def matched_grid(ranges: Sequence[tuple[float, float]], count: int = 3) -> tuple[list[float], bool]:
    """``count`` KL values evenly spaced strictly inside (at 1/(count+1), 2/(count+1), ... of)
    the interval every ``(low, high)`` range covers, and ``True``; when the ranges share no
    interval, the same spacing over their union and ``False`` (some ranges then miss some
    values). ``([], False)`` without ranges."""
    if not ranges:
        return [], False
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    overlap = lo < hi
    if not overlap:
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return [lo + (hi - lo) * (i + 1) / (count + 1) for i in range(count)], overlap


def bootstrap_interpolated(variants: Sequence[tuple[Sequence[float], Sequence[float]]], x: float,
                           reps: int = 2000, seed: int = 0, level: float = 0.95
                           ) -> tuple[float, float, float]:
    """Bootstrap interval of :func:`interpolate` at ``x`` of a frontier: ``variants`` holds, per
    point, its seeds' ``(kls, rewards)``; each resample redraws every point's seeds with
    replacement (points independently), takes the means, and interpolates. Returns ``(low,
    high, covered)``: the percentile interval over the resamples whose frontier reaches ``x``
    and the fraction of resamples that did; NaNs when a point has fewer than 2 seeds."""
    if not variants or min(len(k) for k, _ in variants) < 2:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    kl_means, reward_means = [], []
    for kls, rewards in variants:
        idx = rng.integers(0, len(kls), size=(reps, len(kls)))
        kl_means.append(np.asarray(kls, dtype=float)[idx].mean(axis=1))
        reward_means.append(np.asarray(rewards, dtype=float)[idx].mean(axis=1))
    kl_arr, reward_arr = np.stack(kl_means, axis=1), np.stack(reward_means, axis=1)
    values = np.array([interpolate(list(zip(kl_arr[b], reward_arr[b])), x) for b in range(reps)])
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan, 0.0
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi), len(values) / reps
