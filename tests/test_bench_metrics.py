"""Benchmark metrics: confidence intervals, diversity, and the held-out evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from tokengym.benchmarks.evaluate import distinct_n, evaluate_policy
from tokengym.benchmarks.stats import format_ci, mean_ci95
from tokengym.envs import TextGenVectorEnv
from tokengym.models import load_causal_lm


def test_mean_ci95_matches_student_t():
    mean, half = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.303 * 1.0 / math.sqrt(3))  # t(0.975, 2) * sd / sqrt(n)
    assert math.isnan(mean_ci95([5.0])[1]) and mean_ci95([5.0])[0] == 5.0
    assert format_ci(*mean_ci95([1.0, 2.0, 3.0])) == "2.000 ± 2.484"


def test_distinct_n():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == 2 / 3
    assert distinct_n(["", "x"], 2) == 0.0


def test_policy_equal_to_reference_has_zero_kl(tokenizer, prompts):
    model = load_causal_lm("tiny-llama", device="cpu")
    envs = TextGenVectorEnv(4, prompts=prompts, tokenizer=tokenizer, reward_model="vader",
                            max_prompt_tokens=12, max_new_tokens=6)
    metrics, rollout = evaluate_policy(model, model, envs, seed=0, gold_reward_model="vader")
    assert metrics["kl_mean"] == pytest.approx(0.0, abs=1e-4)
    assert metrics["gold_reward_mean"] == pytest.approx(metrics["reward_mean"], abs=1e-6)
    # A random model's perplexity is near the vocabulary size; a sharpened copy of it diverges.
    assert 1e3 < metrics["ref_perplexity"] < 1e6
    sharper = load_causal_lm("tiny-llama", device="cpu")
    with torch.no_grad():
        sharper.lm_head.weight.mul_(3.0)  # tied to the embeddings: a different distribution
    metrics2, _ = evaluate_policy(sharper, model, envs, seed=0)
    assert abs(metrics2["kl_mean"]) > 0.01  # a k1 estimate from 4 episodes: nonzero, sign noisy
    assert evaluate_policy(sharper, sharper, envs, seed=0)[0]["kl_mean"] == pytest.approx(0.0, abs=1e-4)
