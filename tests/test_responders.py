"""Responders: the registry (names, import strings, objects, functions, entry points) and bad ones."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from conftest import length_reward

from tokengym.envs import Reply, ResponderError, TextGenEnv, make_responder, register_responder
from tokengym.envs import responder_registry as registry
from tokengym.envs.responders import EchoResponder


def make_env(tokenizer, responder, **kwargs) -> TextGenEnv:
    kwargs.setdefault("max_new_tokens", 12)
    return TextGenEnv(prompts=["Say something:"], tokenizer=tokenizer, reward_model=length_reward,
                      responder=responder, max_prompt_tokens=16, max_turn_tokens=2, **kwargs)


class Counter:
    """A responder class for import strings: ``__call__(self, transcript)``."""

    def __init__(self, step: int = 1) -> None:
        self.step = step

    def __call__(self, transcript):
        return Reply(text=f" {transcript.turn * self.step}")


def plain(transcript):
    return "plain"


@pytest.fixture
def plugin_module(monkeypatch):
    module = types.ModuleType("tg_test_responders")
    module.Counter, module.plain, module.not_callable = Counter, plain, 3
    module.two_args = lambda a, b: None
    monkeypatch.setitem(sys.modules, "tg_test_responders", module)
    return module


def test_every_kind_of_spec(tokenizer, plugin_module):
    assert isinstance(make_responder("echo"), EchoResponder)
    assert make_responder(plain) is plain
    obj = Counter()
    assert make_responder(obj) is obj
    assert make_responder("tg_test_responders:Counter", step=3).step == 3
    assert make_responder("tg_test_responders:plain") is plain
    register_responder("counter-x", Counter, overwrite=True)
    assert make_responder("counter-x", step=2).step == 2
    assert {"echo", "calculator", "guess-number", "lm-user", "textarena", "counter-x"} <= set(
        registry.available())
    env = make_env(tokenizer, "counter-x", responder_kwargs={"step": 5})
    env.reset(seed=0)
    env.step(1000)
    assert env.step(1000)[4]["inserted_text"] == " 0"


def test_entry_points_are_found(monkeypatch):
    class EP:
        name = "from-plugin"

        def load(self):
            return Counter

    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [EP()] if group == "tokengym.responders" else [])
    monkeypatch.delitem(registry._FACTORIES, "from-plugin", raising=False)
    assert isinstance(make_responder("from-plugin"), Counter)
    monkeypatch.delitem(registry._FACTORIES, "from-plugin", raising=False)


@pytest.mark.parametrize("spec, kwargs, error, match", [
    ("ecko", {}, ValueError, r"unknown responder 'ecko'\. Did you mean 'echo'\?"),
    (Counter, {}, TypeError, r"responder is the class Counter.*instance"),
    (3, {}, TypeError, r"responder must be a name.*got int"),
    (lambda a, b: None, {}, TypeError, r"cannot take one transcript"),
    (plain, {"x": 1}, TypeError, r"responder_kwargs \['x'\] given with an already-built"),
    ("echo", {"x": 1}, TypeError, r"responder 'echo' got unknown keyword.*accepted: none"),
    ("os:system", {}, TypeError, r"'os:system' is a builtin or standard-library callable"),
    ("shutil:rmtree", {}, TypeError, r"standard-library callable.*not called"),
    ("no_such_module_xyz:f", {}, ValueError, r"cannot import module 'no_such_module_xyz'"),
    ("tg_test_responders:nope", {}, ValueError, r"has no 'nope'"),
    ("tg_test_responders:not_callable", {}, TypeError, r"is a int, not callable"),
    ("tg_test_responders:two_args", {}, TypeError, r"cannot take one transcript.*not called"),
    ("tg_test_responders:plain", {"x": 1}, TypeError, r"used as is"),
    ("tg_test_responders:Counter", {"stp": 1}, TypeError, r"unknown keyword.*\['stp'\].*step"),
    (":f", {}, ValueError, r"'package\.module:attribute'"),
])
def test_bad_specs_are_named(plugin_module, spec, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_responder(spec, **kwargs)


def test_register_refuses_clashes():
    with pytest.raises(ValueError, match="'echo' is already registered"):
        register_responder("echo", Counter)
    with pytest.raises(TypeError, match="must be callable"):
        register_responder("x-bad", 3)


def _raises(transcript):
    raise KeyError("secret")


@pytest.mark.parametrize("responder, match", [
    (_raises, r"responder '_raises' raised KeyError: 'secret' at turn 0"),
    (lambda t: 3, r"returned int 3 at turn 0.*Reply\(text, reward, done\)"),
    (lambda t: ["a"], r"returned list \['a'\]"),
    (lambda t: ("a", 1.0), r"a tuple of 2 items"),
    (lambda t: Reply(text=b"bytes"), r"text b'bytes' \(bytes\): the text must be a string"),
    (lambda t: Reply(text="a", reward="1"), r"reward '1' \(str\): the reward must be a finite number"),
    (lambda t: Reply(text="a", reward=float("nan")), r"reward nan: rewards must be finite"),
    (lambda t: Reply(text="a", reward=1e39), r"reward 1e\+39: rewards must be finite float32"),
    (lambda t: Reply(text="a", reward=True), r"reward True \(bool\)"),
    (lambda t: Reply(text="a", done="yes"), r"done 'yes' \(str\): done must be True or False"),
    (lambda t: "word " * 100_000, r"a text of 500000 characters.*max_insert_tokens"),
    (lambda t: "word " * 100, r"reply of 101 tokens at turn 0, more than max_insert_tokens=64"),
])
def test_bad_responders_get_a_named_error_and_the_env_recovers(tokenizer, responder, match):
    env = make_env(tokenizer, responder)
    env.reset(seed=0)
    env.step(1000)
    with pytest.raises(ResponderError, match=match) as caught:
        env.step(1000)
    assert "(env slot 0); the episode(s) ended, call reset()" in str(caught.value)
    assert caught.value.turn == 0 and caught.value.excerpt == "()()"
    with pytest.raises(ValueError, match="call reset"):
        env.step(1000)
    env.reset(seed=1)  # usable again


def test_endless_replies_end_at_max_turns(tokenizer):
    env = make_env(tokenizer, lambda t: "and again", max_turns=3, max_new_tokens=100)
    env.reset(seed=0)
    steps = 0
    while True:
        _, _, term, trunc, info = env.step(1000)
        steps += 1
        if term or trunc:
            break
    assert (steps, term, trunc, info["stop_reason"], info["turns"]) == (6, False, True, "max_turns", 3)


def test_vector_env_marks_only_rows_whose_turn_ended(tokenizer):
    from tokengym.envs import TextGenVectorEnv

    envs = TextGenVectorEnv(2, prompts=["a b", "c d"], tokenizer=tokenizer, reward_model=length_reward,
                            responder=_raises, max_prompt_tokens=8, max_new_tokens=6, max_turn_tokens=2)
    envs.reset(seed=0)
    with pytest.raises(ResponderError, match=r"env slot 0"):
        envs.step(np.array([tokenizer.eos_token_id, 1000]))
    assert envs.episodes.ended.tolist() == [True, False]
