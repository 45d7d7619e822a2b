"""Building reward models: ``make("vader")``, ``make("pkg.mod:attr")``, ``make(DIR)``, ``register``.

Third-party packages register theirs through the entry-point group ``tokengym.reward_models``
(each entry point loads to a factory), so ``make("their-name")`` finds them after ``pip install``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from tokengym.reward_models.base import RewardFn
from tokengym.reward_models.preference import load_saved

ENTRY_POINT_GROUP = "tokengym.reward_models"

Factory = Callable[..., RewardFn]
_FACTORIES: dict[str, Factory] = {}


def register(name: str, factory: Factory, *, overwrite: bool = False) -> None:
    """Make ``make(name, **kwargs)`` build ``factory(**kwargs)``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"reward model name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    if name in _FACTORIES and not overwrite and _FACTORIES[name] is not factory:
        raise ValueError(f"reward model {name!r} is already registered; pass overwrite=True")
    _FACTORIES[name] = factory


def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _FACTORIES:
            _FACTORIES[ep.name] = ep.load()


def available() -> list[str]:
    """Names ``make`` accepts (built-ins, registered, and installed plugins)."""
    _load_entry_points()
    return sorted(_FACTORIES)


def _is_reward_function(obj: Any) -> bool:
    """A reward function takes (prompts, completions); a factory takes keyword arguments only."""
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [
        p for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def _from_import_string(spec: str, kwargs: dict[str, Any]) -> RewardFn:
    module_name, _, attr_path = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"reward model {spec!r}: cannot import module {module_name!r} ({exc})"
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"reward model {spec!r}: module {module_name!r} has no {attr_path!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"reward model {spec!r} is a {type(obj).__name__}, not a callable")
    if inspect.isclass(obj) or kwargs or not _is_reward_function(obj):
        return obj(**kwargs)
    return obj


def make(spec: str | os.PathLike[str] | RewardFn, **kwargs: Any) -> RewardFn:
    """Build a reward model.

    Args:
        spec: a registered name (``"vader"``, ``"keywords"``, ...), an import string
            ``"package.module:attribute"`` naming a reward function, a class or a factory, a
            path to a saved reward model directory (``tokengym train-rm --out DIR``), or an
            already-built reward model (returned unchanged).
        **kwargs: arguments for the factory or class (for a saved model: ``device``,
            ``batch_size``).

    Raises:
        ValueError: unknown name (the message lists the known ones and the closest match), or a
            directory that is not a saved reward model.
    """
    if isinstance(spec, os.PathLike) or (
        isinstance(spec, str) and spec not in _FACTORIES and os.path.isdir(spec)
    ):
        # A directory: checked before import strings, since Windows paths contain ':' too.
        return load_saved(spec, **kwargs)
    if not isinstance(spec, str):
        if not callable(spec):
            raise TypeError(
                "reward_model must be a name, an import string 'package.module:attribute', or a "
                f"callable rm(prompts, completions) -> floats; got {type(spec).__name__}"
            )
        if kwargs:
            raise TypeError(
                f"keyword arguments {sorted(kwargs)} given with an already-built reward model"
            )
        return spec
    if ":" in spec:
        return _from_import_string(spec, kwargs)
    if spec not in _FACTORIES:
        _load_entry_points()
    if spec not in _FACTORIES:
        known = sorted(_FACTORIES)
        close = difflib.get_close_matches(spec, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown reward model {spec!r}.{hint} Known: {', '.join(known)}; or pass an import "
            "string 'package.module:attribute', a saved reward model directory, or a callable."
        )
    return _FACTORIES[spec](**kwargs)
