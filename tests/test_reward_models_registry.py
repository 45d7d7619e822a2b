"""``make`` / ``register``: names, import strings, saved directories, and entry-point plugins."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.reward_models import available, make, register, registry, score

BUILTINS = {
    "vader",
    "keywords",
    "length",
    "regex",
    "repetition",
    "arithmetic",
    "hf-classifier",
    "embedding-similarity",
    "llm-judge",
    "composite",
    "normalized",
    "preference",
}


def test_every_builtin_is_registered() -> None:
    assert BUILTINS <= set(available())


def test_unknown_name_lists_known_ones_and_the_closest_match() -> None:
    with pytest.raises(
        ValueError, match=r"unknown reward model 'repetiton'.*Did you mean 'repetition'"
    ) as info:
        make("repetiton")
    assert "vader" in str(info.value) and "llm-judge" in str(info.value)


def test_name_with_arguments_and_import_strings() -> None:
    assert make("length", target=3)([""], ["a b c"])[0] == 1.0
    rules = make("tokengym.reward_models.rules:RegexReward", pattern="x")
    assert rules(["p"], ["xyz"])[0] == 1.0


def test_register_a_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    register("exclaim", lambda bonus=1.0: lambda p, c: np.array([bonus * x.count("!") for x in c]))
    assert make("exclaim", bonus=2.0)(["p"], ["hi!!"]).tolist() == [4.0]
    with pytest.raises(ValueError, match="already registered"):
        register("exclaim", lambda: None)


def test_a_directory_that_is_not_a_saved_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a saved tokengym reward model"):
        make(str(tmp_path))
    with pytest.raises(ValueError, match="not a saved tokengym reward model"):
        make(tmp_path)


def _install_plugin(tmp_path: Path) -> None:
    """A throw-away distribution, laid out as pip installs one: a module + a .dist-info dir."""
    (tmp_path / "tg_shouty_plugin.py").write_text(
        textwrap.dedent('''
        import numpy as np

        class Shouty:
            """Reward = fraction of upper-case letters, times ``scale``."""
            name = "shouty"

            def __init__(self, scale=1.0):
                self.scale = scale

            def __call__(self, prompts, completions):
                return np.array([self.scale * sum(ch.isupper() for ch in c) / max(1, len(c))
                                 for c in completions], dtype=np.float32)
    ''')
    )
    info = tmp_path / "tg_shouty_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tg-shouty-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[tokengym.reward_models]\nshouty = tg_shouty_plugin:Shouty\n"
    )
    (info / "RECORD").write_text("")


def test_entry_point_plugin_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    assert "shouty" not in available()
    _install_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "tg_shouty_plugin", raising=False)

    assert "shouty" in available()
    rm = make("shouty", scale=2.0)
    assert rm(["p"], ["ABcd"]).tolist() == [1.0]

    env = gym.make(
        "tokengym/TextGen-v0",
        prompts=["Say it loud:"],
        reward_model="shouty",
        tokenizer="tiny-llama",
        max_new_tokens=8,
    )
    env.reset(seed=0)
    tok = env.unwrapped.tokenizer
    for action in tok(" HELLO", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]:
        _, reward, terminated, _, info = env.step(action)
    assert terminated and info["completion"] == " HELLO"
    assert reward == pytest.approx(5 / 6) and info["reward_components"] == {
        "shouty": pytest.approx(5 / 6)
    }


# --- Import strings resolve to reward models only (#15: no code from data) ---------------------

_MODULE = "tg_rm_import_strings"


@pytest.fixture
def rm_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module importable by name whose callables leave a marker file when they run."""
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    (tmp_path / f"{_MODULE}.py").write_text(textwrap.dedent(f'''
        from pathlib import Path

        import numpy as np

        MARKERS = Path({str(marker_dir)!r})
        THRESHOLD = 0.5

        def touch(name):
            (MARKERS / name).write_text("ran")

        def with_answer(prompts, completions, answer):
            return np.array([float(c.strip() == str(a)) for c, a in zip(completions, answer)])

        def star_args(*args, **fields):
            return np.array([float(len(c)) for c in args[1]])

        def factory(scale=1.0):
            touch("factory")
            return lambda prompts, completions: np.full(len(completions), scale)

        def one_arg(completions):
            touch("one_arg")

        def defaulted(prompts=None, completions=None):
            touch("defaulted")

        class Scaled:
            """A reward-model class: its __call__ takes (prompts, completions, fields...)."""
            name = "scaled"

            def __init__(self, scale=1.0):
                touch("Scaled.__init__")
                self.scale = scale

            def __call__(self, prompts, completions, *, answer=None):
                return np.array([self.scale * (c.strip() == str(a))
                                 for c, a in zip(completions, answer)])

        SCALED = Scaled.__new__(Scaled)
        SCALED.scale = 3.0

        class Static:
            @staticmethod
            def __call__(prompts, completions):
                return np.ones(len(completions))

        class NotCallable:
            def __init__(self, **kwargs):
                touch("NotCallable.__init__")

        class WrongCall:
            def __init__(self, **kwargs):
                touch("WrongCall.__init__")

            def __call__(self, command):
                touch("WrongCall.__call__")

        class InheritsWrongCall(WrongCall):
            pass
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, _MODULE, raising=False)
    return marker_dir


def test_os_system_with_kwargs_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(TypeError, match=r"'os:system'.*not a reward model.*\(command\)") as info:
        make("os:system", command=f"touch {marker}")
    message = str(info.value)
    assert "(prompts, completions)" in message and "register(name, factory)" in message
    assert "entry-point" in message and "not called" in message
    assert not marker.exists()
    with pytest.raises(TypeError, match="not a reward model"):
        make("os:system")
    assert not marker.exists()


def test_functions_without_the_reward_signature_are_refused() -> None:
    with pytest.raises(TypeError, match=r"'os:getcwd'.*signature \(\) does not take"):
        make("os:getcwd")
    with pytest.raises(TypeError, match=r"'os:sep' is a str, not callable.*register"):
        make("os:sep")
    with pytest.raises(TypeError, match="signature cannot be inspected.*cannot be shown"):
        make("builtins:max")  # a builtin without a signature: it cannot be shown to be one


def test_popen_is_refused_without_being_instantiated(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(subprocess.Popen, "__init__", lambda self, *a, **k: calls.append(a))
    with pytest.raises(TypeError, match=r"'subprocess:Popen' is a class whose instances are not "
                                        r"callable.*not instantiated.*register"):
        make("subprocess:Popen", args=["true"])
    assert calls == []


@pytest.mark.parametrize("attr, needle", [
    ("NotCallable", "defines no __call__"),
    ("WrongCall", r"__call__ is not a reward model.*\(command\)"),
    ("InheritsWrongCall", r"__call__ is not a reward model.*\(command\)"),
])
def test_classes_are_checked_before_they_are_instantiated(rm_module: Path, attr: str,
                                                          needle: str) -> None:
    with pytest.raises(TypeError, match=f"{needle}.*not instantiated"):
        make(f"{_MODULE}:{attr}", command="echo hi")
    assert list(rm_module.iterdir()) == []


@pytest.mark.parametrize("attr", ["factory", "one_arg", "defaulted"])
def test_factories_and_other_functions_are_never_called(rm_module: Path, attr: str) -> None:
    with pytest.raises(TypeError, match=r"not a reward model.*register\(name, factory\)"):
        make(f"{_MODULE}:{attr}", scale=2.0)
    with pytest.raises(TypeError, match="not a reward model"):
        make(f"{_MODULE}:{attr}")
    assert list(rm_module.iterdir()) == []


def test_a_reward_function_is_returned_as_is_and_gets_its_fields(rm_module: Path) -> None:
    rm = make(f"{_MODULE}:with_answer")
    assert rm is sys.modules[_MODULE].with_answer
    rewards, _ = score(rm, ["q", "q"], ["42", "7"], {"answer": [42, 8], "other": [1, 2]})
    assert rewards.tolist() == [1.0, 0.0]
    assert make(f"{_MODULE}:star_args")(["p"], ["abc"]).tolist() == [3.0]
    assert make(f"{_MODULE}:SCALED") is sys.modules[_MODULE].SCALED  # a callable instance


def test_keyword_arguments_with_a_reward_function_are_refused(rm_module: Path) -> None:
    with pytest.raises(TypeError, match=r"keyword arguments \['scale'\] given with a reward "
                                        r"function .*register\(name, factory\)"):
        make(f"{_MODULE}:with_answer", scale=2.0)


def test_a_reward_model_class_is_instantiated_with_the_kwargs(rm_module: Path) -> None:
    rm = make(f"{_MODULE}:Scaled", scale=2.0)
    assert (rm_module / "Scaled.__init__").exists() and rm.scale == 2.0
    rewards, components = score(rm, ["q", "q"], ["42", "7"], {"answer": [42, 7]})
    assert rewards.tolist() == [2.0, 2.0] and list(components) == ["scaled"]
    assert make(f"{_MODULE}:Static")(["p"], ["a", "b"]).tolist() == [1.0, 1.0]


def test_a_registered_factory_still_builds_from_settings(rm_module: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    module = __import__(_MODULE)
    register("tg-constant", module.factory)
    assert make("tg-constant", scale=2.0)(["p"], ["a"]).tolist() == [2.0]
    assert (rm_module / "factory").exists()
    env = gym.make("tokengym/TextGen-v0", prompts=["Hi"], reward_model="tg-constant",
                   reward_model_kwargs={"scale": 0.5}, tokenizer="tiny-llama", max_new_tokens=2)
    env.reset(seed=0)
    tok = env.unwrapped.tokenizer
    _, reward, terminated, _, _ = env.step(tok.eos_token_id)
    assert terminated and reward == 0.5


def test_malformed_import_strings_are_refused() -> None:
    for spec in (":x", ".relative:x", "os:"):
        with pytest.raises(ValueError, match="an import string is 'package.module:attribute'"):
            make(spec)
