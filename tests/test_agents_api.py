"""The agent contract the benchmark suite relies on, for every agent make_agent builds: config,
policy, train_iteration metrics (or TypeError), evaluate, and an exact checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tokengym.agents.checkpoint import load_checkpoint, save_checkpoint
from tokengym.agents.policy import ActorCritic
from tokengym.agents.registry import AGENTS, make_agent
from tokengym.agents.sb3_agent import SB3Agent
from tokengym.agents.toy_task import make_toy_envs
from tokengym.models import load_causal_lm

NATIVE = [name for name in AGENTS if not name.startswith("sb3-")]
REQUIRED = ("iteration", "reward_mean", "kl_mean", "beta", "tokens", "time_iteration_s")


# Tiny-model ops are too small to gain from threads; one thread avoids contention stalls.
pytestmark = pytest.mark.usefixtures("one_thread")


def build(tokenizer, name: str, **overrides):
    model = load_causal_lm("tiny-llama", device="cpu")
    envs = make_toy_envs(tokenizer, model, 8, max_new_tokens=4)
    return make_agent(name, envs, model, {"temperature": 0.5, "lr": 1e-4, **overrides}
                      if AGENTS[name].trainable else {"seed": 1}), envs


@pytest.mark.parametrize("name", NATIVE)
def test_agent_contract(tokenizer, name: str) -> None:
    agent, envs = build(tokenizer, name)
    assert agent.config.num_envs == 8 and agent.iteration == 0  # num_envs taken from the env
    assert hasattr(agent.config, "seed") and hasattr(agent.config, "temperature")
    assert isinstance(agent.policy, ActorCritic)
    with agent.policy.reference() as ref:
        assert isinstance(ref, torch.nn.Module)
    if AGENTS[name].trainable:
        record = agent.train_iteration()
        assert all(key in record for key in REQUIRED), sorted(record)
        assert record["iteration"] == agent.iteration == 1
    else:
        with pytest.raises(TypeError, match="does not train"):
            agent.train_iteration()
    rollout, metrics = agent.evaluate(envs, seed=3)
    assert {"reward_mean", "kl_mean"} <= set(metrics)
    rows = 8 // agent.config.samples_per_prompt if name == "best-of-n" else 8
    assert rollout.rewards.shape == (rows,)


@pytest.mark.parametrize("name", ["reinforce", "rloo", "grpo", "a2c"])
def test_checkpoint_round_trip_is_exact(tokenizer, tmp_path: Path, name: str) -> None:
    agent, _ = build(tokenizer, name)
    agent.train_iteration()
    save_checkpoint(tmp_path, agent)
    expected = agent.train_iteration()
    resumed, _ = build(tokenizer, name)
    load_checkpoint(tmp_path, resumed)
    assert resumed.iteration == 1
    got = resumed.train_iteration()
    for key in ("reward_mean", "kl_mean", "policy_loss"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key


def test_sb3_agents_are_built_with_their_algorithm() -> None:
    agent = make_agent("sb3-a2c", None, "tiny-llama", {"n_steps": 8})
    assert isinstance(agent, SB3Agent) and agent.config.algo == "a2c"
    assert "n_epochs" not in agent.algo_kwargs()  # SB3's A2C has no epochs
    assert make_agent("sb3-ppo", None, "tiny-llama").algo_kwargs()["n_epochs"] == 4
