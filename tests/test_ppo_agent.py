"""PPOAgent on tiny-llama: zero KL at the start, resume exactness, native vs Sync vector env."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tokengym.agents.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from tokengym.agents.policy import ActorCritic, completion_logits, token_logprobs
from tokengym.agents.ppo import PPOAgent
from tokengym.agents.ppo_config import PPOConfig
from tokengym.agents.toy_task import make_toy_envs
from tokengym.models import load_causal_lm

SMALL = dict(num_envs=4, epochs=2, num_minibatches=2, lr=1e-3, temperature=0.5, beta=0.1, seed=3)


# Tiny-model ops are too small to gain from threads; one thread avoids contention stalls.
pytestmark = pytest.mark.usefixtures("one_thread")


def make_agent(tokenizer, sync: bool = False, **changes) -> PPOAgent:
    model = load_causal_lm("tiny-llama", device="cpu")
    config = PPOConfig(**{**SMALL, **changes})
    envs = make_toy_envs(tokenizer, model, config.num_envs, max_new_tokens=5, sync=sync)
    return PPOAgent(envs, model, config)


def params(agent: PPOAgent) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in agent.policy.trainable_state_dict().items()}


def test_kl_is_exactly_zero_when_policy_is_reference(tokenizer) -> None:
    agent = make_agent(tokenizer)
    rollout = agent.collect()
    ids, am = rollout.sequences()
    g = rollout.tokens.shape[1]
    ref = agent.policy.reference_logprobs(ids, am, rollout.tokens, 0.5, agent.num_actions)
    with torch.no_grad():
        logits, _ = completion_logits(agent.policy.lm, ids, am, g)
    pol = token_logprobs(logits, rollout.tokens, 0.5, agent.num_actions)[0]
    assert torch.equal(pol - ref, torch.zeros_like(pol))  # same forward, bit for bit
    # The rollout's KV-cached log-probs agree with the batched forward to float precision.
    _, metrics = agent.prepare(rollout)
    assert abs(metrics["kl_mean"]) < 1e-4


def test_lora_reference_is_base_model_with_adapters_disabled(tokenizer) -> None:
    agent = make_agent(tokenizer, lora=True, lora_r=4)
    assert agent.policy.ref is None  # no second copy
    _, metrics = agent.prepare(agent.collect())
    assert abs(metrics["kl_mean"]) < 1e-4
    agent.train_iteration()
    agent.train_iteration()
    _, metrics = agent.prepare(agent.collect())
    assert metrics["kl_mean"] != 0.0  # the adapters moved the policy away from the base


def test_update_changes_policy_and_reports_metrics(tokenizer) -> None:
    agent = make_agent(tokenizer, value_model="separate")
    before = params(agent)
    record = agent.train_iteration()
    for key in ("iteration", "reward_mean", "kl_mean", "beta", "entropy", "value_loss",
                "policy_loss", "approx_kl", "clip_fraction", "grad_norm"):
        assert key in record
    assert record["iteration"] == 1
    after = params(agent)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_grad_accumulation_gives_the_same_update(tokenizer) -> None:
    a = make_agent(tokenizer, epochs=1)
    b = make_agent(tokenizer, epochs=1, grad_accum_steps=2)
    a.train_iteration()
    b.train_iteration()
    pa, pb = params(a), params(b)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=1e-5, rtol=1e-4)


def test_resume_continues_exactly(tokenizer, tmp_path: Path) -> None:
    straight = make_agent(tokenizer, adaptive_kl=True, adaptive_kl_horizon=20)
    for _ in range(4):
        straight.train_iteration()

    first = make_agent(tokenizer, adaptive_kl=True, adaptive_kl_horizon=20)
    first.train_iteration()
    first.train_iteration()
    ckpt = save_checkpoint(tmp_path / "checkpoints", first)
    assert find_checkpoint(tmp_path) == ckpt
    del first
    torch.manual_seed(999)  # the resumed run must not depend on the process's RNG state
    resumed = make_agent(tokenizer, adaptive_kl=True, adaptive_kl_horizon=20)
    load_checkpoint(tmp_path, resumed)
    assert resumed.iteration == 2
    resumed.train_iteration()
    resumed.train_iteration()

    assert resumed.kl_controller.beta == pytest.approx(straight.kl_controller.beta, rel=1e-6)
    assert straight.kl_controller.beta != 0.1  # the controller did move
    ps, pr = params(straight), params(resumed)
    for k in ps:
        torch.testing.assert_close(pr[k], ps[k], atol=1e-6, rtol=1e-5)


def test_checkpoint_keeps_the_newest_and_is_atomic(tokenizer, tmp_path: Path) -> None:
    agent = make_agent(tokenizer)
    for _ in range(3):
        agent.train_iteration()
        save_checkpoint(tmp_path, agent, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["LATEST", "iter_000002", "iter_000003"]  # no temp dirs left
    assert (tmp_path / "LATEST").read_text() == "iter_000003"


def test_native_and_sync_vector_envs_give_the_same_training(tokenizer) -> None:
    native = make_agent(tokenizer)
    sync = make_agent(tokenizer, sync=True)
    for _ in range(2):
        rn, rs = native.train_iteration(), sync.train_iteration()
        for key in ("reward_mean", "kl_mean", "episode_length_mean"):
            assert rn[key] == pytest.approx(rs[key], abs=1e-6)
    pn, ps = params(native), params(sync)
    for k in pn:
        torch.testing.assert_close(pn[k], ps[k], atol=1e-6, rtol=1e-5)


def test_agent_rejects_mismatched_env(tokenizer) -> None:
    model = load_causal_lm("tiny-llama", device="cpu")
    envs = make_toy_envs(tokenizer, model, 3)
    with pytest.raises(ValueError, match="num_envs=3"):
        PPOAgent(envs, model, PPOConfig(num_envs=4))


def test_actor_critic_rejects_unknown_value_model() -> None:
    with pytest.raises(ValueError, match="value_model"):
        ActorCritic(load_causal_lm("tiny-llama", device="cpu"), value_model="tied")


@pytest.mark.parametrize(("lora", "value_model"),
                         [(False, "shared"), (True, "shared"), (False, "separate")])
def test_critic_steps_after_the_early_stop_train_on_cached_features(tokenizer, monkeypatch,
                                                                    lora, value_model) -> None:
    # A tiny max_approx_kl stops the policy after its first minibatch; the critic's remaining
    # steps then read the shared trunk's frozen features once, or run the separate value trunk
    # alone (no policy forward). They must give the weights (value head and trunk included)
    # that full forwards and backwards of PPO's whole loss give.
    changes = dict(epochs=3, max_approx_kl=1e-9, value_lr=1e-2, lora=lora,
                   value_model=value_model, **({"lora_r": 4} if lora else {}))
    cached, full = make_agent(tokenizer, **changes), make_agent(tokenizer, **changes)
    calls = []
    real = full.optimize

    def without_cache(b, loss_fn, epochs, num_minibatches, target_kl, critic_loss_fn=None,
                      critic_epochs=0):
        calls.append(critic_loss_fn is not None)
        return real(b, loss_fn, epochs, num_minibatches, target_kl, None, critic_epochs)

    monkeypatch.setattr(full, "optimize", without_cache)
    ra, rb = cached.train_iteration(), full.train_iteration()
    assert calls == [True] and ra["early_stop"] == rb["early_stop"] == 1.0
    assert ra["critic_only_updates"] == rb["critic_only_updates"] == 5.0
    pa, pb = params(cached), params(full)
    assert not torch.equal(pa["value_head.weight"], torch.zeros_like(pa["value_head.weight"]))
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=1e-6, rtol=1e-5, msg=k)


def test_lora_adapters_start_from_the_configs_seed(tokenizer) -> None:
    a = make_agent(tokenizer, lora=True, lora_r=4)
    torch.rand(3)  # whatever the global generator did in between
    b = make_agent(tokenizer, lora=True, lora_r=4)
    c = make_agent(tokenizer, lora=True, lora_r=4, seed=4)
    pa, pb, pc = params(a), params(b), params(c)
    lora_a = [k for k in pa if "lora_A" in k]
    assert lora_a and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not any(torch.equal(pa[k], pc[k]) for k in lora_a)
    model = load_causal_lm("tiny-llama", device="cpu")
    state = torch.random.get_rng_state()
    ActorCritic(model, lora=True, lora_kwargs={"r": 4}, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's stream is kept


def test_value_epochs_train_the_critic_alone(tokenizer) -> None:
    base = dict(epochs=1, max_approx_kl=None, value_lr=1e-2)
    plain, extra = make_agent(tokenizer, **base), make_agent(tokenizer, **base, value_epochs=3)
    ra, rb = plain.train_iteration(), extra.train_iteration()
    assert "critic_only_updates" not in ra and rb["critic_only_updates"] == 6  # 3 x 2 minibatches
    assert rb["early_stop"] == 0.0 and ra["updates"] == rb["updates"] == 2
    pa, pb = params(plain), params(extra)
    critic = [k for k in pa if k.startswith(("value_head", "value_trunk"))]
    assert all(torch.equal(pa[k], pb[k]) for k in pa if k not in critic)  # the policy: untouched
    assert not torch.equal(pa["value_head.weight"], pb["value_head.weight"])
    with pytest.raises(ValueError, match="value_epochs"):
        PPOConfig(value_epochs=-1).validate()


def test_mlp_value_head_starts_at_zero_from_the_configs_seed_and_learns(tokenizer,
                                                                         tmp_path: Path) -> None:
    a = make_agent(tokenizer, value_head="mlp", value_lr=1e-2)
    torch.rand(3)  # whatever the global generator did in between
    b = make_agent(tokenizer, value_head="mlp", value_lr=1e-2)
    c = make_agent(tokenizer, value_head="mlp", seed=4)
    pa, pb, pc = params(a), params(b), params(c)
    assert {k for k in pa if k.startswith("value_head")} == {
        "value_head.0.weight", "value_head.0.bias", "value_head.2.weight", "value_head.2.bias"}
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(pa["value_head.0.weight"], pc["value_head.0.weight"])
    assert not pa["value_head.2.weight"].any() and not pa["value_head.2.bias"].any()
    rollout = a.collect()
    assert rollout.values is not None and not rollout.values.any()  # every value starts at 0
    a.train_iteration()
    after = params(a)
    assert after["value_head.2.weight"].any()  # the critic learned
    # the head's shape is part of the run: a checkpoint restores only into the same kind
    save_checkpoint(tmp_path / "ckpt", a)
    with pytest.raises(CheckpointError, match="does not match the policy"):
        load_checkpoint(tmp_path / "ckpt", make_agent(tokenizer))
    with pytest.raises(ValueError, match="value_head='wide'"):
        make_agent(tokenizer, value_head="wide")
