"""Validation helpers shared by configs, envs and reward models: one message per kind of error.

Each returns the value (converted where that is safe) or raises a ``ValueError`` or
``TypeError`` naming the setting, the bad value and what is accepted.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np


def positive_int(name: str, value: Any, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[1, maximum]`` (numpy integers accepted; ``bool`` refused)."""
    return int_at_least(name, value, 1, maximum)


def int_at_least(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (``maximum=None``: no upper bound; numpy
    integers accepted; ``bool`` refused)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum
            or (maximum is not None and value > maximum)):
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        limit = "" if maximum is None else f" <= {maximum}"
        raise ValueError(f"{name} must be {what}{limit}, got {value!r}")
    return int(value)


def finite_number(name: str, value: Any, *, minimum: float | None = None,
                  exclusive: bool = False) -> float:
    """``value`` as a finite ``float`` (``> minimum`` when ``exclusive``, else ``>= minimum``).

    Ints, floats and numpy numbers are accepted; ``bool``, strings and other objects are a
    ``TypeError`` (never converted: ``"1.5"`` is refused, not read as 1.5); NaN, inf and values
    out of range a ``ValueError``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number (int or float), got {value!r} "
                        f"({type(value).__name__})")
    number = float(value)
    low_ok = minimum is None or (number > minimum if exclusive else number >= minimum)
    if not (math.isfinite(number) and low_ok):
        limit = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum:g}"
        raise ValueError(f"{name} must be a finite number{limit}, got {value!r}")
    return number


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (numpy bools too); anything else (``"false"``, 1,
    None) is a ``TypeError``, never read by its truthiness."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def keyword_arguments(name: str, value: Any) -> dict[str, Any]:
    """``value``, a mapping of keyword arguments (string keys), as a ``dict``; ``None`` is ``{}``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of keyword arguments (or None), got "
                        f"{type(value).__name__} {value!r}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise TypeError(f"{name} must have string keys (argument names), got {bad[0]!r}")
    return dict(value)


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


def factory_arguments(what: str, factory: Any, kwargs: dict[str, Any], where: str) -> None:
    """Refuse keyword arguments ``factory`` does not take, and missing required ones, naming
    what it accepts (rather than Python's bare ``__init__() got an unexpected keyword``).

    ``what`` names the thing built (``"reward model 'vader'"``), ``where`` says where its
    arguments go (``"an env's reward_model_kwargs={...}"``). A factory without an inspectable
    signature is let through (its call will speak)."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted = ", ".join(p.name for p in named) or "none"
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        unknown = sorted(set(kwargs) - {p.name for p in named})
        if unknown:
            raise TypeError(f"{what} got unknown keyword argument(s) {unknown}; accepted: "
                            f"{accepted}")
    missing = [p.name for p in named if p.default is p.empty and p.name not in kwargs]
    if missing:
        raise TypeError(f"{what} is missing required argument(s) {missing}: pass them "
                        f"{where}; accepted: {accepted}")
