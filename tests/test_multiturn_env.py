"""Multi-turn episodes (issue 14): token exactness, agent mask, limits, rewards, checkers."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import length_reward
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokengym.envs import Reply, TextGenEnv, Transcript

P = 48
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=24)


def make_env(tokenizer, responder, **kwargs) -> TextGenEnv:
    kwargs.setdefault("prompts", ["Tell me a story about", "Guess my number:"])
    kwargs.setdefault("reward_model", length_reward)
    kwargs.setdefault("max_prompt_tokens", P)
    kwargs.setdefault("max_new_tokens", 24)
    return TextGenEnv(tokenizer=tokenizer, responder=responder, **kwargs)


def play(env, actions):
    steps = []
    for a in actions:
        steps.append(env.step(int(a)))
        if steps[-1][2] or steps[-1][3]:
            break
    return steps


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(st.one_of(st.integers(0, 49151), st.just(2)), min_size=1, max_size=30),
       replies=st.lists(TEXT, min_size=1, max_size=4), chat=st.booleans(),
       turn_tokens=st.integers(1, 6))
def test_observation_is_prompt_then_agent_and_inserted_tokens(tokenizer, actions, replies, chat,
                                                              turn_tokens):
    env = make_env(tokenizer, lambda t: replies[t.turn % len(replies)], chat_template=chat,
                   max_new_tokens=30, max_turn_tokens=turn_tokens, max_turns=40)
    obs, info = env.reset(seed=0)
    L = env.observation_space["input_ids"].shape[0]
    assert L == P + env.max_episode_tokens == P + 30 + 40 * 64
    prompt = obs["input_ids"][P - info["prompt_tokens"]: P].tolist()
    after: list[int] = []  # every token after the prompt, in order
    agent_cols: list[int] = []
    for a in actions:
        obs, reward, term, trunc, info = env.step(a)
        agent_cols.append(P + len(after))
        after.append(a)  # the action itself, never re-tokenized
        if "inserted_ids" in info:
            inserted = list(info["inserted_ids"])
            if not chat:  # tokenized once, exactly as the tokenizer encodes the reply
                assert inserted == tokenizer(info["inserted_text"], add_special_tokens=False)["input_ids"]
            else:
                assert (not inserted) == (info["inserted_text"] == "")
            after += inserted
        n = len(after)
        assert obs["input_ids"][P - len(prompt): P].tolist() == prompt
        assert obs["input_ids"][P: P + n].tolist() == after
        assert (obs["input_ids"][P + n:] == tokenizer.pad_token_id).all()
        assert obs["attention_mask"][P - len(prompt): P + n].all()
        assert obs["attention_mask"].sum() == len(prompt) + n
        expected_mask = np.zeros(L, dtype=np.int64)
        expected_mask[agent_cols] = 1
        np.testing.assert_array_equal(obs["agent_mask"], expected_mask)
        assert obs in env.observation_space
        if term or trunc:
            break


def test_echo_responder_leaves_the_agent_tokens_alone(tokenizer):
    env = make_env(tokenizer, "echo", max_turn_tokens=3, max_turns=3, max_new_tokens=9)
    obs, _ = env.reset(seed=1)
    # Token ids whose decode-then-encode round trip gives other ids: the echo must not touch them.
    actions = [27, 91, 1000, 30, 31, 9531, 1000, 1001, 1002]
    steps = play(env, actions)
    obs, info = steps[-1][0], steps[-1][4]
    assert obs["input_ids"][obs["agent_mask"] == 1].tolist() == actions
    assert info["stop_reason"] == "max_turns" and steps[-1][3]
    texts = [tokenizer.decode(actions[i: i + 3], skip_special_tokens=True) for i in (0, 3, 6)]
    assert info["completion"] == "".join(t + t for t in texts)  # each turn, then its echo


def test_single_turn_agent_mask_marks_the_completion(tokenizer, prompts):
    plain = TextGenEnv(prompts=prompts, tokenizer=tokenizer, reward_model=length_reward,
                       max_prompt_tokens=16, max_new_tokens=5)
    masked = TextGenEnv(prompts=prompts, tokenizer=tokenizer, reward_model=length_reward,
                        max_prompt_tokens=16, max_new_tokens=5, agent_mask=True)
    assert set(plain.observation_space.spaces) == {"input_ids", "attention_mask"}
    assert masked.observation_space["agent_mask"] == gym.spaces.Box(0, 1, (21,), np.int64)
    a, _ = plain.reset(seed=0)
    b, _ = masked.reset(seed=0)
    for t, token in enumerate([1000, 1001, 1002, 1003, 1004]):
        assert b["agent_mask"].tolist() == [0] * 16 + [1] * t + [0] * (5 - t)
        assert all(np.array_equal(a[k], b[k]) for k in a)
        (a, *ra), (b, *rb) = plain.step(token), masked.step(token)
        assert ra == rb
    assert b["agent_mask"][16:].all()


def test_rewards_per_turn_then_transcript_score(tokenizer):
    seen = {}

    def responder(t: Transcript) -> Reply:
        return Reply(text=f" [{t.turn}]", reward=0.5 + t.turn, done=t.turn == 2)

    def rm(prompts, completions, transcript):
        seen["transcript"] = transcript[0]
        return [10.0]

    env = make_env(tokenizer, responder, reward_model=rm, max_turn_tokens=2)
    env.reset(seed=0)
    steps = play(env, [1000] * 20)
    rewards = [s[1] for s in steps]
    assert rewards == [0.0, 0.5, 0.0, 1.5, 0.0, 2.5 + 10.0]
    info = steps[-1][4]
    assert steps[-1][2] and not steps[-1][3] and info["stop_reason"] == "responder_done"
    assert info["turn_rewards"] == [0.5, 1.5, 2.5] and info["score"] == 10.0 and info["turns"] == 3
    t = seen["transcript"]
    assert [turn.role for turn in t.turns] == ["agent", "env"] * 3
    assert info["completion"] == t.text() == "()()" + " [0]" + "()()" + " [1]" + "()()" + " [2]"
    assert [s[4].get("turn") for s in steps] == [None, 0, None, 1, None, 2]


def test_a_responder_without_reward_model(tokenizer):
    env = make_env(tokenizer, lambda t: (None, 1.0, True), reward_model=None)
    env.reset(seed=0)
    _, reward, term, _, info = env.step(tokenizer.eos_token_id)
    assert (reward, term, info["score"], info["reward_components"]) == (1.0, True, 0.0, {})


@pytest.mark.parametrize("limit, expected", [
    (dict(max_turns=2), "max_turns"),
    (dict(max_new_tokens=5), "max_new_tokens"),
    (dict(max_episode_tokens=7), "max_episode_tokens"),
])
def test_each_limit_truncates_with_its_reason(tokenizer, limit, expected):
    env = make_env(tokenizer, lambda t: " more", max_turn_tokens=2, **limit)
    env.reset(seed=0)
    steps = play(env, [1000] * 50)
    _, _, term, trunc, info = steps[-1]
    assert trunc and not term and info["stop_reason"] == expected


def test_reply_that_does_not_fit_is_dropped(tokenizer):
    env = make_env(tokenizer, lambda t: "one two three four five", max_turn_tokens=2,
                   max_episode_tokens=5)
    obs, _ = env.reset(seed=0)
    steps = play(env, [1000] * 10)
    info = steps[-1][4]
    assert len(steps) == 2 and steps[-1][3] and info["stop_reason"] == "max_episode_tokens"
    assert info["dropped_text"] == "one two three four five" and info["inserted_text"] == ""
    assert steps[-1][0]["attention_mask"][P:].sum() == 2


def test_turn_limit_ends_a_turn_not_the_episode(tokenizer):
    env = make_env(tokenizer, lambda t: "ok", max_turn_tokens=3, max_turns=5)
    env.reset(seed=0)
    steps = play(env, [1000] * 7)
    assert [s[4].get("turn_end") for s in steps] == [None, None, "max_turn_tokens"] * 2 + [None]
    assert not any(s[2] or s[3] for s in steps)


def test_stop_string_in_inserted_text_does_not_end_the_next_turn(tokenizer):
    env = make_env(tokenizer, lambda t: "</calc> done.", stop_strings=["</calc>"], max_turns=3)
    env.reset(seed=0)
    calc = tokenizer("<calc>1+1</calc>", add_special_tokens=False)["input_ids"]
    steps = play(env, calc + [1000, 1001])
    assert steps[len(calc) - 1][4]["turn_end"] == "stop_string"
    assert [s[4] for s in steps[len(calc):]] == [{}, {}]  # the inserted "</calc>" ends nothing


def test_chat_template_inserts_a_user_turn_once(tokenizer):
    env = make_env(tokenizer, lambda t: "Higher.", chat_template=True, max_turn_tokens=2)
    env.reset(seed=0)
    eos = tokenizer.eos_token_id  # <|im_end|>: the agent closed its turn itself
    _, _, _, _, info = env.step(eos)
    text = tokenizer.decode(info["inserted_ids"])
    assert text == "\n<|im_start|>user\nHigher.<|im_end|>\n<|im_start|>assistant\n"
    env.step(1000)
    _, _, _, _, info = env.step(1000)  # cut by max_turn_tokens: the env closes the turn
    assert tokenizer.decode(info["inserted_ids"]).startswith("<|im_end|>\n<|im_start|>user\nHigher.")


def test_gymnasium_and_sb3_checkers_pass_on_multiturn_envs(tokenizer):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    for env in (make_env(tokenizer, "echo", max_turn_tokens=2, max_turns=3),
                make_env(tokenizer, None, agent_mask=True),
                gym.make("tokengym/GuessNumber-v0", tokenizer="tiny-llama").unwrapped,
                gym.make("tokengym/Calculator-v0", tokenizer="tiny-llama").unwrapped):
        check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True, skip_render_check=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(responder=None, max_turns=3), r"max_turns=3: turn limits apply to multi-turn"),
    (dict(responder=None, responder_kwargs={"x": 1}), r"responder_kwargs given without a responder"),
    (dict(responder="echo", agent_mask=False), r"agent_mask=False with a responder"),
    (dict(responder="echo", max_turns=0), r"max_turns must be a positive integer"),
    (dict(responder="echo", max_insert_tokens="8"), r"max_insert_tokens must be a positive integer"),
    (dict(responder="echo", max_episode_tokens=2**21), r"max_episode_tokens .*<= 1048576"),
    (dict(responder=None, reward_model=None), r"reward_model must be a name.*only with a responder"),
])
def test_bad_multiturn_settings_are_named(tokenizer, kwargs, match):
    responder = kwargs.pop("responder")
    with pytest.raises((ValueError, TypeError), match=match):
        make_env(tokenizer, responder, **kwargs)


def test_transcript_field_is_reserved(tokenizer):
    env = make_env(tokenizer, "echo", prompts=[{"prompt": "Hi", "transcript": "x"}])
    with pytest.raises(ValueError, match="'transcript' is reserved in multi-turn envs"):
        env.reset(seed=0)
