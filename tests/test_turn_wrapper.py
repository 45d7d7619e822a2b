"""The turn-level view (TurnLevelWrapper) plays the same episode as the token-level env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokengym.envs import Reply, TextGenEnv, TurnLevelWrapper

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=20)


def play_turns(env: TurnLevelWrapper, texts: list[str], seed: int):
    env.reset(seed=seed)
    sent, rewards = [], []
    for text in texts:
        obs, reward, term, trunc, info = env.step(text)
        sent.append(list(info["turn_token_ids"]))
        rewards.append(reward)
        if term or trunc:
            return obs, rewards, sent, info, (term, trunc)
    return obs, rewards, sent, info, (term, trunc)


def play_tokens(env: gym.Env, turns: list[list[int]], seed: int):
    env.reset(seed=seed)
    rewards = []
    for turn in turns:
        total = 0.0
        for token in turn:
            obs, reward, term, trunc, info = env.step(token)
            total += reward
        rewards.append(total)
    return obs, rewards, info, (term, trunc)


def assert_same_episode(turn_level, token_level):
    obs_a, rewards_a, _, info_a, end_a = turn_level
    obs_b, rewards_b, info_b, end_b = token_level
    assert rewards_a == rewards_b and end_a == end_b
    assert all(np.array_equal(obs_a[k], obs_b[k]) for k in obs_a)
    drop = ("turn_token_ids", "unsent_token_ids")
    assert {k: v for k, v in info_a.items() if k not in drop} == info_b


@pytest.mark.parametrize("env_id, texts", [
    ("tokengym/Calculator-v0", ["Let me compute. <calc>12 * (3 + 4)</calc>", "<calc>84 - 5</calc>",
                                "Answer: 79"]),
    ("tokengym/GuessNumber-v0", ["50", "I guess 25", "hmm", "12", "6", "3", "1", "2"]),
])
def test_turn_level_and_token_level_views_agree(env_id, texts):
    make = lambda: gym.make(env_id, tokenizer="tiny-llama")  # noqa: E731
    turn_level = play_turns(TurnLevelWrapper(make()), texts, seed=4)
    tokens = turn_level[2]
    token_level = play_tokens(make(), tokens, seed=4)
    assert_same_episode(turn_level, token_level)
    info = turn_level[3]
    assert info["completion"] and "stop_reason" in info


def test_each_turn_is_tokenized_once_with_the_end_token(tokenizer):
    env = TurnLevelWrapper(gym.make("tokengym/GuessNumber-v0", tokenizer="tiny-llama"))
    env.reset(seed=0)
    _, _, _, _, info = env.step(" 17")
    assert list(info["turn_token_ids"]) == tokenizer(" 17", add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id]
    assert info["unsent_token_ids"] == ()


def test_a_stop_string_inside_the_text_ends_the_turn_there():
    env = TurnLevelWrapper(gym.make("tokengym/Calculator-v0", tokenizer="tiny-llama"))
    env.reset(seed=0)
    _, _, _, _, info = env.step("<calc>1+1</calc> and then more words")
    assert info["turn_end"] == "stop_string" and info["inserted_text"] == "<result>2</result>"
    assert len(info["unsent_token_ids"]) > 1  # " and then more words" + the end token


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXT, min_size=1, max_size=5), chat=st.booleans())
def test_random_texts_give_the_same_episode_both_ways(tokenizer, texts, chat):
    def responder(t):
        return Reply(text=t.last.text[::-1], reward=float(len(t.last.token_ids)), done=t.turn == 3)

    def make():
        return TextGenEnv(prompts=["Talk to me"], tokenizer=tokenizer, responder=responder,
                          reward_model=lambda p, c: [float(len(c))], chat_template=chat,
                          max_prompt_tokens=40, max_new_tokens=60, max_turn_tokens=12)

    turn_level = play_turns(TurnLevelWrapper(make()), texts, seed=0)
    assert_same_episode(turn_level, play_tokens(make(), turn_level[2], seed=0))


def test_bad_uses_are_named(tokenizer):
    env = TurnLevelWrapper(TextGenEnv(prompts=["Hi"], tokenizer=tokenizer, responder="echo",
                                      stop_tokens=[], max_turn_tokens=50))
    env.reset(seed=0)
    with pytest.raises(TypeError, match="a turn-level action is the turn's text"):
        env.step(123)
    with pytest.raises(ValueError, match="ended without ending the agent's turn"):
        env.step("no stop token here")
    with pytest.raises(TypeError, match="wraps a tokengym TextGenEnv"):
        TurnLevelWrapper(gym.make("CartPole-v1"))
