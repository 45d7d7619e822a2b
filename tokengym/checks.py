"""Validation helpers shared by configs, envs and reward models: one message per kind of error.

Each returns the value (converted where that is safe) or raises ``ValueError`` naming the
setting, the bad value and what is accepted.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` >= 1 (numpy integers accepted; ``bool`` refused)."""
    return int_at_least(name, value, 1)


def int_at_least(name: str, value: Any, minimum: int) -> int:
    """``value`` as an ``int`` >= ``minimum`` (numpy integers accepted; ``bool`` refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


class NonFiniteError(RuntimeError):
    """Training met a NaN or inf (a reward, a gradient, a weight). Raised before the optimizer
    step that would spread it (or right after the step that made a weight non-finite), so no
    checkpoint of the run ever holds it."""


FLOAT32_MAX = 3.4028234663852886e38


def finite_reward(value: float, where: str) -> float:
    """``value`` if it is finite and survives the cast to float32 (rollouts store rewards as
    float32: 1e39 is finite in float64 but inf there); :class:`NonFiniteError` otherwise."""
    value = float(value)
    if not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
        raise NonFiniteError(f"{where}: reward {value!r} is not a finite float32 (|r| <= "
                             f"{FLOAT32_MAX:.3g}); check the reward model")
    return value
