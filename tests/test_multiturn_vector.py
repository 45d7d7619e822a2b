"""Multi-turn native vector env == SyncVectorEnv over TextGenEnv, in every autoreset mode."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import length_reward, random_actions
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from test_vector_env import assert_same

from tokengym.envs import Reply, TextGenEnv, TextGenVectorEnv, Transcript

N = 4
REPLIES = ["higher", "lower please", "", "ok <calc>1+1</calc> then", "a longer reply with words"]


def responder(t: Transcript) -> Reply:
    """Deterministic, and different per prompt and agent text: rows insert different amounts and
    end after different numbers of turns."""
    key = len(t.record.text) + t.turn + len(t.last.token_ids)
    return Reply(text=REPLIES[key % len(REPLIES)], reward=0.25 * t.turn,
                 done=(len(t.record.text) + t.turn) % 5 == 4)


def kwargs(prompts, tokenizer, chat: bool) -> dict:
    return dict(prompts=prompts, tokenizer=tokenizer, reward_model=length_reward, responder=responder,
                max_prompt_tokens=40, max_new_tokens=14, max_turn_tokens=4, max_turns=4,
                max_insert_tokens=24, max_episode_tokens=60, stop_strings=["."],
                chat_template=chat)


def pair(prompts, tokenizer, mode, chat=False):
    kw = kwargs(prompts, tokenizer, chat)
    native = TextGenVectorEnv(N, autoreset_mode=mode, **kw)
    sync = SyncVectorEnv([lambda: TextGenEnv(**kw) for _ in range(N)], autoreset_mode=mode)
    return native, sync


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP,
                                  AutoresetMode.DISABLED])
def test_native_matches_sync_with_multiturn_episodes(tokenizer, prompts, mode, chat):
    native, sync = pair(prompts, tokenizer, mode, chat)
    assert native.single_observation_space == sync.single_observation_space
    assert set(native.single_observation_space.spaces) == {"input_ids", "attention_mask", "agent_mask"}
    assert native.max_episode_tokens == 60
    assert_same(native.reset(seed=42), sync.reset(seed=42), "reset")
    rng = np.random.default_rng(1)
    ended = np.zeros(N, dtype=bool)
    reasons, inserted_sizes, lengths = set(), set(), []
    steps_in_episode = np.zeros(N, dtype=int)
    for t in range(120):
        if mode == AutoresetMode.DISABLED and ended.any():
            mask = ended.copy()
            assert_same(native.reset(options={"reset_mask": mask}), sync.reset(options={"reset_mask": mask}),
                        f"masked reset {t}")
        actions = random_actions(rng, N, tokenizer.eos_token_id, p_eos=0.2)
        got, want = native.step(actions), sync.step(actions)
        for name, a, b in zip(("obs", "reward", "terminated", "truncated", "info"), got, want):
            assert_same(a, b, f"step {t} {name}")
        info = got[4]
        for i in np.flatnonzero(info.get("_inserted_ids", np.zeros(N, bool))):
            inserted_sizes.add(len(info["inserted_ids"][i]))
        final = info.get("final_info", info)
        for i in np.flatnonzero(final.get("_stop_reason", np.zeros(N, bool))):
            reasons.add(final["stop_reason"][i])
        ended = got[2] | got[3]
        steps_in_episode += 1
        lengths += steps_in_episode[ended].tolist()
        steps_in_episode[ended] = 0
        if t == 60:
            assert_same(native.reset(seed=7), sync.reset(seed=7), "reseed")
            ended[:] = False
            steps_in_episode[:] = 0
    # Rows inserted different amounts (0 included) and episodes ended in different ways and lengths.
    assert len(inserted_sizes) >= 3 and 0 in inserted_sizes
    assert "responder_done" in reasons and len(reasons) >= 3, reasons
    assert len(set(lengths)) >= 4


def test_one_reward_model_call_per_step_multiturn(tokenizer, prompts):
    calls = []

    def rm(prompts, completions, transcript):
        calls.append(len(completions))
        assert all(isinstance(t, Transcript) for t in transcript)
        return [0.0] * len(completions)

    envs = TextGenVectorEnv(N, prompts=prompts, tokenizer=tokenizer, reward_model=rm,
                            responder=lambda t: ("next", None, t.turn == 1), max_turn_tokens=2,
                            max_prompt_tokens=16, max_new_tokens=8)
    envs.reset(seed=0)
    for _ in range(4):
        envs.step(np.full(N, 1000))
    assert calls == [N]


def test_every_view_reports_the_observation_width(tokenizer, prompts):
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    from tokengym.envs import text_env_view

    native, sync = pair(prompts, tokenizer, AutoresetMode.NEXT_STEP)
    for envs in (native, sync, RecordEpisodeStatistics(native)):
        view = text_env_view(envs)
        assert (view.max_prompt_tokens, view.max_new_tokens, view.max_episode_tokens) == (40, 14, 60)
        assert envs.single_observation_space["agent_mask"].shape == (40 + 60,)
