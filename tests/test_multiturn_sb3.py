"""SB3 on multi-turn envs (issue 14): LMActorCriticPolicy accepts the observation's agent_mask (SB3
acts, stores and learns on agent tokens only: one SB3 step is one agent token, the inserted ones
are context), train_sb3 ends episodes at the env's limits without a bootstrap, and
KLPenaltyWrapper takes the KL at the agent's tokens with the inserted ones in the context."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from multiturn_helpers import ENV_KW, P

from tokengym.agents.kl_wrapper import KLPenaltyWrapper
from tokengym.agents.sb3 import LimitsEndEpisodes, LMActorCriticPolicy, _find_wrapper, train_sb3
from tokengym.envs import TextGenEnv
from tokengym.models import load_causal_lm

pytestmark = pytest.mark.usefixtures("one_thread")


def test_kl_wrapper_reads_inserted_tokens_as_context(tokenizer) -> None:
    reference = load_causal_lm("tiny-llama", device="cpu")
    policy = copy.deepcopy(reference)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    env = KLPenaltyWrapper(TextGenEnv(tokenizer=tokenizer, **ENV_KW), reference, beta=0.1,
                           policy=policy)
    rng = np.random.default_rng(0)
    env.reset(seed=1)
    steps, inserted = [], 0
    while True:
        obs, reward, term, trunc, info = env.step(int(rng.integers(0, 49152)))
        steps.append(info)
        inserted += len(info.get("inserted_ids", ()))
        if term or trunc:
            break
    assert inserted > 0
    ids = torch.from_numpy(obs["input_ids"])[None]
    am = torch.from_numpy(obs["attention_mask"])[None]
    cols = torch.nonzero(torch.from_numpy(obs["agent_mask"])).squeeze(-1)
    assert len(cols) == len(steps) and cols[0] == P
    with torch.no_grad():
        for model, key in ((reference, "ref_logprob"), (policy, "logprob")):
            logits = model(input_ids=ids, attention_mask=am,
                           position_ids=(am.cumsum(-1) - 1).clamp(min=0)).logits[0]
            logp = torch.log_softmax(logits[cols - 1].float(), -1).gather(
                -1, ids[0, cols, None]).squeeze(-1)
            got = torch.tensor([info[key] for info in steps])
            torch.testing.assert_close(got, logp, atol=1e-4, rtol=1e-4)


def test_sb3_ppo_trains_on_a_multiturn_env_without_bootstrapping_at_its_limits(tmp_path) -> None:
    env_kwargs = {"prompts": ["Hello there", "The film"], "reward_model": "vader",
                  "responder": "echo", "max_prompt_tokens": 8, "max_new_tokens": 6,
                  "max_turn_tokens": 2, "max_turns": 3, "max_insert_tokens": 8}
    model, metrics = train_sb3("ppo", "tokengym/TextGen-v0", model="tiny-llama",
                               total_timesteps=48, seed=3, out_dir=tmp_path, beta=0.05,
                               n_envs=2, env_kwargs=env_kwargs, n_steps=12, batch_size=12,
                               n_epochs=1)
    assert isinstance(model.policy, LMActorCriticPolicy)
    assert "agent_mask" in model.observation_space.spaces
    assert metrics["total_timesteps"] == 48
    assert metrics["episode_lengths"] and all(n == 6 for n in metrics["episode_lengths"])
    assert all(math.isfinite(r) for r in metrics["episode_rewards"] + metrics["episode_kls"])
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    for env in model.get_env().envs:  # the limits end episodes: SB3 adds no gamma * V(last obs)
        assert _find_wrapper(env, LimitsEndEpisodes) is not None
        assert _find_wrapper(env, KLPenaltyWrapper) is not None
    limited = LimitsEndEpisodes(TextGenEnv(tokenizer="tiny-llama", **{**env_kwargs, "reward_model": None}))
    limited.reset(seed=0)
    ends = [limited.step(300)[2:4] for _ in range(6)]
    assert ends[-1] == (True, False) and not any(t for t, _ in ends[:-1])
