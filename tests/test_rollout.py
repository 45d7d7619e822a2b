"""Rollouts through env.step with a KV cache produce what the model itself would produce."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import SyncVectorEnv

from tokengym.agents.rollout import KVCacheDecoder, collect_rollout
from tokengym.envs import TextGenEnv, TextGenVectorEnv
from tokengym.models import load_causal_lm

KW = dict(max_prompt_tokens=12, max_new_tokens=6, reward_model="vader")


@pytest.fixture(scope="module")
def model():
    return load_causal_lm("tiny-llama", device="cpu")


def test_cached_logits_equal_full_forward(model, tokenizer, prompts):
    envs = TextGenVectorEnv(3, prompts=prompts, tokenizer=tokenizer, **KW)
    obs, _ = envs.reset(seed=0)
    ids = torch.from_numpy(obs["input_ids"][:, :12])
    mask = torch.from_numpy(obs["attention_mask"][:, :12])
    decoder = KVCacheDecoder(model)
    logits, _ = decoder.start(ids, mask)
    new = torch.tensor([1000, 2000, 3000])
    logits2, _ = decoder.advance(new)
    full_ids = torch.cat([ids, new[:, None]], 1)
    full_mask = torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = model(input_ids=full_ids, attention_mask=full_mask, position_ids=positions).logits
    torch.testing.assert_close(logits, ref[:, -2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits2, ref[:, -1], atol=1e-4, rtol=1e-4)


def test_greedy_rollout_equals_generate(model, tokenizer, prompts):
    envs = TextGenVectorEnv(4, prompts=prompts, tokenizer=tokenizer, **KW)
    rollout = collect_rollout(envs, model, seed=3, temperature=0)
    out = model.generate(
        input_ids=rollout.prompt_ids, attention_mask=rollout.prompt_mask, max_new_tokens=6,
        do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    generated = out[:, 12:]
    for i in range(4):
        n = int(rollout.lengths[i])
        assert rollout.tokens[i, :n].tolist() == generated[i, :n].tolist()
        assert rollout.infos[i]["completion"] == tokenizer.decode(
            rollout.tokens[i, :n][rollout.tokens[i, :n] != tokenizer.eos_token_id],
            skip_special_tokens=True)


def test_native_and_sync_vector_envs_give_the_same_rollout(model, tokenizer, prompts):
    native = TextGenVectorEnv(4, prompts=prompts, tokenizer=tokenizer, **KW)
    sync = SyncVectorEnv([lambda: TextGenEnv(prompts=prompts, tokenizer=tokenizer, **KW)] * 4)
    a = collect_rollout(native, model, seed=1, generator=torch.Generator().manual_seed(0))
    b = collect_rollout(sync, model, seed=1, generator=torch.Generator().manual_seed(0))
    for field in ("prompt_ids", "tokens", "mask", "logprobs", "rewards", "terminated"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field))
    assert a.infos == b.infos


def test_sampled_logprobs_match_the_model(model, tokenizer, prompts):
    envs = TextGenVectorEnv(2, prompts=prompts, tokenizer=tokenizer, **KW)
    r = collect_rollout(envs, model, seed=0, temperature=0.7, generator=torch.Generator().manual_seed(1))
    ids, mask = r.sequences()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    logp = torch.log_softmax(logits[:, 11:-1] / 0.7, -1).gather(-1, r.tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(logp[r.mask], r.logprobs[r.mask], atol=1e-4, rtol=1e-4)
    assert np.all(r.logprobs[~r.mask].numpy() == 0)
