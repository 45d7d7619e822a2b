"""Ecosystem adapters: real reasoning-gym and textarena tasks through the tokengym contract.

Each test is skipped, with the install command, when its optional package is absent
(``make setup`` installs both extras).
"""

from __future__ import annotations

import random

import gymnasium as gym
import numpy as np
import pytest

from tokengym.envs import TurnLevelWrapper


def need(module: str, extra: str) -> None:
    pytest.importorskip(module, reason=f"optional package {module!r} is not installed: "
                                       f"pip install 'tokengym[{extra}]' (make setup does)")


def test_reasoning_gym_prompts_and_reward_model():
    need("reasoning_gym", "reasoning-gym")
    from tokengym.envs.adapters.reasoning_gym_adapter import reasoning_gym_prompts

    env = TurnLevelWrapper(gym.make("tokengym/ReasoningGym-v0", task="chain_sum", tokenizer="tiny-llama",
                                    max_new_tokens=24))
    for seed in range(3):
        _, info = env.reset(seed=seed)
        entry = env.unwrapped.prompt_record.fields["rg_entry"]
        assert info["prompt"].startswith(entry["question"])
        _, reward, term, _, info = env.step(f"<answer>{entry['answer']}</answer>")
        assert (reward, term) == (1.0, True) and info["reward_components"] == {"reasoning-gym": 1.0}
        env.reset(seed=seed)
        assert env.step("<answer>not a number</answer>")[1] == 0.0
        env.reset(seed=seed)
        assert env.step(f"{entry['answer']} (no tag)")[1] == 0.0
    train = {r["prompt"] for r in reasoning_gym_prompts("chain_sum", "train", size=200)}
    held_out = {r["prompt"] for r in reasoning_gym_prompts("chain_sum", "eval", size=50)}
    assert held_out and not train & held_out


def test_reasoning_gym_vector_env_steps_a_real_task():
    need("reasoning_gym", "reasoning-gym")
    envs = gym.make_vec("tokengym/ReasoningGym-v0", num_envs=2, vectorization_mode="vector_entry_point",
                        task="basic_arithmetic", tokenizer="tiny-llama", max_new_tokens=4)
    envs.reset(seed=0)
    for _ in range(4):
        _, reward, term, trunc, info = envs.step(np.array([1000, 1001]))
    assert trunc.all() and list(reward) == [0.0, 0.0]


def test_reasoning_gym_bad_task_is_named():
    need("reasoning_gym", "reasoning-gym")
    with pytest.raises(ValueError, match=r"unknown reasoning-gym task 'chain_summ'.*'chain_sum'"):
        gym.make("tokengym/ReasoningGym-v0", task="chain_summ", tokenizer="tiny-llama")


def test_textarena_game_through_the_responder():
    need("textarena", "textarena")
    state = random.getstate()
    env = TurnLevelWrapper(gym.make("tokengym/TextArena-v0", game="GuessTheNumber-v0-raw",
                                    tokenizer="tiny-llama"))
    _, info = env.reset(seed=0)
    assert "Guess The Number" in info["prompt"] and "between 1 and 20" in info["prompt"]
    low, high, total = 1, 20, 0.0
    for _ in range(12):
        guess = (low + high) // 2
        _, reward, term, trunc, info = env.step(f"My guess: [{guess}]")
        total += reward
        if term or trunc:
            break
        assert info["inserted_text"] in ("The target number is higher.", "The target number is lower.")
        low, high = (guess + 1, high) if info["inserted_text"].endswith("higher.") else (low, guess - 1)
    assert term and info["stop_reason"] == "responder_done" and total == 1.0
    assert "Congratulations" in info["inserted_text"]
    assert random.getstate() == state  # textarena's random.seed did not leak into the caller's


def test_textarena_native_vector_env_matches_sync():
    need("textarena", "textarena")
    from gymnasium.vector import SyncVectorEnv
    from test_vector_env import assert_same

    kw = dict(game="GuessTheNumber-v0-raw", tokenizer="tiny-llama", max_turn_tokens=3, max_turns=4)
    native = gym.make_vec("tokengym/TextArena-v0", num_envs=2, vectorization_mode="vector_entry_point", **kw)
    sync = SyncVectorEnv([lambda: gym.make("tokengym/TextArena-v0", **kw).unwrapped] * 2)
    assert_same(native.reset(seed=3), sync.reset(seed=3))
    rng = np.random.default_rng(0)
    for t in range(14):
        actions = rng.integers(300, 5000, size=2)
        assert_same(native.step(actions), sync.step(actions), f"step {t}")


def test_textarena_multi_player_game_is_refused():
    need("textarena", "textarena")
    with pytest.raises(ValueError, match="not a single-player game"):
        gym.make("tokengym/TextArena-v0", game="ConnectFour-v0-raw", tokenizer="tiny-llama")
