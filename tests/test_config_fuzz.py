"""``tokengym train`` settings from hypothesis-generated TOML files and flags (issue 15).

Whatever a ``--config`` TOML file and the flags hold, :func:`tokengym.train.resolve_settings`
either resolves them, keeping every value exactly as given (``beta = true`` is not 1.0, ``"ten"``
is not an iteration count), or stops with a ``SystemExit`` whose message names a key it was
given; never another exception (a raw ``KeyError``/``TypeError``/``ValueError`` traceback).
Nothing trains: the test stops right after argument resolution.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import json
import math
import tempfile
import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tokengym.agents.agent_config import RENAMED
from tokengym.agents.loop import RunConfig
from tokengym.agents.registry import available
from tokengym.train import IDENTITY_KEYS, _all_fields, add_arguments, resolve_settings

CONFIG_FIELDS = sorted(_all_fields())
RUN_FIELDS = RunConfig.field_names()
UNKNOWN = ["learning_rate", "Beta", "num-envs", "iterations_", "foo", "run", "config", "ppo",
           "eval", "resume", "out", "tensorboard_dir", ""]
KEYS = sorted({*CONFIG_FIELDS, *RUN_FIELDS, *IDENTITY_KEYS, *RENAMED, *UNKNOWN})

# ---------------------------------------------------------------------------------------------
# TOML values of every type, and a writer for them (tomllib only reads).

_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, 2, 3, 4, 16, -1, 10**6]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1e-5, 2e-5, 1.0, 1e6, -0.5, float("nan"), float("inf")]),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["ppo", "rloo", "grpo", "a2c", "sb3-ppo", "sample", "tiny-llama", "k3",
                     "tokengym/Length-v0", "float16", "cpu", "separate", "none", "ten", "1e-5",
                     "pkg.mod:attr", "os:system"]),
    st.dates(),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.times(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(min_size=1, max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _toml_string(text: str) -> str:
    out = json.dumps(text, ensure_ascii=False)  # JSON's escapes are TOML's, except DEL
    return out.replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(table: dict[str, Any]) -> str:
    return "".join(f"{_toml_string(k)} = {_toml_value(v)}\n" for k, v in table.items())


# ---------------------------------------------------------------------------------------------
# Flags: a few options of `tokengym train`, each with a random string value.

_PARSER = argparse.ArgumentParser()
add_arguments(_PARSER, "train")
_OPTIONS = {a.option_strings[0]: a for a in _PARSER._actions
            if a.option_strings and a.dest not in ("help", "resume", "config", "out")}
_ACTIONS = {o: a for a in _OPTIONS.values() for o in a.option_strings}
_FLAG_TEXT = st.one_of(st.text(max_size=10), st.sampled_from(
    ["1", "0", "-1", "3", "2e-5", "0.5", "nan", "inf", "-inf", "1e400", "none", "true", "ppo",
     "rloo", "sb3-a2c", "k3", "tiny-llama", "tokengym/Length-v0", "max_new_tokens=9", "x=",
     "=1", "separate", "bfloat16"]))


@st.composite
def _flags(draw: st.DrawFn) -> list[str]:
    argv: list[str] = []
    for option in draw(st.lists(st.sampled_from(sorted(_OPTIONS)), max_size=3)):
        action = _OPTIONS[option]
        if action.nargs == 0:  # --no-tensorboard, --adaptive-kl/--no-adaptive-kl
            argv.append(draw(st.sampled_from(action.option_strings)))
        else:
            argv.append(f"{option}={draw(_FLAG_TEXT)}")  # '=': values may start with '-'
    return argv


def _dashed(key: str) -> str:
    return key.replace("_", "-")


def _names(key: str) -> set[str]:
    """How an error message may name ``key``: as given, quoted, dashed, or under its new name."""
    out = {key, repr(key), _dashed(key)}
    if key in RENAMED:
        out |= {RENAMED[key], _dashed(RENAMED[key])}
    return out


def _resolve(table: dict[str, Any], flags: list[str]) -> tuple[Any, str]:
    """``(Settings or SystemExit, what argparse printed)``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.toml"
        path.write_text(toml_document(table), encoding="utf-8")
        assert tomllib.loads(path.read_text(encoding="utf-8")).keys() == table.keys()
        stderr = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stderr(stderr):
            warnings.simplefilter("ignore")  # deprecated names warn; that is not the point here
            try:
                args = _PARSER.parse_args(["--config", str(path), *flags])
                return resolve_settings(args), stderr.getvalue()
            except SystemExit as exc:
                return exc, stderr.getvalue()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(table=st.dictionaries(st.sampled_from(KEYS), _values, max_size=4), flags=_flags())
@example(table={"iterations": "ten"}, flags=[])
@example(table={"env_kwargs": 5}, flags=[])
@example(table={"beta": True}, flags=[])
@example(table={"beta": float("nan"), "lr": float("inf")}, flags=[])
@example(table={"agent": "no-such-agent"}, flags=[])
@example(table={"target_kl": 1.0, "adaptive_kl_target": 2.0}, flags=[])
@example(table={}, flags=["--target-kl=1", "--adaptive-kl-target=2"])
@example(table={"agent": "rloo"}, flags=["--vf-coef=0.5"])
def test_any_config_and_flags_resolve_or_exit_naming_the_key(table: dict[str, Any],
                                                             flags: list[str]) -> None:
    result, printed = _resolve(table, flags)
    given_names = set().union(*(_names(k) for k in table))
    flag_dests = {_ACTIONS[f.split("=", 1)[0]].dest for f in flags}
    given_names |= {f.split("=", 1)[0] for f in flags} | set().union(*map(_names, flag_dests))
    if isinstance(result, SystemExit):
        message = f"{result.code if not isinstance(result.code, int) else ''}{printed}"
        assert message.strip(), "SystemExit without a message"
        assert any(name and name in message for name in given_names), (
            f"the error names none of the keys given ({sorted(given_names)}): {message}")
        return
    # Resolved: every TOML value the run uses is the value given, not a coerced one.
    identity, run, config = result.identity, result.run, result.config
    for key, value in table.items():
        new = RENAMED.get(key, key)
        if new in flag_dests or key in flag_dests or (key == "env_kwargs" and
                                                      "env_kwarg" in flag_dests):
            continue
        if key in IDENTITY_KEYS:
            assert identity[key] == value, key
        elif key in RUN_FIELDS:
            assert getattr(run, key) == value and type(getattr(run, key)) is type(value), key
        else:
            assert dataclasses.is_dataclass(config) and new in config.field_names(), key
            got = getattr(config, new)
            assert got == value and type(got) is type(value), (key, got, value)
    assert identity["agent"] in available()


def test_the_toml_writer_round_trips() -> None:
    table = {"a": [1, 2.5, "x\x7f\n\"", {"b": True}], "when": dt.date(2024, 1, 2),
             "t": dt.time(1, 2, 3), "nan": float("nan"), "minus inf": -math.inf}
    back = tomllib.loads(toml_document(table))
    assert back["a"] == table["a"] and back["when"] == table["when"] and back["t"] == table["t"]
    assert math.isnan(back["nan"]) and back["minus inf"] == -math.inf


@pytest.mark.parametrize(("table", "flags", "named"), [
    ({"iterations": "ten"}, [], "iterations"),
    ({"env_kwargs": 5}, [], "env_kwargs"),
    ({"beta": True}, [], "beta"),
    ({"lr": float("inf")}, [], "lr"),
    ({"beta": float("nan")}, [], "beta"),
    ({"num_envs": 2.5}, [], "num_envs"),
    ({"whatever": 1}, [], "whatever"),
    ({}, ["--lr=nan"], "lr"),
    ({"agent": "no-such-agent"}, [], "agent"),
    ({"target_kl": 1.0, "adaptive_kl_target": 2.0}, [], "target_kl"),
    ({}, ["--target-kl=1", "--adaptive-kl-target=2"], "target_kl"),
], ids=lambda v: (" ".join(f"{k}={v[k]!r}" for k in v) if isinstance(v, dict) else
                  " ".join(v) if isinstance(v, list) else None))
def test_the_issue_cases_exit_naming_the_key(table: dict[str, Any], flags: list[str],
                                             named: str) -> None:
    result, printed = _resolve(table, flags)
    assert isinstance(result, SystemExit)
    assert any(name in f"{result.code}{printed}" for name in _names(named))
