"""Bad input gets a clear error, and no error leaves the env unusable."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import length_reward

from tokengym.envs import TextGenEnv, TextGenVectorEnv
from tokengym.reward_models import RewardModelError


def make_env(tokenizer, prompts, **kwargs) -> TextGenEnv:
    kwargs.setdefault("reward_model", length_reward)
    return TextGenEnv(prompts=prompts, tokenizer=tokenizer, max_prompt_tokens=16, max_new_tokens=3, **kwargs)


@pytest.mark.parametrize(
    "action, error, words",
    [
        (-1, ValueError, "out of range"),
        (10**6, ValueError, "out of range"),
        (3.0, TypeError, "integer token id"),
        ("12", TypeError, "integer token id"),
        (True, TypeError, "integer token id"),
        (np.array([1, 2]), TypeError, "integer token id"),
        (np.float32(5), TypeError, "integer token id"),
    ],
)
def test_bad_actions(tokenizer, prompts, action, error, words):
    env = make_env(tokenizer, prompts)
    env.reset(seed=0)
    with pytest.raises(error, match=words):
        env.step(action)
    env.step(np.int64(1000))  # still usable
    env.step(np.array(1000))  # 0-d integer arrays are actions too


def test_step_before_reset_and_after_end(tokenizer, prompts):
    env = make_env(tokenizer, prompts)
    with pytest.raises(ValueError, match="reset"):
        env.step(1000)
    env.reset(seed=0)
    for _ in range(3):
        env.step(1000)
    with pytest.raises(ValueError, match="ended.*reset"):
        env.step(1000)
    env.reset()
    env.step(1000)


@pytest.mark.parametrize(
    "prompts, error, words",
    [
        ([], ValueError, "empty"),
        (["ok", "   "], ValueError, r"prompts\[1\].*empty"),
        ([{"text": "no prompt key"}], ValueError, "'prompt' key"),
        ([42], TypeError, "string or a record"),
        ("no/such/file.txt", ValueError, "not an existing file"),
        (42, TypeError, "prompts must be"),
    ],
)
def test_bad_prompt_sources(tokenizer, prompts, error, words):
    with pytest.raises(error, match=words):
        make_env(tokenizer, prompts)


def test_bad_constructor_arguments(tokenizer, prompts):
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        TextGenEnv(prompts=prompts, reward_model=length_reward, tokenizer=tokenizer, max_new_tokens=0)
    with pytest.raises(ValueError, match="max_prompt_tokens must be a positive integer"):
        TextGenEnv(prompts=prompts, reward_model=length_reward, tokenizer=tokenizer,
                   max_prompt_tokens=2.5)
    with pytest.raises(TypeError, match="render_mode"):
        make_env(tokenizer, prompts, render_mode="rgb_array")
    with pytest.raises(ValueError, match="not a single token"):
        make_env(tokenizer, prompts, stop_tokens=["not-a-token-at-all"])
    with pytest.raises(TypeError, match="stop_strings"):
        make_env(tokenizer, prompts, stop_strings="\n")
    with pytest.raises(TypeError, match="tokenizer must be"):
        make_env(object(), prompts)
    with pytest.raises(ValueError, match="unknown reset option"):
        make_env(tokenizer, prompts).reset(options={"promt": "typo"})


def test_unknown_env_kwargs_listed(tokenizer):
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['max_tokens'\].*max_new_tokens"):
        gym.make("tokengym/Sentiment-v0", tokenizer="tiny-llama", max_tokens=5)
    with pytest.raises(TypeError, match="unknown keyword"):
        gym.make_vec("tokengym/TextGen-v0", num_envs=2, vectorization_mode="vector_entry_point",
                     prompts=["a"], reward_model="vader", tokenizer="tiny-llama", colour="red")


def test_unknown_reward_model_name_suggests_closest(tokenizer, prompts):
    with pytest.raises(ValueError, match="unknown reward model 'vadr'.*Did you mean 'vader'.*keywords"):
        make_env(tokenizer, prompts, reward_model="vadr")
    with pytest.raises(ValueError, match="cannot import module"):
        make_env(tokenizer, prompts, reward_model="no_such_module_xyz:score")
    with pytest.raises(TypeError, match="reward_model must be"):
        make_env(tokenizer, prompts, reward_model=3)


def test_import_string_reward_model(tokenizer, prompts):
    env = make_env(tokenizer, prompts, reward_model="conftest:length_reward")
    env.reset(seed=0)
    for _ in range(3):
        _, reward, *_rest, info = env.step(1000)
    assert reward == len(info["completion"]) > 0


@pytest.mark.parametrize(
    "bad_rm, words",
    [
        (lambda p, c: [1.0, 2.0], r"shape \(2,\).*expected \(1,\)"),
        (lambda p, c: [float("nan")], r"nan for sample 0.*Completion:"),
        (lambda p, c: [float("inf")], "must be finite"),
        (lambda p, c: 1 / 0, "raised ZeroDivisionError"),
        (lambda p, c: "high", "not an array-like"),
    ],
)
def test_reward_model_faults(tokenizer, prompts, bad_rm, words):
    env = make_env(tokenizer, prompts, reward_model=bad_rm)
    env.reset(seed=0)
    env.step(1000)
    env.step(1000)
    with pytest.raises(RewardModelError, match=words) as excinfo:
        env.step(1000)
    assert excinfo.value.model_name == "<lambda>"
    assert "reset()" in str(excinfo.value)
    # The env is not corrupted: stepping the broken episode is refused, reset works.
    with pytest.raises(ValueError, match="reset"):
        env.step(1000)
    obs, _ = env.reset()
    assert obs in env.observation_space


def test_vector_env_bad_input(tokenizer, prompts):
    envs = TextGenVectorEnv(3, prompts=prompts, reward_model=length_reward, tokenizer=tokenizer,
                            max_prompt_tokens=16, max_new_tokens=3)
    with pytest.raises(ValueError, match="reset"):
        envs.step(np.array([1, 2, 3]))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        envs.step(np.array([1, 2]))
    with pytest.raises(TypeError, match="integer token ids"):
        envs.step(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"actions\[1\] = -4 is out of range"):
        envs.step(np.array([1, -4, 3]))
    with pytest.raises(TypeError, match="reset_mask"):
        envs.reset(options={"reset_mask": [True, False, True]})
    with pytest.raises(ValueError, match="selects no sub-environment"):
        envs.reset(options={"reset_mask": np.zeros(3, dtype=bool)})
    with pytest.raises(ValueError, match="seed list has 2 entries"):
        envs.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="autoreset_mode 'Sometimes'"):
        TextGenVectorEnv(2, prompts=prompts, reward_model=length_reward, tokenizer=tokenizer,
                         autoreset_mode="Sometimes")
    envs.step(np.array([1000, 1000, 1000]))  # nothing above corrupted the state


def test_vector_env_reward_fault_then_reset(tokenizer, prompts):
    envs = TextGenVectorEnv(2, prompts=prompts, reward_model=lambda p, c: [float("nan")] * len(c),
                            tokenizer=tokenizer, max_prompt_tokens=16, max_new_tokens=2)
    envs.reset(seed=0)
    envs.step(np.array([1000, 1000]))
    with pytest.raises(RewardModelError):
        envs.step(np.array([1000, 1000]))
    with pytest.raises(ValueError, match="reset"):
        envs.step(np.array([1000, 1000]))
    obs, _ = envs.reset()
    assert obs in envs.observation_space
