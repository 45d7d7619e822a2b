"""Validation helpers shared by configs, envs and reward models: one message per kind of error.

Each returns the value (converted where that is safe) or raises ``ValueError`` naming the
setting, the bad value and what is accepted.
"""

from __future__ import annotations

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
