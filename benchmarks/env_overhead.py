"""Env overhead: time per ``TextGenVectorEnv.step`` for 16 envs vs one SmolLM2-135M decode step.

Run: ``python -m tokengym.benchmarks.env_overhead [--num-envs 16] [--model smollm2-135m]``.

Both are measured in the same run on the same batch: the env is stepped through whole episodes
(24 new tokens, autoresets and end-of-episode decoding included) with pre-drawn actions, and the
model's decode step is a single-token forward with a KV cache, as in ``model.generate``. The
env's bookkeeping is timed with a zero-cost reward model; the row "with VADER" adds the
Sentiment-v0 reward model's scoring of the finished episodes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.agents.rollout import KVCacheDecoder
from tokengym.envs.protocol import text_env_view
from tokengym.models import DEFAULT_MODEL, load_causal_lm


def zero_reward(prompts: list[str], completions: list[str]) -> np.ndarray:
    return np.zeros(len(completions), dtype=np.float32)


def time_env_steps(envs, episodes: int, eos: int, seed: int = 0) -> list[float]:
    """Seconds per ``step`` over ``episodes`` rounds of full episodes, one entry per step."""
    rng = np.random.default_rng(seed)
    max_new = text_env_view(envs).max_new_tokens
    envs.reset(seed=seed)
    times = []
    for _ in range(episodes * (max_new + 1)):
        actions = rng.integers(300, 20000, size=envs.num_envs)
        actions[rng.random(envs.num_envs) < 0.02] = eos  # a few early stops, as real text has
        t0 = time.perf_counter()
        envs.step(actions)
        times.append(time.perf_counter() - t0)
    return times


def time_decode_steps(model, envs, steps: int) -> list[float]:
    """Seconds per single-token KV-cache forward on the env's batch."""
    obs, _ = envs.reset(seed=0)
    prompt_len = text_env_view(envs).max_prompt_tokens
    decoder = KVCacheDecoder(model)
    logits, _ = decoder.start(
        torch.from_numpy(obs["input_ids"][:, :prompt_len]),
        torch.from_numpy(obs["attention_mask"][:, :prompt_len]),
    )
    times = []
    for _ in range(steps):
        tokens = logits.argmax(-1)
        t0 = time.perf_counter()
        logits, _ = decoder.advance(tokens)
        _ = logits[0, 0].item()  # wait for the device
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--episodes", type=int, default=20, help="rounds of episodes to time")
    args = parser.parse_args(argv)

    def make(reward_model):
        return gym.make_vec("tokengym/Sentiment-v0", num_envs=args.num_envs,
                            vectorization_mode="vector_entry_point", tokenizer=args.model,
                            reward_model=reward_model, max_new_tokens=24)

    bare, with_vader = make(zero_reward), make("vader")
    eos = bare.tokenizer.eos_token_id
    time_env_steps(bare, 1, eos)  # warm-up (tokenisation cache, allocations)
    env_bare = statistics.mean(time_env_steps(bare, args.episodes, eos))
    env_vader = statistics.mean(time_env_steps(with_vader, args.episodes, eos))

    model = load_causal_lm(args.model)
    time_decode_steps(model, bare, 3)  # warm-up
    decode = statistics.median(time_decode_steps(model, bare, 24))

    device = next(model.parameters()).device
    print(f"TextGenVectorEnv overhead, {args.num_envs} envs, {args.model} decode step on {device}")
    print(f"{'':34}{'ms/step':>10}{'% of decode':>14}")
    print(f"{'model decode step (KV cache)':34}{decode * 1e3:10.3f}{100.0:13.1f}%")
    print(f"{'env.step bookkeeping':34}{env_bare * 1e3:10.3f}{100 * env_bare / decode:13.2f}%")
    print(f"{'env.step with VADER scoring':34}{env_vader * 1e3:10.3f}{100 * env_vader / decode:13.2f}%")
    verdict = "meets" if env_bare / decode < 0.02 else "MISSES"
    print(f"bookkeeping / decode = {env_bare / decode:.4f} ({verdict} the < 2 % target)")


if __name__ == "__main__":
    main()
