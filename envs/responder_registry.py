"""Building responders: ``make_responder("calculator")``, ``"pkg.mod:attr"``, objects, ``register``.

Pluggable like reward models (:mod:`tokengym.reward_models.registry`): an env's ``responder=``
is a registered name (built with its factory and ``responder_kwargs``), an import string
``"package.module:attribute"``, a responder object, or a plain function ``f(transcript)``;
:func:`register_responder` (``tokengym.envs.register_responder``) adds a name.
Third-party packages register theirs through the entry-point group ``tokengym.responders``
(each entry point loads to a factory), so the name works after ``pip install``.

Factories are trusted only by name (registered, built in, or installed): an import string
resolves to a responder only (a function taking the transcript, or a class whose
``__call__(self, transcript)`` does), never to a factory called with settings, so
``responder="os:system"`` runs nothing. Importing the module still runs its code: only use import
strings you trust.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from tokengym.checks import factory_arguments
from tokengym.envs.responders import Responder, responder_name

__all__ = ["BUILTINS", "ENTRY_POINT_GROUP", "available", "make_responder", "register",
           "register_responder"]

ENTRY_POINT_GROUP = "tokengym.responders"

Factory = Callable[..., Responder]
_FACTORIES: dict[str, Factory] = {}

# Built-ins by import string, imported on first use: the LM and textarena responders pull in
# torch models or an optional package that a plain env must not pay for.
BUILTINS: dict[str, str] = {
    "echo": "tokengym.envs.responders:EchoResponder",
    "calculator": "tokengym.envs.tasks.calculator:CalculatorResponder",
    "guess-number": "tokengym.envs.tasks.guess_number:GuessNumberResponder",
    "lm-user": "tokengym.envs.tasks.lm_responder:LMResponder",
    "textarena": "tokengym.envs.adapters.textarena_adapter:TextArenaResponder",
}

_ACCEPTED = ("a responder is a registered name, an import string 'package.module:attribute' naming "
             "a function f(transcript) or a class whose __call__(self, transcript) takes it, a "
             "responder object, or a plain function f(transcript) -> Reply | str | None")


def register_responder(name: str, factory: Factory, *, overwrite: bool = False) -> None:
    """Make ``make_responder(name, **kwargs)`` build ``factory(**kwargs)``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"responder name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for responder {name!r} must be callable, got {type(factory).__name__}")
    known = name in _FACTORIES or name in BUILTINS
    if known and not overwrite and _FACTORIES.get(name) is not factory:
        raise ValueError(f"responder {name!r} is already registered; pass overwrite=True")
    _FACTORIES[name] = factory


register = register_responder
"""The same function as :func:`register_responder` (named like ``tokengym.reward_models.register``)."""


def _builtin(name: str) -> Factory:
    module, _, attr = BUILTINS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _FACTORIES and ep.name not in BUILTINS:
            _FACTORIES[ep.name] = ep.load()


def available() -> list[str]:
    """Names :func:`make_responder` accepts (built-ins, registered, installed plugins)."""
    _load_entry_points()
    return sorted(set(_FACTORIES) | set(BUILTINS))


def _one_argument_problem(sig: inspect.Signature, *, drop_self: bool = False) -> str | None:
    """Why a callable with this signature cannot be called as ``f(transcript)``; None if it can."""
    params = list(sig.parameters.values())
    if drop_self and params and params[0].kind is not inspect.Parameter.VAR_POSITIONAL:
        params = params[1:]
    try:
        inspect.Signature(params).bind(None)
    except TypeError:
        return f"its signature ({', '.join(map(str, params))}) cannot take one transcript"
    return None


def _check_arguments(name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    factory_arguments(f"responder {name!r}", factory, kwargs, "in responder_kwargs={...}")


def _from_import_string(spec: str, kwargs: dict[str, Any]) -> Responder:
    module_name, _, attr_path = spec.partition(":")
    if not module_name or module_name.startswith(".") or not attr_path:
        raise ValueError(f"responder {spec!r}: an import string is 'package.module:attribute' "
                         "(absolute module, non-empty attribute)")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"responder {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"responder {spec!r}: module {module_name!r} has no {attr_path!r}")
        obj = getattr(obj, part)
    home = getattr(obj, "__module__", None) or module_name
    if inspect.isbuiltin(obj) or home.partition(".")[0] in sys.stdlib_module_names:
        # A one-argument function of the standard library (os.system, os.remove...) would pass
        # the signature check; none is a responder, so none is ever called.
        raise TypeError(f"responder {spec!r} is a builtin or standard-library callable, not a "
                        f"responder; {_ACCEPTED}. It was not called")
    if inspect.isclass(obj):
        call = next((vars(k)["__call__"] for k in obj.__mro__ if "__call__" in vars(k)), None)
        if not inspect.isfunction(call):
            raise TypeError(f"responder {spec!r} is a class without a plain __call__(self, "
                            f"transcript); {_ACCEPTED}. It was not instantiated")
        problem = _one_argument_problem(inspect.signature(call), drop_self=True)
        if problem is not None:
            raise TypeError(f"responder {spec!r} is a class whose __call__ is not a responder: "
                            f"{problem}; {_ACCEPTED}. It was not instantiated")
        _check_arguments(spec, obj, kwargs)
        return obj(**kwargs)
    if not callable(obj):
        raise TypeError(f"responder {spec!r} is a {type(obj).__name__}, not callable; {_ACCEPTED}")
    try:
        problem = _one_argument_problem(inspect.signature(obj))
    except (TypeError, ValueError):
        problem = "its signature cannot be inspected"
    if problem is not None:
        raise TypeError(f"responder {spec!r} is a {type(obj).__name__} that is not a responder: "
                        f"{problem}; {_ACCEPTED}. It was not called; register factories by name "
                        "with tokengym.envs.register_responder(name, factory)")
    if kwargs:
        raise TypeError(f"responder_kwargs {sorted(kwargs)} given with the responder function "
                        f"{spec!r}, which is used as is; register a factory by name to build "
                        "one from settings")
    return obj


def make_responder(spec: Any, **kwargs: Any) -> Responder:
    """Build a responder.

    Args:
        spec: a registered or built-in name (``"echo"``, ``"calculator"``, ``"guess-number"``,
            ``"lm-user"``, ``"textarena"``, or a plugin's), an import string
            ``"package.module:attribute"`` (a function taking the transcript, used as is, or a
            class whose ``__call__(self, transcript)`` does, instantiated with ``kwargs``), or a
            responder object / plain function (returned unchanged).
        **kwargs: the factory's or class's arguments (an env's ``responder_kwargs``).

    Raises:
        ValueError: an unknown name (the message lists the known ones and the closest), a module
            that cannot be imported, a missing attribute.
        TypeError: something that is not a responder (not callable, a class instead of an
            instance, a callable that cannot take one transcript), keyword arguments with an
            already-built responder or function, keywords a factory does not take.
    """
    if not isinstance(spec, str):
        if inspect.isclass(spec):
            raise TypeError(f"responder is the class {spec.__name__}, not a responder: pass an "
                            f"instance ({spec.__name__}(...)), a registered name with "
                            f"responder_kwargs, or an import string 'module:{spec.__name__}'")
        if not callable(spec):
            raise TypeError(f"responder must be a name, an import string or a callable "
                            f"f(transcript); got {type(spec).__name__} {spec!r:.60}")
        try:
            problem = _one_argument_problem(inspect.signature(spec))
        except (TypeError, ValueError):
            problem = None  # no signature to inspect (some builtins): trust it
        if problem is not None:
            raise TypeError(f"responder {responder_name(spec)!r}: {problem}; {_ACCEPTED}")
        if kwargs:
            raise TypeError(f"responder_kwargs {sorted(kwargs)} given with an already-built "
                            "responder; pass a registered name to build one from settings")
        return spec
    if ":" in spec:
        return _from_import_string(spec, kwargs)
    if spec not in _FACTORIES and spec not in BUILTINS:
        _load_entry_points()
    if spec in _FACTORIES:
        factory = _FACTORIES[spec]
    elif spec in BUILTINS:
        factory = _builtin(spec)
    else:
        known = available()
        close = difflib.get_close_matches(spec, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown responder {spec!r}.{hint} Known: {', '.join(known)}; or pass "
                         "an import string 'package.module:attribute', an object or a function")
    _check_arguments(spec, factory, kwargs)
    return factory(**kwargs)
