"""Rule-based built-ins (vader, keywords, length, regex, repetition, arithmetic) on real text,
and per-prompt fields reaching them through the env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.reward_models import RewardModelError, make, score
from tokengym.reward_models.rules import first_number

P = ["Tell me about your day."] * 4


def test_vader_ranks_positive_over_negative() -> None:
    rm = make("vader")
    r = rm(P[:2], ["What a wonderful, happy day, I loved it!", "A horrible, sad, awful day."])
    assert r.dtype == np.float32 and r.shape == (2,)
    assert r[0] > 0.5 > -0.5 > r[1]


def test_keywords_coverage_and_per_prompt_field() -> None:
    rm = make("keywords", words="sun, beach")
    assert rm(P[:2], ["The sun was out at the beach.", "It rained on the sunbeach."]).tolist() == [
        1.0,
        0.0,
    ]
    r = rm(P[:2], ["cats and dogs", "cats and dogs"], keywords=[["cats", "mice"], None])
    assert r.tolist() == [0.5, 0.0]


def test_length_peaks_at_target_and_falls_linearly() -> None:
    rm = make("length", target=4)
    r = rm(P, ["one two three four", "one two", "one two three four five six", ""])
    np.testing.assert_allclose(r, [1.0, 0.5, 0.5, 0.0])
    assert make("length", target=4, tolerance=8)(P[:1], ["one two"])[0] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="target"):
        make("length", target=0)
    # A per-prompt target (the Length-v0 task's records) overrides the constructor's.
    r = rm(P[:3], ["one two", "one two", "a b c d e f"], target=[2, None, 3])
    np.testing.assert_allclose(r, [1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="target of sample 0"):
        rm(P[:1], ["x"], target=[0])


def test_length_task_rewards_the_requested_count(tokenizer) -> None:
    import gymnasium as gym

    env = gym.make("tokengym/Length-v0", tokenizer="tiny-llama")
    _, info = env.reset(seed=0, options={"prompt": {"prompt": "Say three words.", "target": 3}})
    for token in tokenizer.encode(" red green blue") + [tokenizer.eos_token_id]:
        _, reward, terminated, _, info = env.step(token)
    assert terminated and reward == 1.0


def test_regex_modes_and_values() -> None:
    rm = make("regex", pattern=r"\bgreat\b", ignore_case=True, match=2.0, no_match=-1.0)
    assert rm(P[:2], ["A GREAT day", "greatest day"]).tolist() == [2.0, -1.0]
    full = make("regex", pattern=r"\d+", mode="fullmatch")
    assert full(P[:2], ["123", "123 apples"]).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="not a valid regular expression"):
        make("regex", pattern="(unclosed")


def test_repetition_penalises_repeated_ngrams() -> None:
    rm = make("repetition", n=2)
    r = rm(P[:3], ["the cat sat on the mat", "good good good good", "hi"])
    assert r[0] == 0.0  # five distinct bigrams
    assert r[1] == pytest.approx(1 / 3 - 1)  # one distinct bigram out of three
    assert r[2] == 0.0  # shorter than n words: nothing repeats
    assert make("repetition", n=1)(P[:1], ["the the the the"])[0] == pytest.approx(-0.75)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", 42.0),
        ("-3 apples", -3.0),
        ("about 1,250 people", 1250.0),
        ("pi is 3.14 or so", 3.14),
        ("x2 and then 7", 7.0),
        ("no digits here", None),
    ],
)
def test_first_number(text: str, expected: float | None) -> None:
    assert first_number(text) == expected


def test_arithmetic_reads_the_answer_field() -> None:
    completions = ["The answer is 42.", "42.0", "40 + 2 = 42", "It is 42, not 41", "no idea"]
    kwargs = {"answer": [42, "42", 42, 42, 42]}
    # The last number is the answer by default: restating the question is not penalised.
    assert make("arithmetic")(["What is 40 + 2?"] * 5, completions, **kwargs).tolist() == [
        1.0, 1.0, 1.0, 0.0, 0.0]
    assert make("arithmetic", pick="first")(["q"] * 5, completions, **kwargs).tolist() == [
        1.0, 1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="pick='middle'"):
        make("arithmetic", pick="middle")


def test_arithmetic_without_answers_names_the_problem() -> None:
    rm = make("arithmetic")
    with pytest.raises(RewardModelError, match="'answer' field") as info:
        score(rm, ["q"], ["5"])
    assert info.value.model_name == "arithmetic"
    with pytest.raises(RewardModelError) as info:
        score(rm, ["q", "q"], ["5", "six and a half"], {"answer": [5, None]})
    assert info.value.index == 1 and "six and a half" in info.value.excerpt


def _play(env: gym.Env, prompt: object, text: str) -> tuple[float, dict]:
    """Force ``prompt``, write ``text`` token by token, then EOS; return the final reward/info."""
    env.reset(options={"prompt": prompt})
    tok = env.unwrapped.tokenizer
    for action in tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]:
        _, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return float(reward), info
    raise AssertionError("episode did not end")


def test_arithmetic_through_the_env_with_prompt_records() -> None:
    records = [
        {"prompt": "What is 17 + 25?", "answer": 42},
        {"prompt": "What is 3 * 3?", "answer": 9},
    ]
    env = gym.make(
        "tokengym/TextGen-v0",
        prompts=records,
        reward_model="arithmetic",
        tokenizer="tiny-llama",
        max_new_tokens=12,
    )
    assert _play(env, records[0], " It is 42.")[0] == 1.0
    assert _play(env, records[1], " It is 42.")[0] == 0.0
    reward, info = _play(env, records[1], " 9")
    assert reward == 1.0 and info["reward_components"] == {"arithmetic": 1.0}
