"""The native vector env returns exactly what SyncVectorEnv over TextGenEnv returns."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import length_reward, random_actions
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from tokengym.envs import TextGenEnv, TextGenVectorEnv

N = 4
KW = dict(max_prompt_tokens=12, max_new_tokens=5, reward_model=length_reward)


def assert_same(a, b, where=""):
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a)} != {set(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert a.shape == b.shape, where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
        assert a.dtype == b.dtype, f"{where}: {a.dtype} != {b.dtype}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_matches_sync_vector_env(tokenizer, prompts, mode):
    native = TextGenVectorEnv(N, prompts=prompts, tokenizer=tokenizer, autoreset_mode=mode, **KW)
    sync = SyncVectorEnv(
        [lambda: TextGenEnv(prompts=prompts, tokenizer=tokenizer, **KW) for _ in range(N)],
        autoreset_mode=mode,
    )
    assert native.single_observation_space == sync.single_observation_space
    assert native.observation_space == sync.observation_space
    assert native.action_space == sync.action_space
    assert native.metadata["autoreset_mode"] == mode

    assert_same(native.reset(seed=42), sync.reset(seed=42), "reset")
    rng = np.random.default_rng(0)
    endings = 0
    for t in range(60):
        actions = random_actions(rng, N, tokenizer.eos_token_id, p_eos=0.2)
        got, want = native.step(actions), sync.step(actions)
        for name, a, b in zip(("obs", "reward", "terminated", "truncated", "info"), got, want):
            assert_same(a, b, f"step {t} {name}")
        endings += int(np.sum(got[2] | got[3]))
        if t == 30:  # a reseed in the middle changes both the same way
            assert_same(native.reset(seed=7), sync.reset(seed=7), "reseed")
    assert endings > 20  # the run exercised many autoresets, both terminations and truncations


def test_disabled_mode_with_reset_mask(tokenizer, prompts):
    def pair():
        native = TextGenVectorEnv(2, prompts=prompts, tokenizer=tokenizer,
                                  autoreset_mode="Disabled", **KW)
        sync = SyncVectorEnv([lambda: TextGenEnv(prompts=prompts, tokenizer=tokenizer, **KW)] * 2,
                             autoreset_mode=AutoresetMode.DISABLED)
        return native, sync

    native, sync = pair()
    assert_same(native.reset(seed=1), sync.reset(seed=1))
    eos = tokenizer.eos_token_id
    step = np.array([eos, 1000])
    assert_same(native.step(step), sync.step(step))
    with pytest.raises(ValueError, match=r"\[0\] have ended.*reset_mask"):
        native.step(np.array([1000, 1000]))
    mask = np.array([True, False])
    assert_same(native.reset(options={"reset_mask": mask}), sync.reset(options={"reset_mask": mask}))
    step = np.array([1000, 1000])
    assert_same(native.step(step), sync.step(step))


def test_one_reward_model_call_per_step(tokenizer, prompts):
    calls = []

    def rm(prompts, completions):
        calls.append(len(completions))
        return [0.0] * len(completions)

    envs = TextGenVectorEnv(N, prompts=prompts, tokenizer=tokenizer, reward_model=rm,
                            max_prompt_tokens=12, max_new_tokens=3)
    envs.reset(seed=0)
    for _ in range(3):
        envs.step(np.full(N, 1000))
    assert calls == [N]  # all four episodes truncated together: one batched call


def test_forced_prompt_for_all_rows_and_make_vec(tokenizer):
    envs = gym.make_vec("tokengym/Sentiment-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        tokenizer="tiny-llama")
    assert isinstance(envs, TextGenVectorEnv)
    _, info = envs.reset(seed=0, options={"prompt": "Same prompt"})
    assert list(info["prompt"]) == ["Same prompt"] * 3
    _, info = envs.reset(seed=0)
    assert len(set(info["prompt"])) == 3
