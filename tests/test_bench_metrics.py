"""Benchmark metrics: confidence intervals, diversity, and the held-out evaluation (its KL)."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from tokengym.agents.inference import best_of_n_kl, best_of_n_kl_estimate
from tokengym.agents.registry import make_agent
from tokengym.benchmarks.evaluate import distinct_n, evaluate_policy, rollout_kl
from tokengym.benchmarks.stats import format_ci, mean_ci95
from tokengym.envs import TextGenVectorEnv
from tokengym.models import load_causal_lm


def _envs(tokenizer, prompts, n: int, max_new_tokens: int = 6) -> TextGenVectorEnv:
    return TextGenVectorEnv(n, prompts=prompts, tokenizer=tokenizer, reward_model="vader",
                            max_prompt_tokens=12, max_new_tokens=max_new_tokens)


def _perturbed(scale: float, seed: int = 0) -> torch.nn.Module:
    """tiny-llama with every weight moved by ``scale`` x its tensor's std of Gaussian noise."""
    model = load_causal_lm("tiny-llama", device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen) * p.std().clamp(min=1e-3))
    return model


def _k1_per_episode(rollout, kl) -> torch.Tensor:
    return ((rollout.logprobs - kl.ref_logprobs) * rollout.mask).sum(-1)


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
    envs = _envs(tokenizer, prompts, 4)
    metrics, rollout = evaluate_policy(model, model, envs, seed=0, gold_reward_model="vader")
    assert metrics["kl_mean"] == pytest.approx(0.0, abs=1e-6)  # exact: identical distributions
    assert metrics["kl_token_mean"] == pytest.approx(0.0, abs=1e-6)
    # k1 compares the sampling-time (KV-cache) log-probs with a teacher-forced forward: 0 up to
    # floating-point rounding.
    assert metrics["kl_k1_mean"] == pytest.approx(0.0, abs=1e-4)
    assert metrics["gold_reward_mean"] == pytest.approx(metrics["reward_mean"], abs=1e-6)
    # A random model's perplexity is near the vocabulary size; a sharpened copy of it diverges.
    assert 1e3 < metrics["ref_perplexity"] < 1e6
    sharper = load_causal_lm("tiny-llama", device="cpu")
    with torch.no_grad():
        sharper.lm_head.weight.mul_(3.0)  # tied to the embeddings: a different distribution
    metrics2, _ = evaluate_policy(sharper, model, envs, seed=0)
    assert metrics2["kl_mean"] > 0.01
    assert metrics2["kl_token_mean"] == pytest.approx(metrics2["kl_mean"] / metrics2["mean_length"],
                                                      rel=1e-5)  # every episode runs 6 tokens
    assert evaluate_policy(sharper, sharper, envs, seed=0)[0]["kl_mean"] == pytest.approx(0.0, abs=1e-6)
    # The reference may be given as a context-manager factory (ActorCritic.reference): same values.
    metrics3, _ = evaluate_policy(sharper, lambda: contextlib.nullcontext(model), envs, seed=0)
    assert metrics3 == metrics2


def test_exact_kl_is_never_negative_where_k1_is(tokenizer, prompts):
    """Per episode, k1 takes either sign around the KL; the exact value is >= 0 always."""
    ref = load_causal_lm("tiny-llama", device="cpu")
    envs = _envs(tokenizer, prompts, 32)
    for scale in (0.05, 1.0):
        policy = _perturbed(scale)
        _, rollout = evaluate_policy(policy, ref, envs, seed=3)
        kl = rollout_kl(policy, ref, rollout, 1.0, int(envs.single_action_space.n))
        assert (kl.exact >= 0).all() and (kl.exact.sum(-1) > 0).all()
        assert (kl.exact[~rollout.mask] == 0).all()
        k1 = _k1_per_episode(rollout, kl)
        assert (k1 < 0).any() and (k1 > 0).any()  # a noisy estimate of a positive quantity
        assert k1.std() > 10 * kl.exact.sum(-1).std()


def test_exact_kl_matches_a_brute_force_sum_over_the_vocabulary(tokenizer, prompts):
    """sum_v p (log p - log q) by hand, in float64, from a plain full forward of each model."""
    ref = load_causal_lm("tiny-llama", device="cpu")
    policy = _perturbed(0.5, seed=1)
    envs = _envs(tokenizer, prompts, 3, max_new_tokens=4)
    temperature = 0.7
    _, rollout = evaluate_policy(policy, ref, envs, seed=5, temperature=temperature)
    num_actions = int(envs.single_action_space.n)
    got = rollout_kl(policy, ref, rollout, temperature, num_actions)
    ids, attn = rollout.sequences()
    prompt_len, gen_len = rollout.prompt_ids.shape[1], rollout.tokens.shape[1]
    with torch.no_grad():
        logits = [m(input_ids=ids, attention_mask=attn,
                    position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits.double()
                  for m in (policy, ref)]
    expected = torch.zeros(ids.shape[0], gen_len, dtype=torch.float64)
    for i in range(ids.shape[0]):
        for t in range(gen_len):
            if not rollout.mask[i, t]:
                continue
            col = prompt_len - 1 + t  # the column that predicts completion token t
            p, q = (torch.softmax(lg[i, col, :num_actions] / temperature, -1) for lg in logits)
            expected[i, t] = sum(float(pv) * (math.log(pv) - math.log(qv))
                                 for pv, qv in zip(p.tolist(), q.tolist()) if pv > 0)
    assert expected.sum() > 0.01
    torch.testing.assert_close(got.exact.double(), expected, rtol=1e-3, atol=1e-6)
    # Row chunks (here one row per forward) change nothing.
    chunked = rollout_kl(policy, ref, rollout, temperature, num_actions, chunk_elements=1)
    torch.testing.assert_close(chunked.exact, got.exact, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(chunked.ref_logprobs, got.ref_logprobs, rtol=1e-5, atol=1e-6)


def test_k1_average_over_many_samples_approaches_the_exact_kl(tokenizer, prompts):
    ref = load_causal_lm("tiny-llama", device="cpu")
    policy = _perturbed(3.0)
    envs = _envs(tokenizer, prompts, 256)
    metrics, _ = evaluate_policy(policy, ref, envs, seed=1)
    assert metrics["kl_mean"] > 0.3
    # 256 episodes: k1's standard error is ~10 % of the KL here; the exact value's is ~0.1 %.
    assert metrics["kl_k1_mean"] == pytest.approx(metrics["kl_mean"], rel=0.35)


def test_runner_evaluates_lora_policies_against_adapters_disabled(tokenizer, prompts, tmp_path):
    """With LoRA the reference is the policy with its adapters off: the rollout must not be
    sampled inside that context (it would be the reference's, and the KL 0)."""
    from tokengym.benchmarks.runner import BenchRunner
    from tokengym.benchmarks.suites import get_suite

    envs = _envs(tokenizer, prompts, 4)
    agent = make_agent("ppo", envs, load_causal_lm("tiny-llama", device="cpu"),
                       {"lora": True, "lora_r": 4})
    runner = BenchRunner(get_suite("smoke"), tmp_path)
    before = runner.evaluate(agent, True, agent.policy.lm, envs, None, 0)
    assert before["kl_mean"] == pytest.approx(0.0, abs=1e-6)  # LoRA's B starts at zero
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in agent.policy.lm.named_parameters():
            if "lora_B" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    after = runner.evaluate(agent, True, agent.policy.lm, envs, None, 0)
    assert after["kl_mean"] > 0.01 and {"kl_k1_mean", "kl_token_mean"} <= set(after)


def test_best_of_n_kl_estimate_is_the_exact_kl_of_an_atom_over_a_continuum():
    """d_N(eps): brute force over a discrete reference with one atom eps at the top reward and
    200k tiny atoms below it (best-of-N's law: F(y)^N - F(y-)^N)."""
    for n, eps in ((4, 0.3), (8, 0.02), (2, 0.9)):
        p = np.append(np.full(200_000, (1 - eps) / 200_000), eps)  # increasing reward
        cdf = np.cumsum(p)
        bon = cdf ** n - (cdf - p) ** n
        brute = float((bon * np.log(bon / p)).sum())
        assert best_of_n_kl_estimate(n, math.log(eps)) == pytest.approx(brute, rel=1e-6)
    for n in (1, 2, 4, 16, 128):
        bound = best_of_n_kl(n)
        values = [best_of_n_kl_estimate(n, math.log(e)) for e in np.geomspace(1e-12, 1.0, 200)]
        assert all(0.0 <= v <= bound for v in values)
        assert best_of_n_kl_estimate(n, -5000.0) == bound  # eps below float range: the limit
        assert best_of_n_kl_estimate(n, 0.0) == 0.0  # the same completion every time
    assert best_of_n_kl_estimate(4, math.log(1e-9)) == pytest.approx(best_of_n_kl(4), abs=1e-7)


def test_best_of_n_reports_the_bound_and_a_measured_kl_below_it(tokenizer, prompts):
    n, prompts_per_eval = 4, 3
    bound = math.log(n) - (n - 1) / n
    envs = _envs(tokenizer, prompts, n * prompts_per_eval)
    lm = load_causal_lm("tiny-llama", device="cpu")
    chosen, metrics = make_agent("best-of-n", envs, lm, {"samples_per_prompt": n}).evaluate(envs, seed=0)
    assert metrics["kl_bound"] == pytest.approx(bound)
    assert 0.0 <= metrics["kl_mean"] <= metrics["kl_bound"] + 1e-9
    # Six-token completions of a random model are each improbable: the estimate is the bound.
    assert metrics["kl_mean"] == pytest.approx(bound, abs=1e-6)
    # A peaked policy with one-token completions (its chosen token has probability ~0.9) draws
    # the same token in most of its N samples: the measured KL is far below the bound.
    peaked = load_causal_lm("tiny-llama", device="cpu")
    with torch.no_grad():
        peaked.lm_head.weight.mul_(12.0)
    short = _envs(tokenizer, prompts, n * prompts_per_eval, max_new_tokens=1)
    agent = make_agent("best-of-n", short, peaked, {"samples_per_prompt": n})
    chosen, metrics = agent.evaluate(short, seed=0)
    log_eps = (chosen.logprobs * chosen.mask).sum(-1)
    assert (log_eps.exp() > 0.5).all()
    expected = float(np.mean([best_of_n_kl_estimate(n, float(e)) for e in log_eps]))
    assert metrics["kl_mean"] == pytest.approx(expected)
    assert 0.0 < metrics["kl_mean"] < 0.5 * bound and metrics["kl_bound"] == pytest.approx(bound)
