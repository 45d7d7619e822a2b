"""Held-out evaluation of a policy: what every benchmark row reports.

:func:`evaluate_policy` samples one completion per held-out prompt through the env (the same
``collect_rollout`` path as training) and measures, with pi the policy and ref the reference,
both at the sampling temperature T (logits divided by T, sliced to the env's ``num_actions``
ids, as in training), s_t the state before completion token a_t, and KL_t the exact KL of the
next-token distributions at s_t, summed over the whole action vocabulary V:

    KL_t = sum_{v in V} pi(v|s_t) [log pi(v|s_t) - log ref(v|s_t)]  >= 0

=====================  ==========================================================================
``reward_mean``        mean env reward (the task's reward model) of the completions
``kl_mean``            mean over episodes of sum_t KL_t (nats): the exact per-token KL summed over
                       each sampled completion; >= 0, and an unbiased estimate of
                       KL(pi || ref) over whole completions with far less variance than k1
``kl_token_mean``      sum of KL_t over all completion tokens / their number (nats per token)
``kl_k1_mean``         mean over episodes of sum_t [log pi(a_t|s_t) - log ref(a_t|s_t)] (nats):
                       the k1 Monte-Carlo estimate of the same quantity (the ``kl_mean`` of
                       earlier releases; noisy, can be negative); kept for comparison
``ref_perplexity``     exp(mean over completion tokens of -log ref(a_t|s_t)), temperature 1
``distinct_1/2``       unique word uni/bigrams / all word uni/bigrams over all completions
``mean_length``        mean completion length in tokens (stop token included)
``gold_reward_mean``   mean score of an optional second ("gold") reward model
=====================  ==========================================================================

Both ``kl_mean`` and ``kl_k1_mean`` have expectation KL(pi || ref) between the distributions
over completions (the chain rule of KL sums the per-position KLs along sampled prefixes);
``kl_mean`` averages the last sampling step out analytically at every position, so it is never
negative and a policy identical to its reference reports exactly 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tokengym.agents.batch import agent_columns
from tokengym.agents.policy import completion_logits, token_logprobs
from tokengym.agents.rollout import Rollout, collect_rollout
from tokengym.reward_models import make, score

# Logits (float32 elements, per model) held at once by :func:`rollout_kl`: 2**25 = 128 MiB.
KL_CHUNK_ELEMENTS = 2 ** 25

ReferenceLike = torch.nn.Module | Callable[[], AbstractContextManager[torch.nn.Module]]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over ``texts`` (0.0 when there are none)."""
    grams = [tuple(words[i:i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def sequence_logprobs(model: torch.nn.Module, rollout: Rollout, temperature: float,
                      num_actions: int) -> torch.Tensor:
    """``(N, G)`` log-probs of the rollout's tokens under ``model`` (one batched forward; in a
    multi-turn rollout, over the whole sequence, read at the agent's tokens)."""
    ids, mask = rollout.sequences()
    device = next(model.parameters()).device
    columns = rollout_columns(rollout)
    logits, _ = completion_logits(model, ids.to(device), mask.to(device), rollout.tokens.shape[1],
                                  columns=None if columns is None else columns.to(device))
    return token_logprobs(logits, rollout.tokens.to(device), temperature, num_actions)[0].cpu()


def exact_token_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, temperature: float,
                   num_actions: int) -> torch.Tensor:
    """``(..., G)`` KL(pi || ref) of each position's next-token distributions, in nats.

    ``sum_v p(v) [log p(v) - log q(v)]`` over the first ``num_actions`` ids, with
    ``p = softmax(policy_logits / T)``, ``q = softmax(ref_logits / T)`` in float32; clamped at
    0 against rounding (the exact value is never negative).
    """
    logp = torch.log_softmax(policy_logits[..., :num_actions].float() / temperature, dim=-1)
    logq = torch.log_softmax(ref_logits[..., :num_actions].float() / temperature, dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1).clamp(min=0.0)


def rollout_columns(rollout: Rollout) -> torch.Tensor | None:
    """``(N, G)`` column of each agent token in ``rollout.sequences()`` (multi-turn), or None
    (single-turn: the last G columns)."""
    agent = rollout.sequence_agent_mask()
    return None if agent is None else agent_columns(agent, rollout.tokens.shape[1])


@dataclass
class RolloutKL:
    """What :func:`rollout_kl` measures on a rollout; every tensor ``(N, G)``, 0 off the mask."""

    exact: torch.Tensor  # KL_t, the exact per-position KL(pi || ref) at temperature T
    ref_logprobs: torch.Tensor  # log ref(a_t | s_t) at temperature T
    ref_logprobs_t1: torch.Tensor  # log ref(a_t | s_t) at temperature 1 (for perplexity)


def _reference_context(reference: ReferenceLike) -> Callable[[], AbstractContextManager[Any]]:
    if isinstance(reference, torch.nn.Module):
        return lambda: contextlib.nullcontext(reference)
    return reference


@torch.no_grad()
def rollout_kl(policy: torch.nn.Module, reference: ReferenceLike, rollout: Rollout,
               temperature: float, num_actions: int, *,
               chunk_elements: int = KL_CHUNK_ELEMENTS) -> RolloutKL:
    """Exact per-position KL(pi || ref) and reference log-probs over ``rollout``.

    One teacher-forced forward of the policy and one of the reference over the rollout's
    ``prompt + completion`` sequences, in row chunks of at most ``chunk_elements`` logits
    (at least one row). A multi-turn rollout's sequences hold the env's inserted tokens too;
    the KL is read at the agent's tokens only (the positions where the policy chose).

    Args:
        policy: the policy LM.
        reference: the reference LM, or a callable returning a context manager that yields it
            (``ActorCritic.reference``: with LoRA the reference is the policy with its adapters
            disabled, so the policy forward must run outside that context).
        rollout: the episodes (their completions are teacher-forced).
        temperature: T > 0, applied to both models.
        num_actions: the env's action count (the model's vocabulary may be padded beyond it).
    """
    if temperature <= 0:
        raise ValueError(f"the KL needs a sampling temperature > 0, got {temperature}")
    ref_context = _reference_context(reference)
    ids, attn = rollout.sequences()
    tokens, mask = rollout.tokens, rollout.mask
    columns = rollout_columns(rollout)
    n, gen_len = tokens.shape
    rows = max(1, chunk_elements // max(1, gen_len * num_actions))
    device = next(policy.parameters()).device
    exact, ref_lp, ref_lp1 = (torch.zeros(n, gen_len) for _ in range(3))
    for lo in range(0, n, rows):
        sl = slice(lo, min(n, lo + rows))
        chunk_ids, chunk_attn = ids[sl].to(device), attn[sl].to(device)
        chunk_tokens = tokens[sl].to(device)
        cols = None if columns is None else columns[sl].to(device)
        pol_logits, _ = completion_logits(policy, chunk_ids, chunk_attn, gen_len, columns=cols)
        with ref_context() as ref:
            ref_logits, _ = completion_logits(ref, chunk_ids, chunk_attn, gen_len, columns=cols)
        exact[sl] = exact_token_kl(pol_logits, ref_logits, temperature, num_actions).cpu()
        ref_lp[sl] = token_logprobs(ref_logits, chunk_tokens, temperature, num_actions)[0].cpu()
        ref_lp1[sl] = (ref_lp[sl] if temperature == 1.0 else
                       token_logprobs(ref_logits, chunk_tokens, 1.0, num_actions)[0].cpu())
        del pol_logits, ref_logits
    m = mask.float()
    return RolloutKL(exact=exact * m, ref_logprobs=ref_lp * m, ref_logprobs_t1=ref_lp1 * m)


@torch.no_grad()
def evaluate_policy(
    policy: torch.nn.Module,
    reference: ReferenceLike,
    envs: Any,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    gold_reward_model: Any = None,
) -> tuple[dict[str, float], Rollout]:
    """Evaluate ``policy`` on one episode per row of ``envs`` (held-out prompts, fixed seed).

    Args:
        policy: the trained causal LM.
        reference: the starting model, for KL and perplexity; or a callable returning a
            context manager that yields it (e.g. ``ActorCritic.reference``, which LoRA needs).
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
    kl = rollout_kl(policy, reference, rollout, temperature, num_actions)
    k1 = ((rollout.logprobs - kl.ref_logprobs) * mask).sum(-1)
    tokens = mask.sum().clamp(min=1)
    nll = -kl.ref_logprobs_t1.sum() / tokens
    completions = [info.get("completion", "") for info in rollout.infos]
    metrics = {
        "reward_mean": float(rollout.rewards.mean()),
        "reward_std": float(rollout.rewards.std(unbiased=False)),
        "kl_mean": float(kl.exact.sum(-1).mean()),
        "kl_token_mean": float(kl.exact.sum() / tokens),
        "kl_k1_mean": float(k1.mean()),
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
