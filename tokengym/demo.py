"""``tokengym demo``: SmolLM2-135M writes movie-review continuations token by token through
``env.step`` of the native vector env (KV cache, batched), and VADER scores them."""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.agents.rollout import collect_rollout
from tokengym.models import DEFAULT_MODEL, load_causal_lm


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="policy model (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=8, help="episodes, run as one batch")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace, name: str) -> int:
    if args.episodes < 1:
        raise SystemExit("--episodes must be at least 1")
    started = time.perf_counter()
    model = load_causal_lm(args.model)
    envs = gym.make_vec(
        "tokengym/Sentiment-v0",
        num_envs=args.episodes,
        vectorization_mode="vector_entry_point",
        tokenizer=args.model,
        split="eval",
        max_new_tokens=args.max_new_tokens,
    )
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(args.seed)
    loaded = time.perf_counter()
    rollout = collect_rollout(
        envs, model, seed=args.seed, temperature=args.temperature, generator=generator
    )
    elapsed = time.perf_counter() - loaded
    for i, info in enumerate(rollout.infos):
        print(f"[{i}] prompt:     {info['prompt']}")
        print(f"    completion: {info['completion'].strip()!r}")
        print(f"    reward:     {float(rollout.rewards[i]):+.3f}  ({info['stop_reason']})")
    tokens = int(rollout.lengths.sum())
    print(
        f"\n{args.episodes} episodes, {tokens} tokens through env.step in {elapsed:.1f} s "
        f"({tokens / elapsed:.0f} tokens/s; model load {loaded - started:.1f} s); "
        f"mean reward {float(rollout.rewards.mean()):+.3f}"
    )
    return 0
