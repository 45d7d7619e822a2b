"""The single-env contract: spaces, observations, episode end, rewards, infos, prompts, seeding."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import length_reward, random_actions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokengym.envs import TextGenEnv


def make_env(tokenizer, prompts, **kwargs) -> TextGenEnv:
    kwargs.setdefault("reward_model", length_reward)
    kwargs.setdefault("max_prompt_tokens", 16)
    kwargs.setdefault("max_new_tokens", 6)
    return TextGenEnv(prompts=prompts, tokenizer=tokenizer, **kwargs)


def play(env, actions):
    out = []
    for a in actions:
        step = env.step(int(a))
        out.append(step)
        if step[2] or step[3]:
            break
    return out


def test_spaces_and_layout(tokenizer, prompts):
    env = make_env(tokenizer, prompts)
    assert env.action_space == gym.spaces.Discrete(len(tokenizer))
    assert env.observation_space["input_ids"].shape == (22,)
    obs, info = env.reset(seed=3)
    assert obs in env.observation_space
    ids, mask = obs["input_ids"], obs["attention_mask"]
    n = info["prompt_tokens"]
    # Left-padded prompt ending at column P-1, nothing generated yet.
    assert mask[:16].tolist() == [0] * (16 - n) + [1] * n
    assert mask[16:].sum() == 0
    assert (ids[mask == 0] == tokenizer.pad_token_id).all()
    assert tokenizer.decode(ids[16 - n:16]) == info["prompt"]
    obs, *_ = env.step(1000)
    assert obs["input_ids"][16] == 1000 and obs["attention_mask"][16] == 1
    assert obs in env.observation_space


def test_truncation_reward_and_info(tokenizer, prompts):
    calls = []

    def rm(prompts, completions):
        calls.append((list(prompts), list(completions)))
        return [7.5]

    env = make_env(tokenizer, prompts, reward_model=rm)
    _, reset_info = env.reset(seed=0)
    actions = [1000, 1001, 1002, 1003, 1004, 1005]
    steps = play(env, actions)
    assert len(steps) == 6
    assert all(s[1] == 0.0 and not s[2] and not s[3] for s in steps[:-1])
    obs, reward, terminated, truncated, info = steps[-1]
    assert (reward, terminated, truncated) == (7.5, False, True)
    completion = tokenizer.decode(actions)
    assert calls == [([reset_info["prompt"]], [completion])]
    assert info["completion"] == completion
    assert info["stop_reason"] == "max_new_tokens"
    assert info["reward_components"] == {"rm": 7.5}
    assert info["completion_tokens"] == 6
    assert info["prompt_id"] == reset_info["prompt_id"]


def test_eos_terminates_and_is_not_part_of_completion(tokenizer, prompts):
    env = make_env(tokenizer, prompts)
    env.reset(seed=0)
    steps = play(env, [1000, 1001, tokenizer.eos_token_id, 1002])
    assert len(steps) == 3
    _, reward, terminated, truncated, info = steps[-1]
    assert terminated and not truncated
    assert info["completion"] == tokenizer.decode([1000, 1001])
    assert reward == len(info["completion"])
    assert info["stop_reason"] == "stop_token"


def test_eos_on_last_allowed_token_is_termination(tokenizer, prompts):
    env = make_env(tokenizer, prompts, max_new_tokens=2)
    env.reset(seed=0)
    _, _, terminated, truncated, _ = play(env, [1000, tokenizer.eos_token_id])[-1]
    assert terminated and not truncated


def test_configurable_stop_tokens_and_strings(tokenizer, prompts):
    stop_id = tokenizer.convert_tokens_to_ids("Ġand")
    env = make_env(tokenizer, prompts, stop_tokens=["Ġand"], max_new_tokens=10)
    env.reset(seed=0)
    steps = play(env, [1000, tokenizer.eos_token_id, stop_id])
    assert len(steps) == 3 and steps[-1][2]  # EOS is no longer a stop token; "and" is

    dot = tokenizer.encode(" end.")
    env = make_env(tokenizer, prompts, stop_strings=["."], max_new_tokens=10)
    env.reset(seed=0)
    steps = play(env, [1000] + dot + [1001])
    _, _, terminated, _, info = steps[-1]
    assert terminated and info["stop_reason"] == "stop_string"
    assert len(steps) == 1 + len(dot)
    assert "." not in info["completion"] and info["completion"].endswith("end")


def test_same_seed_same_prompt_order(tokenizer, prompts):
    def order(seed):
        env = make_env(tokenizer, prompts)
        ids = [env.reset(seed=seed)[1]["prompt_id"]]
        ids += [env.reset()[1]["prompt_id"] for _ in range(9)]
        return ids

    first = order(11)
    assert first == order(11)
    assert first != order(12)
    # Shuffled passes: each prompt exactly once per pass of len(prompts) episodes.
    assert sorted(first[:5]) == list(range(5)) and sorted(first[5:]) == list(range(5))


def test_forced_prompt_and_truncation(tokenizer, prompts):
    env = make_env(tokenizer, prompts, max_prompt_tokens=4)
    long_prompt = "one two three four five six seven eight"
    obs, info = env.reset(options={"prompt": long_prompt})
    assert info["prompt_truncated"] and info["prompt_id"] == -1
    assert info["prompt"] == long_prompt
    kept = tokenizer.decode(obs["input_ids"][:4])
    assert long_prompt.endswith(kept.strip())  # the left part was cut
    _, info = env.reset(options={"prompt": "Hi"})
    assert not info["prompt_truncated"]


def test_prompt_sources(tokenizer, tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    env = make_env(tokenizer, txt)
    seen = {env.reset(seed=s)[1]["prompt"] for s in range(20)}
    assert seen == {"first prompt", "second prompt"}

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps({"prompt": f"q{i}", "answer": i}) for i in range(3)))
    got = {}

    def rm(prompts, completions, answer):
        got["answer"] = answer
        return [0.0] * len(prompts)

    env = make_env(tokenizer, jsonl, reward_model=rm)
    _, info = env.reset(seed=0)
    play(env, [1000] * 6)
    assert got["answer"] == [int(info["prompt"][1:])]

    env = make_env(tokenizer, lambda rng: f"count to {rng.integers(10)}")
    a = [env.reset(seed=5)[1]["prompt"] for _ in range(1)] + [env.reset()[1]["prompt"] for _ in range(4)]
    b = [env.reset(seed=5)[1]["prompt"] for _ in range(1)] + [env.reset()[1]["prompt"] for _ in range(4)]
    assert a == b and all(p.startswith("count to ") for p in a)


def test_record_fields_only_reach_reward_models_that_take_them(tokenizer):
    records = [{"prompt": "Say hi", "keywords": ["hi"]}]
    env = make_env(tokenizer, records)  # length_reward takes no fields: must still work
    env.reset(seed=0)
    assert play(env, [1000] * 6)[-1][3]

    env = make_env(tokenizer, records, reward_model="keywords")
    env.reset(seed=0)
    hi = tokenizer.encode(" hi")
    steps = play(env, hi + [tokenizer.eos_token_id])
    assert steps[-1][1] == 1.0


def test_chat_template(tokenizer):
    env = make_env(tokenizer, ["What is 2+2?"], chat_template=True, max_prompt_tokens=48)
    obs, info = env.reset(seed=0)
    text = tokenizer.decode(obs["input_ids"][obs["attention_mask"] == 1])
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert info["prompt"] == "What is 2+2?"


def test_render_modes(tokenizer, prompts, capsys):
    env = make_env(tokenizer, prompts, render_mode="ansi")
    _, info = env.reset(seed=0)
    env.step(1000)
    assert env.render() == info["prompt"] + tokenizer.decode([1000])
    env = make_env(tokenizer, prompts, render_mode="human")
    _, info = env.reset(seed=0)
    assert info["prompt"] in capsys.readouterr().out


def test_every_observation_in_space(tokenizer, prompts):
    env = make_env(tokenizer, prompts, max_new_tokens=8)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for a in random_actions(rng, 200, tokenizer.eos_token_id):
        assert obs in env.observation_space
        obs, _, term, trunc, _ = env.step(int(a))
        if term or trunc:
            obs, _ = env.reset()


def test_gym_make_registered_ids(tokenizer):
    env = gym.make("tokengym/Sentiment-v0", tokenizer="tiny-llama")
    obs, info = env.reset(seed=0)
    assert env.unwrapped.episodes.reward_name == "vader"
    assert obs in env.observation_space
    eval_env = gym.make("tokengym/Sentiment-v0", tokenizer="tiny-llama", split="eval")
    train = {r.text for r in env.unwrapped.episodes.source.records}
    held_out = {r.text for r in eval_env.unwrapped.episodes.source.records}
    assert len(train) >= 200 and len(held_out) >= 50
    assert not train & held_out
    env = gym.make("tokengym/TextGen-v0", prompts=["Hello"], reward_model=length_reward,
                   tokenizer="tiny-llama", max_new_tokens=3)
    env.reset(seed=0)
    assert env.unwrapped.episodes.max_new_tokens == 3


ALL_IDS = ["tokengym/TextGen-v0", "tokengym/Sentiment-v0", "tokengym/Keywords-v0", "tokengym/Length-v0",
           "tokengym/Arithmetic-v0"]


@pytest.mark.parametrize("task, minimum", [("Sentiment", 200), ("Keywords", 400), ("Length", 400),
                                           ("Arithmetic", 400)])
def test_task_prompt_sets_are_large_and_disjoint(task, minimum):
    train = gym.make(f"tokengym/{task}-v0", tokenizer="tiny-llama").unwrapped.episodes.source.records
    held_out = gym.make(f"tokengym/{task}-v0", tokenizer="tiny-llama", split="eval").unwrapped
    held_out = held_out.episodes.source.records
    assert len(train) >= minimum and len(held_out) >= 50
    assert not {r.text for r in train} & {r.text for r in held_out}
    if task != "Sentiment":  # record tasks carry the data their reward model needs
        field = {"Keywords": "keywords", "Length": "target", "Arithmetic": "answer"}[task]
        assert all(field in r.fields for r in train + held_out)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_gymnasium_and_sb3_checkers(env_id):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    kwargs = {"tokenizer": "tiny-llama"}
    if env_id == "tokengym/TextGen-v0":
        kwargs.update(prompts=["Hello there", "Once upon a time"], reward_model="vader")
    env = gym.make(env_id, **kwargs)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True, skip_render_check=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=80)
    .filter(lambda s: s.strip()),
    actions=st.lists(st.integers(0, 49151), min_size=1, max_size=10),
)
def test_any_prompt_and_actions_keep_the_contract(tokenizer, prompt, actions):
    env = make_env(tokenizer, ["unused"], max_prompt_tokens=8, max_new_tokens=4)
    if not tokenizer(prompt)["input_ids"]:  # e.g. '\x06': no token to condition on
        with pytest.raises(ValueError, match="tokenizes to nothing"):
            env.reset(options={"prompt": prompt})
        return
    obs, info = env.reset(options={"prompt": prompt})
    assert obs in env.observation_space
    assert 1 <= info["prompt_tokens"] <= 8
    assert info["prompt_truncated"] == (len(tokenizer(prompt)["input_ids"]) > 8)
    for t, a in enumerate(actions):
        obs, reward, term, trunc, info = env.step(a)
        assert obs in env.observation_space
        assert obs["attention_mask"][8:].sum() == t + 1
        if term or trunc:
            assert term == (a == tokenizer.eos_token_id) and trunc == (not term and t == 3)
            assert reward == len(info["completion"])
            break
        assert reward == 0.0 and info == {}
