"""Building reward models: ``make("vader")``, ``make("pkg.mod:attr")``, ``make(DIR)``, ``register``.

Third-party packages register theirs through the entry-point group ``tokengym.reward_models``
(each entry point loads to a factory), so ``make("their-name")`` finds them after ``pip install``.

Factories are trusted only by name (registered or installed): an import string resolves to a
reward model only (a reward function, or a class whose instances are one), never to a factory
called with settings, so a setting such as ``reward_model="os:system"`` runs nothing. Importing
the module still runs its code: only use import strings you trust.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import types
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from tokengym.checks import factory_arguments
from tokengym.reward_models.base import RewardFn, reward_model_name
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


_ACCEPTED = (
    "an import string must name a reward model: a function (or callable object) taking "
    "(prompts, completions) positionally, or a class whose __call__(self, prompts, completions) "
    "does, instantiated with the keyword arguments"
)
_FACTORY_HINT = (
    "to build a reward model from settings with anything else (a factory function, a class "
    "without that __call__), register the factory by name with "
    "tokengym.reward_models.register(name, factory) or the 'tokengym.reward_models' entry-point "
    "group, and use that name"
)


def _signature_problem(sig: inspect.Signature, *, drop_self: bool = False) -> str | None:
    """Why a callable with this signature cannot be called as ``rm(prompts, completions)``.

    ``None`` when it can: two positional parameters without defaults come first (or ``*args``
    takes what is missing); any other parameter must be fillable by a prompt-record field
    (keyword-only, keyword-capable, or defaulted).
    """
    params = list(sig.parameters.values())
    if drop_self:
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        ):
            return f"__call__{sig} takes no self"
        if params[0].kind is not inspect.Parameter.VAR_POSITIONAL:
            params = params[1:]
    positional = [
        p for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    var_positional = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    shown = f"({', '.join(str(p) for p in params)})"
    if len(positional) < 2 and not var_positional:
        return f"its signature {shown} does not take (prompts, completions) positionally"
    if any(p.default is not p.empty for p in positional[:2]):
        return f"its signature {shown} gives (prompts, completions) defaults"
    if any(p.kind is p.POSITIONAL_ONLY and p.default is p.empty for p in positional[2:]):
        return (
            f"its signature {shown} needs more than (prompts, completions) positionally"
        )
    return None


def _class_call(cls: type) -> Any:
    """The ``__call__`` instances of ``cls`` would use, looked up without instantiating it;
    ``None`` when the class defines none (``object`` has none, ``type.__call__`` is the class's
    own instantiation)."""
    for klass in cls.__mro__:
        if "__call__" in vars(klass):
            return vars(klass)["__call__"]
    return None


def _class_problem(cls: type) -> str | None:
    raw = _class_call(cls)
    if raw is None:
        return "a class whose instances are not callable (it defines no __call__)"
    if isinstance(raw, staticmethod):
        target, drop_self = raw.__func__, False
    elif isinstance(raw, classmethod):
        target, drop_self = raw.__get__(None, cls), False
    elif inspect.isfunction(raw) or isinstance(
        raw, (types.WrapperDescriptorType, types.MethodDescriptorType)
    ):
        target, drop_self = raw, True  # bound to the instance: the first parameter is self
    elif hasattr(type(raw), "__get__"):
        return "a class whose __call__ is a descriptor that cannot be inspected without an instance"
    else:
        target, drop_self = raw, False  # a callable object: called without self
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return "a class whose __call__ has no signature to inspect"
    problem = _signature_problem(sig, drop_self=drop_self)
    return None if problem is None else f"a class whose __call__ is not a reward model: {problem}"


def _check_arguments(name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    factory_arguments(f"reward model {name!r}", factory, kwargs,
                      "as keyword arguments (an env's reward_model_kwargs={...})")


def _check_callable(rm: Any) -> None:
    """An already-built reward model: callable as ``rm(prompts, completions)``, not a class."""
    if inspect.isclass(rm):
        raise TypeError(
            f"reward_model is the class {rm.__name__}, not a reward model: pass an instance "
            f"({rm.__name__}(...)), a registered name with reward_model_kwargs, or an import "
            f"string 'module:{rm.__name__}'"
        )
    try:
        sig = inspect.signature(rm)
    except (TypeError, ValueError):  # no signature to inspect (some builtins): trust it
        return
    try:
        sig.bind_partial(None, None)
    except TypeError:
        raise TypeError(
            f"reward_model {reward_model_name(rm)!r} has the signature {sig}, which does not take "
            "(prompts, completions) positionally; a reward model is rm(prompts, completions, "
            "**fields) -> n floats"
        ) from None


def _from_import_string(spec: str, kwargs: dict[str, Any]) -> RewardFn:
    """Resolve ``"package.module:attribute"`` to a reward model, and nothing else.

    Importing the module runs its code: only use import strings you trust (``tokengym train
    --resume`` asks for an opt-in before it imports those a run directory names; see ``tokengym
    train --help``). What the attribute may be:

    * a function or callable object whose signature takes ``(prompts, completions)``
      positionally (two positional parameters without defaults, or ``*args``; more keyword or
      defaulted parameters receive prompt-record fields): returned as is; keyword arguments with
      it are a ``TypeError``;
    * a class whose ``__call__(self, prompts, completions, ...)`` has that signature, checked on
      the class before anything is instantiated: instantiated with ``kwargs``.

    Anything else (not callable, a function of another signature such as ``os.getcwd`` or
    ``os.system``, a class without such a ``__call__``, a builtin whose signature cannot be
    inspected, a factory function) is refused and never called: factories are registered by name
    (:func:`register`, or the ``tokengym.reward_models`` entry-point group), which is how a
    reward model is built from settings.
    """
    module_name, _, attr_path = spec.partition(":")
    if not module_name or module_name.startswith(".") or not attr_path:
        raise ValueError(
            f"reward model {spec!r}: an import string is 'package.module:attribute' (absolute "
            "module, non-empty attribute)"
        )
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
    if inspect.isclass(obj):
        problem = _class_problem(obj)
        if problem is not None:
            raise TypeError(
                f"reward model {spec!r} is {problem}; {_ACCEPTED}. It was not instantiated; "
                f"{_FACTORY_HINT}"
            )
        _check_arguments(spec, obj, kwargs)
        return obj(**kwargs)
    if not callable(obj):
        raise TypeError(
            f"reward model {spec!r} is a {type(obj).__name__}, not callable; {_ACCEPTED}; "
            f"{_FACTORY_HINT}"
        )
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        raise TypeError(
            f"reward model {spec!r} is a {type(obj).__name__} whose signature cannot be "
            f"inspected, so it cannot be shown to be a reward model; {_ACCEPTED}; {_FACTORY_HINT}"
        ) from None
    problem = _signature_problem(sig)
    if problem is not None:
        raise TypeError(
            f"reward model {spec!r} is a {type(obj).__name__} that is not a reward model: "
            f"{problem}; {_ACCEPTED}. It was not called; {_FACTORY_HINT}"
        )
    if kwargs:
        raise TypeError(
            f"keyword arguments {sorted(kwargs)} given with a reward function {spec!r}, which is "
            "used as is; register a factory with tokengym.reward_models.register(name, factory) "
            "to build one from settings"
        )
    return obj


def make(spec: str | os.PathLike[str] | RewardFn, **kwargs: Any) -> RewardFn:
    """Build a reward model.

    Args:
        spec: a registered name (``"vader"``, ``"keywords"``, ...; built with its factory), an
            import string ``"package.module:attribute"`` naming a reward function or a class
            whose ``__call__(self, prompts, completions)`` makes its instances reward models (not
            a factory: register those by name), a path to a saved reward model directory
            (``tokengym train-rm --out DIR``), or an already-built reward model (returned
            unchanged).
        **kwargs: arguments for the registered factory or the class (for a saved model:
            ``device``, ``batch_size``); none with a reward function.

    An import string imports that module, which runs its code: only use import strings you
    trust. ``tokengym train --resume`` imports those a run directory names only with the user's
    opt-in (see ``tokengym train --help``).

    Raises:
        ValueError: unknown name (the message lists the known ones and the closest match), a
            module that cannot be imported, or a directory that is not a saved reward model.
        TypeError: an import string naming something that is not a reward model (see
            :func:`_from_import_string`), keyword arguments given with a reward function,
            keyword arguments a factory does not take (or missing required ones; the message
            lists those it accepts), a class instead of an instance, or a callable that cannot
            be called as ``rm(prompts, completions)``.
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
        _check_callable(spec)
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
    _check_arguments(spec, _FACTORIES[spec], kwargs)
    return _FACTORIES[spec](**kwargs)
