"""Completions scored per second by every built-in reward model, on one batch of SmolLM2 text.

    python -m tokengym.benchmarks.reward_models [--batch 64] [--device cuda]

SmolLM2-135M-Instruct writes the batch once (Sentiment-v0 prompts, through ``collect_rollout``);
then each reward model scores the whole batch in one call through
:func:`tokengym.reward_models.score` (the env's path, output checks included), after one warm-up
call. Network models run on the GPU when one is present. ``hf-classifier`` and ``preference`` get
an untrained head on all-MiniLM-L6-v2 (built in a temp dir): the cost of a forward does not depend
on the head's weights.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.agents.rollout import collect_rollout
from tokengym.models import DEFAULT_MODEL, load_causal_lm, minilm_path, resolve_device
from tokengym.reward_models import PreferenceRewardModel, make, score
from tokengym.reward_models.backbones import load_backbone


def generate_batch(
    batch: int, model_name: str, device: str | None, seed: int
) -> tuple[list[str], list[str]]:
    """``batch`` (prompt, completion) pairs sampled from ``model_name`` on Sentiment-v0."""
    model = load_causal_lm(model_name, device=device)
    envs = gym.make_vec(
        "tokengym/Sentiment-v0",
        num_envs=batch,
        vectorization_mode="vector_entry_point",
        tokenizer=model_name,
        split="eval",
    )
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    rollout = collect_rollout(envs, model, seed=seed, temperature=0.7, generator=generator)
    envs.close()
    return [i["prompt"] for i in rollout.infos], [i["completion"] for i in rollout.infos]


def builtins(
    tmp: Path, device: str | None, prompts: list[str], completions: list[str]
) -> dict[str, Callable[[], Any]]:
    """name -> zero-argument builder, for every built-in reward model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    def classifier() -> Any:
        path = tmp / "classifier"
        if not path.exists():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                clf = AutoModelForSequenceClassification.from_pretrained(
                    minilm_path(), num_labels=2
                )
            clf.save_pretrained(path)
            AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(path)
        return make("hf-classifier", model=path, label=1, device=device)

    def preference() -> Any:
        path = tmp / "preference"
        if not path.exists():
            PreferenceRewardModel(load_backbone(None, device="cpu")).save(path, save_backbone=False)
        return make(path, device=device)

    return {
        "vader": lambda: make("vader"),
        "keywords": lambda: make("keywords", words=["good", "great", "love"]),
        "length": lambda: make("length", target=20),
        "regex": lambda: make("regex", pattern=r"\b(good|great)\b", ignore_case=True),
        "repetition": lambda: make("repetition"),
        "arithmetic": lambda: make("arithmetic"),
        "hf-classifier": classifier,
        "embedding-similarity": lambda: make(
            "embedding-similarity", targets=["A great movie."], device=device
        ),
        "llm-judge": lambda: make("llm-judge", device=device),
        "composite": lambda: make(
            "composite",
            components={
                "sentiment": "vader",
                "length": {"model": "length", "target": 20, "weight": 0.5},
                "repetition": "repetition",
            },
        ),
        "normalized": lambda: make(
            "normalized", base="vader", calibration={"prompts": prompts, "completions": completions}
        ),
        "preference": preference,
    }


def time_call(fn: Callable[[], Any], min_seconds: float, min_repeats: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - started < min_seconds:
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="completions per call")
    parser.add_argument("--policy", default=DEFAULT_MODEL, help="model that writes the batch")
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timing budget per model")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark only these names")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = str(resolve_device(args.device))
    print(f"generating {args.batch} completions with {args.policy} on {device}...", flush=True)
    prompts, completions = generate_batch(args.batch, args.policy, args.device, args.seed)
    # A per-prompt field for `arithmetic` (the true answers do not matter for speed).
    fields = {"answer": [i % 10 for i in range(args.batch)]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in builtins(Path(tmp), args.device, prompts, completions).items():
            if args.only and name not in args.only:
                continue
            t = time.perf_counter()
            rm = build()
            load_s = time.perf_counter() - t
            sec = time_call(
                lambda rm=rm: score(rm, prompts, completions, fields), args.min_seconds, 3
            )
            rows.append((name, load_s, sec * 1e3, args.batch / sec))
            print(f"  {name}: {args.batch / sec:,.0f} completions/s", flush=True)
    print(
        f"\nreward model scoring, batch of {args.batch} {args.policy} completions, "
        f"device {device}, "
        f"torch {torch.get_num_threads()} threads"
    )
    print(
        f"| {'reward model':<22} | {'load s':>7} | {'ms / batch':>10} | {'completions / s':>15} |"
    )
    print(f"|{'-' * 24}|{'-' * 9}|{'-' * 12}|{'-' * 17}|")
    for name, load_s, ms, per_s in rows:
        print(f"| {name:<22} | {load_s:>7.1f} | {ms:>10.2f} | {per_s:>15,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
