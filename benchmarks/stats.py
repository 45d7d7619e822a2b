"""Mean and 95 % confidence interval over seeds (Student's t, two-sided)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

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
