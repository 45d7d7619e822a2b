"""Preference pairs from a policy's samples scored by a "gold" reward model.

For each prompt the policy writes ``k`` completions through the env (the env's reward model *is*
the gold model, so its final rewards are the gold scores); completions are then paired,
higher-scored as ``chosen``. The output is the input of ``tokengym train-rm``, and the raw
material for reward-model over-optimisation studies (a proxy RM trained on gold labels).

This pipeline drives the env and an agent's rollout, so it sits above ``tokengym.agents`` (not in
``tokengym.reward_models``, which the envs and agents build on).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from tokengym.agents.rollout import collect_rollout
from tokengym.checks import positive_int
from tokengym.envs import PromptSource, TextGenVectorEnv
from tokengym.fileio import atomic_write_jsonl
from tokengym.models import load_causal_lm

STRATEGIES = ("best-worst", "all")


def sample_completions(
    policy: Any,
    prompts: Any,
    gold: Any,
    *,
    k: int = 4,
    tokenizer: Any = None,
    gold_kwargs: Mapping[str, Any] | None = None,
    max_prompt_tokens: int = 64,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    chat_template: bool = False,
    seed: int = 0,
    num_prompts: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Sample ``k`` completions per prompt with ``policy`` through the env, scored by ``gold``.

    Args:
        policy: a causal LM, or a tokengym model name / hub id / path to load.
        prompts: a prompt source with fixed prompts (list or .txt/.jsonl path); record fields
            reach the gold reward model.
        gold: the gold reward model (anything ``make`` accepts), built with ``gold_kwargs``.
        k: completions per prompt (the vector env's width).
        tokenizer: defaults to ``policy`` when it is a name.
        num_prompts: use only the first ``num_prompts`` prompts.

    Returns:
        One dict per prompt: ``{"prompt", "fields", "completions": [k str], "scores": [k float]}``.
    """
    positive_int("k", k)
    source = PromptSource(prompts)
    if source.records is None:
        raise ValueError(
            "label_pairs needs fixed prompts (a list or a .txt/.jsonl file), not a callable"
        )
    records = source.records[:num_prompts] if num_prompts is not None else source.records
    if tokenizer is None:
        if not isinstance(policy, (str, os.PathLike)):
            raise ValueError("pass tokenizer= when policy is a model object")
        tokenizer = os.fspath(policy)
    model = load_causal_lm(policy) if isinstance(policy, (str, os.PathLike)) else policy
    envs = TextGenVectorEnv(
        k,
        prompts=[{"prompt": r.text, **r.fields} for r in records],
        reward_model=gold,
        reward_model_kwargs=gold_kwargs,
        tokenizer=tokenizer,
        max_prompt_tokens=max_prompt_tokens,
        max_new_tokens=max_new_tokens,
        chat_template=chat_template,
    )
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    out = []
    for n, record in enumerate(
        tqdm(records, desc="label-pairs", disable=not progress, unit="prompt")
    ):
        rollout = collect_rollout(
            envs,
            model,
            seed=seed + n * k,
            temperature=temperature,
            generator=generator,
            options={"prompt": {"prompt": record.text, **record.fields}},
        )
        out.append(
            {
                "prompt": record.text,
                "fields": dict(record.fields),
                "completions": [info["completion"] for info in rollout.infos],
                "scores": [float(r) for r in rollout.rewards],
            }
        )
    envs.close()
    return out


def make_pairs(
    samples: Sequence[Mapping[str, Any]], strategy: str = "best-worst", min_margin: float = 0.0
) -> list[dict[str, Any]]:
    """Preference pairs from scored samples (the output of :func:`sample_completions`).

    ``"best-worst"`` makes one pair per prompt (highest vs lowest score); ``"all"`` every pair.
    A pair is kept only when the scores differ by more than ``min_margin`` and the texts differ.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    pairs = []
    for s in samples:
        ranked = sorted(zip(s["scores"], s["completions"]), key=lambda x: -x[0])
        if strategy == "best-worst":
            candidates = [(ranked[0], ranked[-1])] if len(ranked) >= 2 else []
        else:
            candidates = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :]]
        for (hi, chosen), (lo, rejected) in candidates:
            if hi - lo > min_margin and chosen != rejected:
                pairs.append(
                    {
                        "prompt": s["prompt"],
                        "chosen": chosen,
                        "rejected": rejected,
                        "chosen_score": hi,
                        "rejected_score": lo,
                    }
                )
    return pairs


def label_pairs(
    policy: Any,
    prompts: Any,
    gold: Any,
    out: str | os.PathLike[str] | None = None,
    *,
    strategy: str = "best-worst",
    min_margin: float = 0.0,
    **sample_kwargs: Any,
) -> list[dict[str, Any]]:
    """Sample with ``policy``, score with ``gold``, pair up, and write ``out`` (JSONL) if given.

    Each pair is ``{"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}``;
    ``sample_kwargs`` go to :func:`sample_completions` (``k``, ``max_new_tokens``, ``seed``...).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    samples = sample_completions(policy, prompts, gold, **sample_kwargs)
    pairs = make_pairs(samples, strategy, min_margin)
    if out is not None:
        atomic_write_jsonl(out, pairs)
    return pairs
