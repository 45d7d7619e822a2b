"""Helpers of tests/test_bad_env_inputs.py: build, start and play the envs the bad inputs go to.

Small budgets and the tiny-llama tokenizer (loaded once per process), so each case takes
milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

import tokengym  # noqa: F401  (registers the env ids)

TOK = "tiny-llama"
V = 49152  # tiny-llama's vocabulary: actions are ids in [0, V)
TEXTGEN = "tokengym/TextGen-v0"
BASE = {"prompts": ["Write a short line:"], "reward_model": "length"}


def make(env_id: str = TEXTGEN, **kw: Any) -> gym.Env:
    base = dict(BASE) if env_id == TEXTGEN else {}
    return gym.make(env_id, **{**base, "tokenizer": TOK, "max_new_tokens": 2, **kw})


def vec(num_envs: Any = 2, env_id: str = TEXTGEN, **kw: Any) -> gym.vector.VectorEnv:
    base = dict(BASE) if env_id == TEXTGEN else {}
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                        **{**base, "tokenizer": TOK, "max_new_tokens": 2, **kw})


def started(**kw: Any) -> gym.Env:
    env = make(**kw)
    env.reset(seed=0)
    return env


def started_vec(**kw: Any) -> gym.vector.VectorEnv:
    envs = vec(**kw)
    envs.reset(seed=0)
    return envs


def play(rm: Any, env_id: str = TEXTGEN, **kw: Any) -> None:
    """One episode of one token, so the reward model scores it."""
    env = make(env_id, reward_model=rm, max_new_tokens=1, **kw)
    env.reset(seed=0)
    env.step(100)


def play_vec(rm: Any) -> None:
    envs = vec(2, reward_model=rm, max_new_tokens=1)
    envs.reset(seed=0)
    envs.step(np.array([100, 100]))


def returning(value: Any) -> Callable[..., Any]:
    def rm(prompts: list[str], completions: list[str]) -> Any:
        return value
    return rm


def file(tmp: Path, name: str, data: str | bytes) -> str:
    path = tmp / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def rm_kw(name: str, **kwargs: Any) -> gym.Env:
    return make(reward_model=name, reward_model_kwargs=kwargs)


class Case(NamedTuple):
    id: str
    trigger: Callable[[Path], Any]
    error: type[BaseException] | tuple[type[BaseException], ...]
    match: str


class BadComponents:
    name = "bad-components"

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [0.0] * len(completions)

    def score_with_components(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [0.0] * len(completions)


def after_end() -> None:
    env = started(max_new_tokens=1)
    env.step(5)
    env.step(5)


def disabled_ended() -> None:
    envs = started_vec(autoreset_mode="Disabled", max_new_tokens=1)
    envs.step(np.array([5, 5]))
    envs.step(np.array([5, 5]))
