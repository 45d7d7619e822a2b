"""Every trainable baseline must learn the tiny-llama toy task (chance ~0.1 -> >= 0.5 within 40
iterations, fixed seed), and best-of-N's reward must grow with N."""

from __future__ import annotations

import pytest
import torch

from tokengym.agents.registry import make_agent
from tokengym.agents.toy_task import make_toy_envs
from tokengym.models import load_causal_lm

ITERATIONS = 40
# As in test_ppo_learning: temperature 0.1 so the near-uniform random model's rewards carry
# signal; 16 rows (RLOO/GRPO: 4 prompts x 4 samples); beta = 0 to isolate the learning signal.
TOY = dict(num_envs=16, lr=1e-3, temperature=0.1, seed=0, beta=0.0)


# Tiny-model ops are too small to gain from threads; one thread avoids contention stalls.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["reinforce", "rloo", "grpo", "a2c"])
def test_agent_learns_the_toy_task(tokenizer, name: str) -> None:
    model = load_causal_lm("tiny-llama", device="cpu")
    agent = make_agent(name, make_toy_envs(tokenizer, model, 16, max_new_tokens=8), model, TOY)
    rewards = [agent.train_iteration()["reward_mean"] for _ in range(ITERATIONS)]
    curve = [round(r, 2) for r in rewards]
    assert rewards[0] < 0.2, curve  # chance: 10% of the vocabulary is in the target set
    assert sum(rewards[-3:]) / 3 >= 0.5, f"{name} reward curve {curve}"


def test_best_of_n_reward_grows_with_n(tokenizer) -> None:
    model = load_causal_lm("tiny-llama", device="cpu")
    prompts = 8
    results = {}
    for n in (1, 4, 16):
        envs = make_toy_envs(tokenizer, model, prompts * n, max_new_tokens=8)
        agent = make_agent("best-of-n", envs, model,
                           {"samples_per_prompt": n, "temperature": 0.1, "seed": 0})
        rollout, metrics = agent.evaluate(envs, seed=7)
        assert rollout.rewards.shape == (prompts,)  # the chosen sample of each prompt
        assert metrics["kl_mean"] == pytest.approx(torch.log(torch.tensor(float(n))).item()
                                                   - (n - 1) / n)
        results[n] = metrics["reward_mean"]
    assert results[1] < results[4] < results[16], results
    assert results[16] > 2 * results[1], results
