"""The multi-turn tasks: the calculator's safety, Calculator/GuessNumber/Support episodes, splits."""

from __future__ import annotations

import gymnasium as gym
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokengym.envs import TurnLevelWrapper
from tokengym.envs.tasks.safe_calc import CalcError, evaluate, format_number


@pytest.mark.parametrize("expression, value", [
    ("1 + 2 * 3", 7), ("(17 * 23) - 45 + 12 * 3", 382), ("7 / 2", 3.5), ("2 ** 10", 1024),
    ("-3 + +4", 1), ("17 // 5", 3), ("17 % 5", 2), ("2 ** -1", 0.5), ("12 × 3 − 1", 35),
])
def test_calculator_evaluates_arithmetic(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize("expression, match", [
    ("__import__('os').system('ls')", "Call is not allowed"),
    ("x + 1", "Name is not allowed"),
    ("(1).real", "Attribute is not allowed"),
    ("[1, 2][0]", "Subscript is not allowed"),
    ("'a' * 3", "'a' is not a number"),
    ("True + 1", "True is not a number"),
    ("1j * 2", "1j is not a number"),
    ("1 < 2", "Compare is not allowed"),
    ("lambda: 1", "Lambda is not allowed"),
    ("9 ** 99", "too large"),
    ("10 ** 6 ** 2", "too large"),
    ("2 ** 10 ** 10", "too large"),
    ("1e300 * 10", "larger than 1e\\+12"),
    ("999999999999 * 999999999999", "the result is larger than 1e\\+15"),
    ("1 / 0", "division by zero"), ("1 % 0", "division by zero"), ("0 ** -1", "division by zero"),
    ("(-8) ** 0.5", "not a finite real number"),
    ("1 +", "not an arithmetic expression"), ("", "empty"),
    ("1" + "+1" * 150, "more than 200"), ("+".join(["1"] * 40), "more than 64 parts"),
])
def test_calculator_refuses_what_is_not_plain_arithmetic(expression, match):
    with pytest.raises(CalcError, match=match):
        evaluate(expression)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789+-*/%().e ", max_size=60))
def test_calculator_never_fails_another_way(expression):
    try:
        value = evaluate(expression)
    except CalcError:
        return
    assert isinstance(value, (int, float)) and abs(value) <= 10**15
    assert format_number(value)


def turn_env(env_id: str, **kwargs):
    return TurnLevelWrapper(gym.make(env_id, tokenizer="tiny-llama", **kwargs))


def test_calculator_episode_uses_the_tool_then_is_rewarded():
    env = turn_env("tokengym/Calculator-v0")
    _, info = env.reset(seed=0)
    record = env.unwrapped.prompt_record
    _, reward, term, trunc, info = env.step(f"<calc>{record.fields['expression']}</calc>")
    assert (reward, term, trunc) == (0.0, False, False)
    assert info["inserted_text"] == f"<result>{record.fields['answer']}</result>"
    _, reward, term, trunc, info = env.step(f"Answer: {record.fields['answer']}")
    assert (reward, term, info["stop_reason"]) == (1.0, True, "responder_done")
    # The tool's result in the transcript never answers for the agent: a wrong final answer is 0.
    env.reset(seed=0)
    env.step(f"<calc>{record.fields['expression']}</calc>")
    assert env.step("Answer: I do not know")[1] == 0.0
    env.reset(seed=0)
    assert "error: Call is not allowed" in env.step("<calc>os.system(1)</calc>")[4]["inserted_text"]


def test_guess_number_binary_search_solves_within_k():
    env = turn_env("tokengym/GuessNumber-v0", split="eval")
    for seed in range(3):
        env.reset(seed=seed)
        f = env.unwrapped.prompt_record.fields
        low, high, rewards = f["low"], f["high"], []
        while True:
            guess = (low + high) // 2
            _, reward, term, trunc, info = env.step(str(guess))
            rewards.append(reward)
            if term or trunc:
                break
            assert info["inserted_text"] in ("Higher.", "Lower.")
            low, high = (guess + 1, high) if info["inserted_text"] == "Higher." else (low, guess - 1)
        assert term and info["inserted_text"] == "Correct!" and rewards[-1] == 1.0
        assert len(rewards) <= f["k"] and sum(rewards) == 1.0
    env.reset(seed=0)
    k = env.unwrapped.prompt_record.fields["k"]
    steps = [env.step("no idea") for _ in range(k)]
    assert steps[0][4]["inserted_text"].startswith("Please answer with one whole number")
    assert steps[-1][2] and steps[-1][4]["inserted_text"].startswith("Out of turns")
    assert sum(s[1] for s in steps) == 0.0


def test_support_episode_with_a_language_model_customer():
    env = turn_env("tokengym/Support-v0", responder_kwargs={"model": "tiny-llama", "max_reply_tokens": 6})
    assert env.unwrapped.responder.max_turns == 2  # the task's settings refined, not replaced
    env.reset(seed=0)
    _, reward, term, _, info = env.step("I am so sorry, we will refund you today.")
    assert not term and info["turn"] == 0 and reward == 0.0  # tiny-llama's reply is noise, maybe ""
    _, reward, term, _, info = env.step("Thank you for your patience!")
    assert term and info["stop_reason"] == "responder_done" and -1.0 <= reward <= 1.0
    assert info["reward_components"] == {"customer-mood": reward}


@pytest.mark.parametrize("task, minimum, fields", [
    ("Calculator", 400, {"answer", "expression"}), ("GuessNumber", 400, {"low", "high", "secret", "k"}),
    ("Support", 100, set()),
])
def test_task_splits_are_large_and_disjoint(task, minimum, fields):
    train = gym.make(f"tokengym/{task}-v0", tokenizer="tiny-llama").unwrapped.episodes.source.records
    held_out = gym.make(f"tokengym/{task}-v0", tokenizer="tiny-llama", split="eval").unwrapped
    held_out = held_out.episodes.source.records
    assert len(train) >= minimum and len(held_out) >= 20
    assert not {r.text for r in train} & {r.text for r in held_out}
    assert all(fields <= set(r.fields) for r in train + held_out)


@pytest.mark.parametrize("task", ["Calculator", "GuessNumber"])
def test_native_vector_task_envs(task):
    envs = gym.make_vec(f"tokengym/{task}-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        tokenizer="tiny-llama")
    obs, _ = envs.reset(seed=0)
    assert obs["agent_mask"].shape == obs["input_ids"].shape == (3, envs.max_prompt_tokens
                                                                   + envs.max_episode_tokens)
    for _ in range(10):
        obs, *_ = envs.step(envs.action_space.sample())
    assert obs["agent_mask"].sum() > 0
