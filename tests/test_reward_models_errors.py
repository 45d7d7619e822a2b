"""Faults inside reward models become ``RewardModelError`` naming the model, the sample index and
an excerpt; the env stays usable afterwards."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.reward_models import RewardModelError, score

PROMPTS = ["p"] * 3
TEXTS = ["fine text", "the POISON sample is here", "also fine"]


def raises_on_poison(prompts, completions):
    if any("POISON" in c for c in completions):
        raise KeyError("poison")
    return np.zeros(len(completions))


def nan_on_poison(prompts, completions):
    return np.array([np.nan if "POISON" in c else 1.0 for c in completions])


def inf_on_poison(prompts, completions):
    return np.array([np.inf if "POISON" in c else 1.0 for c in completions])


def too_short(prompts, completions):
    return np.zeros(len(completions) - 1)


def two_columns(prompts, completions):
    return np.zeros((len(completions), 2))


def not_numbers(prompts, completions):
    return ["high"] * len(completions)


@pytest.mark.parametrize("rm", [raises_on_poison, nan_on_poison, inf_on_poison])
def test_the_offending_sample_is_named(rm) -> None:
    with pytest.raises(RewardModelError) as info:
        score(rm, PROMPTS, TEXTS)
    err = info.value
    assert err.model_name == rm.__name__ and err.index == 1
    assert "POISON" in err.excerpt and rm.__name__ in str(err) and "sample 1" in str(err)


@pytest.mark.parametrize(
    ("rm", "needle"),
    [(too_short, "shape (2,)"), (two_columns, "shape (3, 2)"), (not_numbers, "not an array-like")],
)
def test_wrong_shape_or_type_names_the_model(rm, needle: str) -> None:
    with pytest.raises(RewardModelError, match=re.escape(needle)) as info:
        score(rm, PROMPTS, TEXTS)
    assert info.value.model_name == rm.__name__ and info.value.excerpt == "fine text"


def test_long_excerpts_are_shortened() -> None:
    with pytest.raises(RewardModelError) as info:
        score(nan_on_poison, ["p"], ["POISON " + "x" * 500])
    assert len(info.value.excerpt) <= 60 and info.value.excerpt.endswith("...")


@pytest.mark.parametrize("rm", [raises_on_poison, nan_on_poison, too_short])
def test_env_stays_usable_after_a_reward_model_fault(rm) -> None:
    env = gym.make(
        "tokengym/TextGen-v0",
        prompts=["Say something:"],
        reward_model=rm,
        tokenizer="tiny-llama",
        max_new_tokens=6,
    )
    tok = env.unwrapped.tokenizer

    def play(text: str) -> float:
        env.reset(seed=0)
        for action in tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]:
            _, reward, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                return float(reward)
        raise AssertionError("episode did not end")

    with pytest.raises(RewardModelError) as info:
        play(" POISON")
    assert info.value.model_name == rm.__name__
    if rm is not too_short:  # too_short fails on every batch; the others only on the poison
        assert play(" fine") in (0.0, 1.0)
    env.reset(seed=1)
    _, reward, terminated, truncated, _ = env.step(
        tok(" ok", add_special_tokens=False)["input_ids"][0]
    )
    assert (reward, terminated, truncated) == (0.0, False, False)  # mid-episode: no scoring yet


def test_vector_env_reports_the_env_slot() -> None:
    envs = gym.make_vec(
        "tokengym/TextGen-v0",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        prompts=["Say something:"],
        reward_model=raises_on_poison,
        tokenizer="tiny-llama",
        max_new_tokens=8,
    )
    tok = envs.unwrapped.tokenizer
    envs.reset(seed=0)
    poison = tok(" POISON", add_special_tokens=False)["input_ids"]
    fine = tok(" fine", add_special_tokens=False)["input_ids"][0]
    eos = tok.eos_token_id
    # Equal lengths, so that all three episodes end, and are scored, in the same step.
    rows = [[fine] * len(poison) + [eos], poison + [eos], [fine] * len(poison) + [eos]]
    with pytest.raises(RewardModelError, match="env slot 1") as info:
        for t in range(len(rows[0])):
            envs.step(np.array([r[t] for r in rows]))
    assert info.value.index == 1 and "POISON" in info.value.excerpt
    obs, _ = envs.reset(seed=0)
    envs.step(np.full(3, fine))
    assert obs["input_ids"].shape[0] == 3
