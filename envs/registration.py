"""Registered env ids (``gymnasium.make`` / ``gymnasium.make_vec``) and their entry points.

- ``tokengym/TextGen-v0``: generic; pass ``prompts`` and ``reward_model``.
- ``tokengym/Sentiment-v0``: continue movie-review openings positively (240 training and 60
  held-out openings), reward ``vader`` (VADER compound, [-1, 1]).
- ``tokengym/Keywords-v0``: CommonGen-style, one sentence using 3-4 given concepts (400 / 100
  concept sets), reward ``keywords`` (coverage, [0, 1]), chat template.
- ``tokengym/Length-v0``: answer in exactly K words, K in 3..12 carried by each prompt record
  (400 / 100), reward ``length`` (closeness to K), chat template.
- ``tokengym/Arithmetic-v0``: small +, -, x questions with a verifiable answer (500 / 100), reward
  ``arithmetic`` (1.0 when the last number in the completion is right), chat template.
- ``tokengym/Overoptimization-v0``: Sentiment-v0's prompts rewarded by a proxy Bradley-Terry model
  trained on policy samples ranked by a gold model (VADER); ``info["reward_components"]`` carries
  ``proxy`` and ``gold`` (Gao et al. 2022; see :mod:`tokengym.benchmarks.overoptimization`).

Multi-turn tasks (a responder answers each agent turn; see :mod:`tokengym.envs.tasks`):

- ``tokengym/Calculator-v0``: 3-5 term arithmetic (500 / 100) with a ``<calc>...</calc>`` tool
  (responder ``calculator``), reward 1.0 when the final turn's last number is the answer.
- ``tokengym/GuessNumber-v0``: guess a secret number with higher/lower feedback (400 / 100
  ranges), per-turn reward 1.0 for solving within ``k`` turns (responder ``guess-number``).
- ``tokengym/Support-v0``: calm an upset customer played by SmolLM2-135M-Instruct (responder
  ``lm-user``; 104 / 24 complaints, held-out products), reward VADER of its last reply.

Optional ecosystem adapters (``pip install 'tokengym[reasoning-gym]'`` / ``'tokengym[textarena]'``):
``tokengym/ReasoningGym-v0`` (``task=`` any reasoning-gym dataset name) and
``tokengym/TextArena-v0`` (``game=`` a single-player textarena game id); see
:mod:`tokengym.envs.adapters`.

Task envs take ``split="train"`` (default) or ``"eval"`` for the held-out prompts, and every
``TextGenEnv`` keyword, which overrides the task's defaults (:data:`TASKS`); ``split`` and
``prompts`` together are an error (the split names shipped prompts that ``prompts`` replaces).

``gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")`` returns the native
:class:`~tokengym.envs.TextGenVectorEnv`.
"""

from __future__ import annotations

import functools
import inspect
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym

from tokengym.envs.tasks.calculator import final_answer_reward
from tokengym.envs.tasks.support import customer_mood
from tokengym.envs.text_gen_env import TextGenEnv
from tokengym.envs.vector_env import TextGenVectorEnv

SPLITS = ("train", "eval")

# Each task: its prompt files (envs/data/<name>_<split>.*) and the TextGenEnv defaults it sets.
# Every default can be overridden by the caller's keywords.
TASKS: dict[str, dict[str, Any]] = {
    "Sentiment": {
        "file": "sentiment_{split}.txt",
        "reward_model": "vader",
        "max_prompt_tokens": 32,
        "max_new_tokens": 24,
    },
    "Keywords": {
        "file": "keywords_{split}.jsonl",
        "reward_model": "keywords",
        "chat_template": True,
        "max_prompt_tokens": 64,
        "max_new_tokens": 24,
    },
    "Length": {
        "file": "length_{split}.jsonl",
        "reward_model": "length",
        "chat_template": True,
        "max_prompt_tokens": 64,
        "max_new_tokens": 24,
    },
    "Arithmetic": {
        "file": "arithmetic_{split}.jsonl",
        "reward_model": "arithmetic",
        "chat_template": True,
        "max_prompt_tokens": 64,
        "max_new_tokens": 8,
    },
    "Calculator": {
        "file": "calculator_{split}.jsonl",
        "reward_model": final_answer_reward,
        "responder": "calculator",
        "stop_strings": ["</calc>"],
        "chat_template": True,
        "max_prompt_tokens": 128,
        "max_new_tokens": 96,
        "max_turn_tokens": 48,
        "max_turns": 4,
        # A result or an error may echo a number the agent wrote (up to 80 characters, one
        # token per digit): with the chat template's markup, up to ~90 tokens.
        "max_insert_tokens": 96,
    },
    "GuessNumber": {
        "file": "guess_number_{split}.jsonl",
        "reward_model": None,
        "responder": "guess-number",
        "chat_template": True,
        "max_prompt_tokens": 96,
        "max_new_tokens": 64,
        "max_turn_tokens": 8,
        "max_turns": 8,
        # "<guess> is out of range: the number is from <low> to <high>." with an 8-digit guess
        # and the chat template's markup: 39 tokens.
        "max_insert_tokens": 48,
        "max_episode_tokens": 256,
    },
    "Support": {
        "file": "support_{split}.jsonl",
        "reward_model": customer_mood,
        "responder": "lm-user",
        "responder_kwargs": {"max_turns": 2, "max_reply_tokens": 40},
        "chat_template": True,
        "max_prompt_tokens": 96,
        "max_new_tokens": 96,
        "max_turn_tokens": 48,
        "max_turns": 2,
        "max_insert_tokens": 64,
    },
}

ADAPTERS = {
    "ReasoningGym": "tokengym.envs.adapters.reasoning_gym_adapter",
    "TextArena": "tokengym.envs.adapters.textarena_adapter",
}
"""Env ids of the optional adapters -> their modules (``make_env`` / ``make_vector_env``)."""


def task_prompts(task: str, split: str = "train") -> Path:
    """Path of a task's shipped prompt file for ``split`` ("train" or "eval")."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    name = TASKS[task]["file"].format(split=split)
    return Path(str(resources.files("tokengym.envs") / "data" / name))


def sentiment_prompts(split: str = "train") -> Path:
    """Path of the shipped movie-review openings for ``split`` ("train" or "eval")."""
    return task_prompts("Sentiment", split)


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


def _task_kwargs(task: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    defaults = {k: v for k, v in TASKS[task].items() if k != "file"}
    if "split" in kwargs and "prompts" in kwargs:
        raise ValueError(
            f"split={kwargs['split']!r} chooses {task}-v0's shipped prompts, but prompts= was given "
            "too; pass one of them"
        )
    split = kwargs.pop("split", "train")
    if "prompts" not in kwargs:
        defaults["prompts"] = task_prompts(task, split)
    if isinstance(defaults.get("responder_kwargs"), dict) and isinstance(
            kwargs.get("responder_kwargs"), dict) and "responder" not in kwargs:
        # The caller's responder settings refine the task's (e.g. a smaller model in tests).
        kwargs["responder_kwargs"] = {**defaults["responder_kwargs"], **kwargs["responder_kwargs"]}
    return {**defaults, **kwargs}


def make_task(task: str, **kwargs: Any) -> TextGenEnv:
    """A :class:`TextGenEnv` for one of :data:`TASKS` (extra keyword: ``split``)."""
    _check_kwargs(TextGenEnv, kwargs, extra=("split",))
    return TextGenEnv(**_task_kwargs(task, kwargs))


def make_task_vector(task: str, num_envs: int = 1, **kwargs: Any) -> TextGenVectorEnv:
    """A :class:`TextGenVectorEnv` for one of :data:`TASKS` (extra keyword: ``split``)."""
    _check_kwargs(TextGenVectorEnv, kwargs, extra=("split",))
    return TextGenVectorEnv(num_envs, **_task_kwargs(task, kwargs))


def register_envs() -> None:
    """Register tokengym's env ids (idempotent)."""
    if "tokengym/TextGen-v0" not in gym.registry:
        gym.register(id="tokengym/TextGen-v0", entry_point=make_textgen,
                     vector_entry_point=make_textgen_vector)
    for task in TASKS:
        env_id = f"tokengym/{task}-v0"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=functools.partial(make_task, task),
                         vector_entry_point=functools.partial(make_task_vector, task))
    for name, module in ADAPTERS.items():
        if f"tokengym/{name}-v0" not in gym.registry:  # imported when made: optional packages
            gym.register(id=f"tokengym/{name}-v0", entry_point=f"{module}:make_env",
                         vector_entry_point=f"{module}:make_vector_env")
    if "tokengym/Overoptimization-v0" not in gym.registry:
        # String entry points: the benchmark module (with the proxy reward model's labelling and
        # training, which need the agents) loads only when the id is made; envs stays a layer
        # below agents and benchmarks.
        module = "tokengym.benchmarks.overoptimization"
        gym.register(id="tokengym/Overoptimization-v0",
                     entry_point=f"{module}:make_overoptimization",
                     vector_entry_point=f"{module}:make_overoptimization_vector")
