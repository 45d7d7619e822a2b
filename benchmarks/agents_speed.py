"""Seconds per iteration and tokens/s of every agent, side by side, on one batch; plus SB3-PPO.

SmolLM2-135M by default, ``tokengym/Sentiment-v0``, 16 rows x 24 new tokens (stop tokens off, so
every row makes 24 tokens). Each agent runs with its default config (PPO: 4 epochs x 2
minibatches; REINFORCE/RLOO/A2C: one update; GRPO: 1 epoch; RLOO/GRPO/best-of-N: 4 prompts x 4
samples), starting from the same weights; median of ``--repeats`` iterations after one warm-up.
For the agents that do not train, an "iteration" is one ``evaluate``. tokens/s = generated
tokens of the iteration / its seconds (rollout AND update).

SB3-PPO (``stable_baselines3.PPO`` with ``LMActorCriticPolicy``, default ``sb3-ppo`` config:
n_steps 64, batch 32, 4 epochs, beta 0.05 through ``KLPenaltyWrapper``) trains for
``--sb3-steps`` env steps (= tokens); its steps/s is the same unit as tokens/s, and its seconds
per iteration are those of our batch's token count at that rate.

Run: ``python -m tokengym.benchmarks.agents_speed [--model NAME] [--agents a,b] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

import gymnasium as gym
import torch

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.agents.registry import AGENTS, make_agent
from tokengym.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer

ENV_ID = "tokengym/Sentiment-v0"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_agent(name: str, envs: Any, model: torch.nn.Module, repeats: int,
               device: torch.device) -> tuple[float, float, int]:
    """``(median seconds per iteration, median tokens/s, optimizer steps per iteration)``."""
    agent = make_agent(name, envs, model, {"device": str(device)})
    trainable = AGENTS[name].trainable
    seconds, rates = [], []
    for repeat in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        if trainable:
            tokens = agent.train_iteration()["tokens"]
        else:
            rollout, metrics = agent.evaluate(envs, seed=repeat)
            tokens = int(metrics.get("tokens", int(rollout.lengths.sum())))
        sync(device)
        elapsed = time.perf_counter() - start
        if repeat > 0:  # the first iteration warms up allocators and caches
            seconds.append(elapsed)
            rates.append(tokens / elapsed)
    cfg = agent.config
    steps = (cfg.epochs * cfg.num_minibatches if name in ("ppo", "grpo") else 1) if trainable \
        else 0
    return statistics.median(seconds), statistics.median(rates), steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sb3-steps", type=int, default=256,
                        help="SB3-PPO env steps (tokens) to time; 0 skips SB3")
    parser.add_argument("--agents", default=",".join(n for n in AGENTS if not n.startswith("sb3")),
                        help="comma-separated agent names (default: all but SB3)")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when available)")
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer(args.model)
    n, g = args.num_envs, args.max_new_tokens
    env_kwargs = dict(tokenizer=tokenizer, max_new_tokens=g, stop_tokens=[])
    rows: dict[str, tuple[str, float, float, str]] = {}
    device = torch.device("cpu")
    for name in [a.strip() for a in args.agents.split(",") if a.strip()]:
        if name not in AGENTS or name.startswith("sb3-"):
            raise SystemExit(f"--agents: {name!r} is not a native agent; accepted: "
                             f"{[a for a in AGENTS if not a.startswith('sb3-')]}")
        model = load_causal_lm(args.model, device=args.device)  # same start for every agent
        device = next(model.parameters()).device
        envs = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point",
                            **env_kwargs)
        sec, rate, steps = time_agent(name, envs, model, args.repeats, device)
        rows[name] = (AGENTS[name].family, sec, rate, str(steps))
        print(f"  {name}: {sec:.3f} s/iteration, {rate:.0f} tokens/s", flush=True)
        del model, envs
        gc.collect()

    sb3_rate = None
    if args.sb3_steps > 0:
        model = load_causal_lm(args.model, device=args.device)
        sb3 = make_agent("sb3-ppo", None, model)  # an SB3Agent: trains through train_sb3
        _, metrics = sb3.train(ENV_ID, args.sb3_steps,
                               env_kwargs={"tokenizer": tokenizer, "max_new_tokens": g,
                                           "stop_tokens": []})
        sb3_rate = float(metrics["steps_per_second"])
        rows["sb3-ppo"] = (AGENTS["sb3-ppo"].family, n * g / sb3_rate, sb3_rate,
                           f"{metrics['total_timesteps'] // sb3.config.n_steps}")

    print(f"\nagents_speed: {args.model} on {device} ({torch.get_num_threads()} threads), "
          f"{n} rows x {g} new tokens, median of {args.repeats} after a warm-up\n")
    print(f"| {'agent':<10} | {'family':<18} | {'opt steps/it':>12} | {'s/iteration':>11} | "
          f"{'tokens/s':>9} |")
    print(f"|{'-' * 12}|{'-' * 20}|{'-' * 14}|{'-' * 13}|{'-' * 11}|")
    for name, (family, sec, rate, steps) in rows.items():
        print(f"| {name:<10} | {family:<18} | {steps:>12} | {sec:11.3f} | {rate:9.1f} |")
    if sb3_rate is not None and "ppo" in rows:
        ratio = sb3_rate / rows["ppo"][2]
        print(f"\nSB3-PPO / our PPO throughput (tokens/s) = {ratio:.3f}x "
              f"(our PPO is {1 / ratio:.0f}x faster); SB3 opt-steps column = SB3 rollouts run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
