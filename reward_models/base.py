"""The reward-model contract, and the one function every env and agent uses to call a reward model.

Contract
--------
A reward model is any callable::

    rm(prompts: Sequence[str], completions: Sequence[str], **fields) -> array-like of n floats

``prompts[i]`` is the prompt text the policy saw (before any chat template), ``completions[i]``
the text it generated (stop token excluded). ``fields`` carries per-prompt data from prompt
records (for example ``answer=[...]`` or ``keywords=[[...], ...]``), one list entry per sample;
only the fields the callable names in its signature are passed (all of them if it takes
``**kwargs``), so a plain two-argument function works with any prompt set. Reward models must be
deterministic for the same inputs.

The result is n real numbers: a list or tuple of ints, floats, bools or numpy numbers, or a 1-D
numeric numpy array or torch tensor (any float dtype, bfloat16 included). Strings, bytes, None
and other objects are refused, never converted (``["1.5"]`` is an error, not 1.5), and so is a
value that is not finite once stored as float32 (1e39).

A reward model may also provide ``score_with_components(prompts, completions, **fields)``
returning ``(rewards, {component_name: scores})``; the env then reports each component in its
``info["reward_components"]``. Otherwise the breakdown is ``{name: rewards}``.

When a reward model raises on a batch of at most 64, :func:`score` calls it again on each sample
alone to name the sample that fails (reward models are deterministic, so this is safe).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

RewardFn = Callable[..., Any]

_EXCERPT_CHARS = 60
_LOCATE_LIMIT = 64


class RewardModelError(RuntimeError):
    """A reward model raised, or returned something that is not n finite floats.

    Attributes:
        model_name: the reward model's name.
        index: index of the offending sample in the batch, or ``None`` when the whole call failed.
        excerpt: a short excerpt of the offending completion (or of the batch's first one).
    """

    def __init__(self, message: str, *, model_name: str, index: int | None, excerpt: str) -> None:
        super().__init__(message)
        self.model_name = model_name
        self.index = index
        self.excerpt = excerpt


def reward_model_name(rm: RewardFn) -> str:
    """``rm.name`` if set, else the function or class name."""
    name = getattr(rm, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(rm, "__name__", type(rm).__name__)


def excerpt(text: str, limit: int = _EXCERPT_CHARS) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _accepted_fields(fn: Callable[..., Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    if not fields:
        return {}
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: pass nothing extra
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(fields)
    names = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    return {k: v for k, v in fields.items() if k in names}


_ACCEPTED = (
    "a reward is an int, float or bool, a numpy number or a 0-d numeric array/tensor; a batch of "
    "them is a list or tuple of those, or a 1-D numeric numpy array or torch tensor"
)


def _tensor_to_numpy(x: Any) -> Any:
    """A torch tensor as a numpy array (bfloat16 and other floats through float64)."""
    t = x.detach().cpu()
    return (t.double() if t.is_floating_point() else t).numpy()


def _is_bad_entry(x: Any) -> bool:
    """True for a scalar entry that is not a real number (bool counts as one, as in numpy): a str,
    bytes, None, a complex or any other object. Nested sequences are left to the shape check."""
    if isinstance(x, (numbers.Real, np.bool_, list, tuple)):
        return False
    if hasattr(x, "detach") and hasattr(x, "is_floating_point"):  # a torch tensor
        x = _tensor_to_numpy(x)
    if isinstance(x, np.ndarray):
        return x.ndim == 0 and x.dtype.kind not in "biuf"
    return True


def _first_non_number(raw: Any) -> tuple[int, Any] | None:
    """``(index, value)`` of the first entry of a 1-D ``raw`` that is not a number, else None."""
    if isinstance(raw, np.ndarray):
        if raw.ndim != 1 or raw.dtype.kind in "biuf":
            return None
        entries = raw.tolist() if raw.dtype.kind in "USV" else list(raw)
    elif isinstance(raw, (list, tuple)):
        entries = list(raw)
    else:
        return None
    return next(((i, x) for i, x in enumerate(entries) if _is_bad_entry(x)), None)


def _as_rewards(raw: Any, n: int, name: str, completions: Sequence[str], what: str) -> np.ndarray:
    first = excerpt(completions[0]) if n else ""
    if hasattr(raw, "detach") and hasattr(raw, "is_floating_point"):  # a torch tensor
        raw = _tensor_to_numpy(raw)
    if isinstance(raw, (str, bytes, bytearray, Mapping)) or raw is None:
        raise RewardModelError(
            f"reward model {name!r} returned "
            f"{'None' if raw is None else type(raw).__name__ + ' ' + _short_repr(raw)} for {what}, "
            f"which is not an array-like of {n} floats; {_ACCEPTED}",
            model_name=name, index=None, excerpt=first,
        )
    bad = _first_non_number(raw)
    if bad is not None:
        i, value = bad
        text = excerpt(completions[i]) if i < n else first
        raise RewardModelError(
            f"reward model {name!r} returned {_short_repr(value)} ({type(value).__name__}) for "
            f"sample {i} of a batch of {n} ({what}), so the result is not an array-like of {n} "
            f"floats: rewards are never converted from strings or objects; {_ACCEPTED}. "
            f"Completion: {text!r}",
            model_name=name, index=i if i < n else None, excerpt=text,
        )
    try:
        values = np.asarray(raw)
        if values.dtype.kind == "O" and values.ndim == 1:  # entries checked above: numbers
            values = np.asarray(raw, dtype=np.float64)
        if values.dtype.kind not in "biuf":  # complex, dates, strings or objects nested deeper
            raise TypeError(f"dtype {values.dtype} is not a real-number type")
        values = values.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise RewardModelError(
            f"reward model {name!r} returned {type(raw).__name__} for {what}, which is not an "
            f"array-like of {n} floats ({exc}); {_ACCEPTED}",
            model_name=name, index=None, excerpt=first,
        ) from None
    if values.shape != (n,):
        raise RewardModelError(
            f"reward model {name!r} returned shape {values.shape} for {what}; expected ({n},), "
            "one float per completion",
            model_name=name, index=None, excerpt=first,
        )
    with np.errstate(over="ignore"):
        as_float32 = values.astype(np.float32)
    bad_i = np.flatnonzero(~np.isfinite(as_float32))
    if bad_i.size:
        i = int(bad_i[0])
        why = ("rewards must be finite" if not np.isfinite(values[i]) else
               f"it overflows float32, the dtype rewards are kept in (|r| <= "
               f"{float(np.finfo(np.float32).max):.4g})")
        raise RewardModelError(
            f"reward model {name!r} returned {values[i]} for sample {i} of a batch of {n} "
            f"({what}); {why}. Completion: {excerpt(completions[i])!r}",
            model_name=name, index=i, excerpt=excerpt(completions[i]),
        )
    return as_float32


def _short_repr(value: Any, limit: int = _EXCERPT_CHARS) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _locate_failure(
    call: Callable[..., Any], prompts: Sequence[str], completions: Sequence[str],
    kwargs: Mapping[str, Any],
) -> int | None:
    """Index of the first sample on which ``call`` raises when called on it alone.

    Only a batch call says *that* it failed; re-scoring samples one by one (batches of at most
    ``_LOCATE_LIMIT``, on the failure path only) says *which* sample did. ``None`` when the batch
    is too large, or when every sample alone succeeds (a batch-level fault, e.g. out of memory).
    """
    n = len(completions)
    if n == 1:
        return 0
    if n > _LOCATE_LIMIT:
        return None
    for i in range(n):
        try:
            one = {k: [v[i]] for k, v in kwargs.items()}
            call([prompts[i]], [completions[i]], **one)
        except Exception:
            return i
    return None


def score(
    rm: RewardFn,
    prompts: Sequence[str],
    completions: Sequence[str],
    fields: Mapping[str, Sequence[Any]] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Call a reward model on one batch and check what it returns.

    Args:
        rm: a reward model (see the module docstring).
        prompts: n prompt texts.
        completions: n completion texts.
        fields: per-prompt data, each value a sequence of n entries.

    Returns:
        ``(rewards, components)``: rewards of shape ``(n,)``, float32; components maps each
        component name to its ``(n,)`` float32 scores.

    Raises:
        RewardModelError: the reward model raised, or returned the wrong shape or non-finite
            values. The message names the model, the sample index and an excerpt of its text.
    """
    n = len(completions)
    if len(prompts) != n:
        raise ValueError(f"got {len(prompts)} prompts for {n} completions")
    name = reward_model_name(rm)
    fields = fields or {}
    fn = getattr(rm, "score_with_components", None)
    call = fn if callable(fn) else rm
    kwargs = _accepted_fields(call, fields)
    try:
        raw = call(list(prompts), list(completions), **kwargs)
    except RewardModelError:
        raise
    except Exception as exc:
        i = _locate_failure(call, prompts, completions, kwargs)
        if i is None:
            first = excerpt(completions[0]) if n else ""
            raise RewardModelError(
                f"reward model {name!r} raised {type(exc).__name__}: {exc} (batch of {n}; "
                f"first completion: {first!r})",
                model_name=name, index=None, excerpt=first,
            ) from exc
        raise RewardModelError(
            f"reward model {name!r} raised {type(exc).__name__}: {exc} on sample {i} of a batch "
            f"of {n}. Completion: {excerpt(completions[i])!r}",
            model_name=name, index=i, excerpt=excerpt(completions[i]),
        ) from exc
    if call is fn:
        if not (isinstance(raw, tuple) and len(raw) == 2 and isinstance(raw[1], Mapping)):
            raise RewardModelError(
                f"reward model {name!r}: score_with_components must return (rewards, dict), got "
                f"{type(raw).__name__}",
                model_name=name, index=None, excerpt="",
            )
        rewards = _as_rewards(raw[0], n, name, completions, "the total")
        components = {
            str(k): _as_rewards(v, n, name, completions, f"component {k!r}")
            for k, v in raw[1].items()
        }
        return rewards, components
    rewards = _as_rewards(raw, n, name, completions, "the batch")
    return rewards, {name: rewards}
