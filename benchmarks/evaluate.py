"""Held-out evaluation of a policy: what every benchmark row reports.

:func:`evaluate_policy` samples one completion per held-out prompt through the env (the same
``collect_rollout`` path as training) and measures:

=====================  ==========================================================================
``reward_mean``        mean env reward (the task's reward model) of the completions
``kl_mean``            mean over episodes of sum_t [log pi(a_t|s_t) - log ref(a_t|s_t)] (nats, k1)
``ref_perplexity``     exp(mean over completion tokens of -log ref(a_t|s_t)), temperature 1
``distinct_1/2``       unique word uni/bigrams / all word uni/bigrams over all completions
``mean_length``        mean completion length in tokens (stop token included)
``gold_reward_mean``   mean score of an optional second ("gold") reward model
=====================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tokengym.agents.policy import completion_logits, token_logprobs
from tokengym.agents.rollout import Rollout, collect_rollout
from tokengym.reward_models import make, score


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over ``texts`` (0.0 when there are none)."""
    grams = [tuple(words[i:i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def sequence_logprobs(model: torch.nn.Module, rollout: Rollout, temperature: float,
                      num_actions: int) -> torch.Tensor:
    """``(N, G)`` log-probs of the rollout's tokens under ``model`` (one batched forward)."""
    ids, mask = rollout.sequences()
    device = next(model.parameters()).device
    logits, _ = completion_logits(model, ids.to(device), mask.to(device), rollout.tokens.shape[1])
    return token_logprobs(logits, rollout.tokens.to(device), temperature, num_actions)[0].cpu()


@torch.no_grad()
def evaluate_policy(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    envs: Any,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    gold_reward_model: Any = None,
) -> tuple[dict[str, float], Rollout]:
    """Evaluate ``policy`` on one episode per row of ``envs`` (held-out prompts, fixed seed).

    Args:
        policy: the trained causal LM.
        reference: the starting model, for KL and perplexity.
        envs: a tokengym vector env built with ``split="eval"``.
        seed: reset seed: the same seed evaluates every agent on the same prompts.
        temperature: the sampling temperature the policy was trained with (KL uses it for both).
        gold_reward_model: optional reward model (or name) also scored on the completions.

    Returns:
        ``(metrics, rollout)``; metrics as in the module docstring.
    """
    generator = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed)
    rollout = collect_rollout(envs, policy, seed=seed, temperature=temperature, generator=generator)
    num_actions = int(envs.single_action_space.n)
    mask = rollout.mask
    ref_logp = sequence_logprobs(reference, rollout, temperature, num_actions)
    kl = ((rollout.logprobs - ref_logp) * mask).sum(-1)
    ref_logp_t1 = ref_logp if temperature == 1.0 else sequence_logprobs(reference, rollout, 1.0, num_actions)
    nll = -(ref_logp_t1 * mask).sum() / mask.sum().clamp(min=1)
    completions = [info.get("completion", "") for info in rollout.infos]
    metrics = {
        "reward_mean": float(rollout.rewards.mean()),
        "reward_std": float(rollout.rewards.std(unbiased=False)),
        "kl_mean": float(kl.mean()),
        "ref_perplexity": float(torch.exp(nll)),
        "distinct_1": distinct_n(completions, 1),
        "distinct_2": distinct_n(completions, 2),
        "mean_length": float(rollout.lengths.float().mean()),
        "episodes": float(len(completions)),
    }
    if gold_reward_model is not None:
        prompts = [info.get("prompt", "") for info in rollout.infos]
        gold, _ = score(make(gold_reward_model), prompts, completions)
        metrics["gold_reward_mean"] = float(np.mean(gold))
    return metrics, rollout
