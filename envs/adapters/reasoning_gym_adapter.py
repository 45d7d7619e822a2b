"""reasoning-gym's procedurally generated tasks as tokengym prompts and a reward model.

``reasoning_gym_prompts(task)`` turns any reasoning-gym dataset (``reasoning_gym.factory``'s
names: ``"basic_arithmetic"``, ``"chain_sum"``, ``"countdown"``...) into prompt records: the
question plus an instruction to answer inside ``<answer></answer>``, and the dataset entry in the
field ``rg_entry``. The ``reasoning-gym`` reward model extracts the tagged answer and scores it
with that dataset's own ``score_answer`` (in [0, 1]). Splits: ``train`` is the dataset made with
``seed=0``, ``eval`` the one made with ``seed=10**6`` minus any question the default train split
has (reasoning-gym seeds entry ``i`` with ``seed + i``, so nearby seeds would share entries).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np

from tokengym.checks import positive_int
from tokengym.envs.adapters import import_optional
from tokengym.envs.text_gen_env import TextGenEnv
from tokengym.envs.vector_env import TextGenVectorEnv

EXTRA = "reasoning-gym"
INSTRUCTION = "\n\nThink briefly, then give your final answer inside <answer></answer>."
SPLIT_SEEDS = {"train": 0, "eval": 10**6}
DEFAULT_SIZES = {"train": 1000, "eval": 200}
FIELD = "rg_entry"


def _rg() -> Any:
    return import_optional("reasoning_gym", EXTRA)


def task_names() -> list[str]:
    """Every dataset name reasoning-gym offers."""
    return sorted(_rg().factory.DATASETS)


def _check_task(task: Any) -> str:
    names = task_names()
    if not isinstance(task, str) or task not in names:
        close = difflib.get_close_matches(str(task), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown reasoning-gym task {task!r}.{hint} Known: {', '.join(names)}")
    return task


def _questions(task: str, split: str, size: int) -> list[dict[str, Any]]:
    return list(_rg().create_dataset(task, size=size, seed=SPLIT_SEEDS[split]))


def reasoning_gym_prompts(task: str, split: str = "train", size: int | None = None
                          ) -> list[dict[str, Any]]:
    """Prompt records ``{"prompt": question + instruction, "rg_entry": entry}`` of ``task``.

    Args:
        task: a reasoning-gym dataset name.
        split: ``"train"`` (seed 0) or ``"eval"`` (seed 10**6, questions also in train removed).
        size: entries generated (default 1000 train, 200 eval; at most 10**6).

    Raises:
        ValueError: an unknown task (closest name suggested) or split.
        ModuleNotFoundError: reasoning-gym is not installed (the message gives the pip command).
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split {split!r} is not one of {sorted(SPLIT_SEEDS)}")
    task = _check_task(task)
    size = positive_int("size", DEFAULT_SIZES[split] if size is None else size, 10**6)
    entries = _questions(task, split, size)
    if split == "eval":
        seen = {e["question"] for e in _questions(task, "train", DEFAULT_SIZES["train"])}
        entries = [e for e in entries if e["question"] not in seen]
    if not entries:
        raise ValueError(f"reasoning-gym task {task!r} made no {split} question of size {size}")
    return [{"prompt": e["question"] + INSTRUCTION, FIELD: e} for e in entries]


class ReasoningGymReward:
    """Scores a completion with the reasoning-gym dataset its prompt came from, in [0, 1].

    Args:
        extract: ``"answer-tag"`` (default): the text inside the last ``<answer></answer>``
            (no tag: 0.0); ``"none"``: the whole completion, stripped.

    A dataset scorer that raises on an answer counts it as wrong (0.0): a policy's junk must not
    stop training.
    """

    name = "reasoning-gym"

    def __init__(self, extract: str = "answer-tag") -> None:
        if extract not in ("answer-tag", "none"):
            raise ValueError(f"extract must be 'answer-tag' or 'none', got {extract!r}")
        self.extract = extract

    def answer(self, completion: str) -> str | None:
        if self.extract == "none":
            return completion.strip()
        return _rg().utils.extract_answer(completion)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str],
                 rg_entry: Sequence[Any]) -> np.ndarray:
        rg = _rg()
        out = np.zeros(len(completions), dtype=np.float32)
        for i, (completion, entry) in enumerate(zip(completions, rg_entry)):
            if not isinstance(entry, dict) or "metadata" not in entry:
                raise ValueError(f"sample {i}: field {FIELD!r} must be a reasoning-gym entry, got "
                                 f"{type(entry).__name__}; use reasoning_gym_prompts(task)")
            answer = self.answer(completion)
            if answer is None:
                continue
            scorer = rg.get_score_answer_fn(entry["metadata"]["source_dataset"])
            try:
                out[i] = float(scorer(answer, entry))
            except Exception:  # noqa: BLE001 - see the class docstring
                out[i] = 0.0
        return out


def _kwargs(task: str, split: str, size: int | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    if "prompts" in kwargs:
        raise ValueError("tokengym/ReasoningGym-v0 makes its prompts from task=/split=; do not pass "
                         "prompts= (use tokengym/TextGen-v0 with reasoning_gym_prompts() instead)")
    defaults: dict[str, Any] = {"reward_model": "reasoning-gym", "chat_template": True,
                                "max_prompt_tokens": 256, "max_new_tokens": 128}
    return {**defaults, "prompts": reasoning_gym_prompts(task, split, size), **kwargs}


def make_env(task: str = "basic_arithmetic", split: str = "train", size: int | None = None,
             **kwargs: Any) -> TextGenEnv:
    """``gym.make("tokengym/ReasoningGym-v0", task=..., split=..., size=...)``: a TextGenEnv."""
    return TextGenEnv(**_kwargs(task, split, size, kwargs))


def make_vector_env(num_envs: int = 1, task: str = "basic_arithmetic", split: str = "train",
                    size: int | None = None, **kwargs: Any) -> TextGenVectorEnv:
    """The native vector env of :func:`make_env`."""
    return TextGenVectorEnv(num_envs, **_kwargs(task, split, size, kwargs))
