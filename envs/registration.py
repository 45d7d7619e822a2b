"""Registered env ids (``gymnasium.make`` / ``gymnasium.make_vec``) and their entry points.

- ``tokengym/TextGen-v0``: generic; pass ``prompts`` and ``reward_model``.
- ``tokengym/Sentiment-v0``: continue movie-review openings positively. 240 training and 60
  held-out openings shipped with the package (``split="train"`` or ``"eval"``), reward ``vader``,
  ``max_prompt_tokens=32``, ``max_new_tokens=24``. Every ``TextGenEnv`` keyword can be overridden.

``gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")`` returns the native
:class:`~tokengym.envs.TextGenVectorEnv`.
"""

from __future__ import annotations

import inspect
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym

from .text_gen_env import TextGenEnv
from .vector_env import TextGenVectorEnv

SENTIMENT_SPLITS = ("train", "eval")


def sentiment_prompts(split: str = "train") -> Path:
    """Path of the shipped movie-review openings for ``split`` ("train" or "eval")."""
    if split not in SENTIMENT_SPLITS:
        raise ValueError(f"split {split!r} is not one of {SENTIMENT_SPLITS}")
    return Path(str(resources.files("tokengym.envs") / "data" / f"sentiment_{split}.txt"))


def _check_kwargs(cls: type, kwargs: dict[str, Any], extra: tuple[str, ...] = ()) -> None:
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"] + list(extra)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"{cls.__name__} got unknown keyword(s) {unknown}; accepted: {', '.join(sorted(accepted))}"
        )


def make_textgen(**kwargs: Any) -> TextGenEnv:
    _check_kwargs(TextGenEnv, kwargs)
    return TextGenEnv(**kwargs)


def make_textgen_vector(num_envs: int = 1, **kwargs: Any) -> TextGenVectorEnv:
    _check_kwargs(TextGenVectorEnv, kwargs)
    return TextGenVectorEnv(num_envs, **kwargs)


def _sentiment_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    split = kwargs.pop("split", "train")
    defaults = {
        "reward_model": "vader",
        "max_prompt_tokens": 32,
        "max_new_tokens": 24,
    }
    if "prompts" not in kwargs:
        defaults["prompts"] = sentiment_prompts(split)
    return {**defaults, **kwargs}


def make_sentiment(**kwargs: Any) -> TextGenEnv:
    _check_kwargs(TextGenEnv, kwargs, extra=("split",))
    return TextGenEnv(**_sentiment_kwargs(kwargs))


def make_sentiment_vector(num_envs: int = 1, **kwargs: Any) -> TextGenVectorEnv:
    _check_kwargs(TextGenVectorEnv, kwargs, extra=("split",))
    return TextGenVectorEnv(num_envs, **_sentiment_kwargs(kwargs))


def register_envs() -> None:
    """Register tokengym's env ids (idempotent)."""
    here = __name__
    specs = {
        "tokengym/TextGen-v0": ("make_textgen", "make_textgen_vector"),
        "tokengym/Sentiment-v0": ("make_sentiment", "make_sentiment_vector"),
    }
    for env_id, (single, vector) in specs.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=f"{here}:{single}",
            vector_entry_point=f"{here}:{vector}",
            disable_env_checker=False,
        )
