"""``make`` / ``register``: names, import strings, saved directories, and entry-point plugins."""

from __future__ import annotations

import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.reward_models import available, make, register, registry

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
