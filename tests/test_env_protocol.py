"""The env protocol agents rely on (tokengym.envs.protocol): same answers from every vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import PROMPTS, length_reward
from gymnasium.vector import AsyncVectorEnv, SyncVectorEnv
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from tokengym.agents.groups import PromptGroups, row_prompts
from tokengym.envs import (
    PromptRecord,
    TextEnvLike,
    TextGenEnv,
    TextGenVectorEnv,
    TextVectorEnvLike,
    text_env_view,
)

N = 4
P, G = 12, 5
# Records with a field: prompt_records() and the grouped reset must carry fields, not only text.
RECORDS = [{"prompt": p, "answer": str(i)} for i, p in enumerate(PROMPTS)]
FORCED = {"prompt": "A forced prompt about", "answer": "42"}
KINDS = ["native", "wrapped", "sync"]


def make(kind: str, tokenizer, n: int = N):
    kw = dict(prompts=RECORDS, tokenizer=tokenizer, reward_model=length_reward,
              max_prompt_tokens=P, max_new_tokens=G)
    if kind == "native":
        return TextGenVectorEnv(n, **kw)
    if kind == "wrapped":
        return RecordEpisodeStatistics(TextGenVectorEnv(n, **kw))
    if kind == "sync":  # sub-envs inside gym.make's wrappers: members are found through them
        return SyncVectorEnv([lambda: gym.make("tokengym/TextGen-v0", **kw)] * n)
    if kind == "async":
        return AsyncVectorEnv([lambda: TextGenEnv(**kw)] * n)
    raise ValueError(kind)


def as_tuples(records: list[PromptRecord]) -> list[tuple]:
    return [(r.text, r.id, dict(r.fields)) for r in records]


def test_native_env_is_its_own_view(tokenizer):
    envs = make("native", tokenizer)
    assert isinstance(envs, TextVectorEnvLike)
    assert text_env_view(envs) is envs
    assert isinstance(TextGenEnv(prompts=RECORDS, tokenizer=tokenizer, reward_model=length_reward),
                      TextEnvLike)


@pytest.fixture(scope="module")
def native_records(tokenizer) -> list[tuple]:
    envs = make("native", tokenizer)
    envs.reset(seed=3)
    return as_tuples(envs.prompt_records())


@pytest.mark.parametrize("kind", KINDS)
def test_same_sizes_and_records_after_a_seeded_reset(kind, tokenizer, native_records):
    envs = make(kind, tokenizer)
    view = text_env_view(envs)
    assert isinstance(view, TextVectorEnvLike)
    assert (view.num_envs, view.max_prompt_tokens, view.max_new_tokens) == (N, P, G)
    assert view.num_actions == len(tokenizer) == envs.single_action_space.n
    assert envs.single_observation_space["input_ids"].shape == (P + G,)
    with pytest.raises(ValueError, match="reset"):
        view.prompt_records()
    obs, infos = view.reset(seed=3)
    records = view.prompt_records()
    assert all(isinstance(r, PromptRecord) for r in records)
    assert as_tuples(records) == native_records
    assert [r.text for r in records] == list(infos["prompt"])
    assert {r.fields["answer"] for r in records} <= {str(i) for i in range(len(PROMPTS))}
    assert obs["input_ids"].shape == (N, P + G)


@pytest.mark.parametrize("kind", KINDS)
def test_grouped_reset_forces_the_prompt_in_the_masked_rows(kind, tokenizer):
    view = text_env_view(make(kind, tokenizer))
    view.reset(seed=0)
    before = view.prompt_records()
    mask = np.array([False, True, False, True])
    obs, _ = view.reset(options={"reset_mask": mask, "prompt": dict(FORCED)})
    after = view.prompt_records()
    for i in range(N):
        if mask[i]:
            assert (after[i].text, after[i].id, dict(after[i].fields)) == ("A forced prompt about", -1,
                                                                          {"answer": "42"})
        else:
            assert after[i] == before[i]
    forced_ids = tokenizer(FORCED["prompt"])["input_ids"]
    np.testing.assert_array_equal(obs["input_ids"][1, P - len(forced_ids): P], forced_ids)


@pytest.mark.parametrize("kind", ["native", "sync"])
def test_prompt_groups_share_prompt_and_fields(kind, tokenizer):
    envs = PromptGroups(make(kind, tokenizer), 2)
    _, infos = envs.reset(seed=1)
    records = text_env_view(envs).prompt_records()
    for g in range(0, N, 2):
        assert (records[g].text, dict(records[g].fields)) == (records[g + 1].text,
                                                              dict(records[g + 1].fields))
    assert row_prompts(envs, infos) == [{"prompt": r.text, **r.fields} for r in records]


def test_async_vector_env_gives_the_same_answers(tokenizer, native_records):
    envs = make("async", tokenizer)
    try:
        view = text_env_view(envs)
        assert (view.num_envs, view.max_prompt_tokens, view.max_new_tokens, view.num_actions) == (
            N, P, G, len(tokenizer))
        view.reset(seed=3)
        assert as_tuples(view.prompt_records()) == native_records
    finally:
        envs.close()


@pytest.mark.parametrize("envs", [
    lambda: SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2),
    lambda: gym.make("CartPole-v1"),
    lambda: object(),
], ids=["sync-cartpole", "cartpole", "object"])
def test_anything_else_is_a_type_error_naming_it(envs):
    env = envs()
    with pytest.raises(TypeError, match=f"{type(env).__name__} is not a tokengym .* accepts "
                                        "tokengym.envs.TextGenVectorEnv"):
        text_env_view(env)
