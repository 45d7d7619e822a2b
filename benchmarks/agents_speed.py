"""Seconds per iteration and tokens/s of every agent, side by side, on one batch, each next to
its floor; plus SB3-PPO.

SmolLM2-135M by default, ``tokengym/Sentiment-v0``, 16 rows x 24 new tokens (stop tokens off, so
every row makes G tokens). Each agent runs with its default config (PPO: 4 epochs x 2
minibatches; REINFORCE/RLOO/A2C: one update; GRPO: 1 epoch; RLOO/GRPO/best-of-N: 4 prompts x 4
samples), except that PPO and A2C use the shared value head, one trunk as the floor counts (PPO's
default separate value model adds a second trunk's forward and backward to each step), starting
from the same weights; median of ``--repeats`` iterations after one warm-up
(which also compiles). For the agents that do not train, an "iteration" is one ``evaluate``.
tokens/s = generated tokens of the iteration / its seconds (rollout AND update).

The floor of an agent's iteration is built from parts measured once in the same run on the same
batch (``ppo_speed.floor_phases``): the faster ``model.generate`` + one reference forward + one
policy forward/backward per pass over the batch the update made (PPO's early stop counted) + one
optimizer step per step it took. MFU (GPU only, ``benchmarks/flops.py``) counts the same work.

SB3-PPO (``stable_baselines3.PPO`` with ``LMActorCriticPolicy``, default ``sb3-ppo`` config:
n_steps 64, batch 32, 4 epochs, beta 0.05 through ``KLPenaltyWrapper``) trains for
``--sb3-steps`` env steps (= tokens); its steps/s is the same unit as tokens/s, and its seconds
per iteration are those of our batch's token count at that rate.

Run: ``python -m tokengym.benchmarks.agents_speed [--model NAME] [--agents a,b] [--device cpu]
[--num-envs N] [--max-new-tokens G] [--compile/--no-compile] [--dtype bfloat16]
[--peak-tflops X]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.agents.decode import use_compile
from tokengym.agents.ppo import PPOAgent
from tokengym.agents.ppo_config import PPOConfig
from tokengym.agents.registry import AGENTS, config_class, make_agent
from tokengym.benchmarks.flops import (
    device_text,
    iteration_flops,
    mfu_text,
    parameter_count,
    peak_tflops,
    time_phases,
    timed,
)
from tokengym.benchmarks.ppo_speed import add_speed_arguments, floor_phases
from tokengym.models import load_causal_lm, load_tokenizer

ENV_ID = "tokengym/Sentiment-v0"


@dataclass
class AgentTiming:
    seconds: float  # median seconds per iteration
    rate: float  # median generated tokens/s
    steps: float  # optimizer steps per iteration (mean; critic-only steps included)
    passes: float  # forward/backward passes over the whole batch per iteration (mean)
    recompute: bool  # the old log-probs were recomputed (one more forward)


def time_agent(name: str, envs: Any, model: torch.nn.Module, repeats: int,
               device: torch.device, overrides: dict[str, Any]) -> AgentTiming:
    fields = config_class(name).field_names()
    agent = make_agent(name, envs, model, {k: v for k, v in overrides.items() if k in fields})
    trainable = AGENTS[name].trainable
    seconds, rates, steps, passes = [], [], [], []

    def run(seed: int, metrics: dict[str, Any]) -> None:
        if trainable:
            metrics.update(agent.train_iteration())
        else:
            rollout, evaluation = agent.evaluate(envs, seed=seed)
            metrics["tokens"] = int(evaluation.get("tokens", int(rollout.lengths.sum())))

    for repeat in range(repeats + 1):
        metrics: dict[str, Any] = {}
        elapsed = timed(lambda: run(repeat, metrics), device)  # noqa: B023 - called right here
        if repeat > 0:  # the first iteration warms up allocators and caches, and compiles
            seconds.append(elapsed)
            rates.append(metrics["tokens"] / elapsed)
            taken = metrics.get("updates", 0.0) + metrics.get("critic_only_updates", 0.0)
            steps.append(taken)
            passes.append(taken / getattr(agent.config, "num_minibatches", 1))
    recompute = trainable and agent.config.recomputes_logprobs()
    return AgentTiming(statistics.median(seconds), statistics.median(rates),
                       statistics.mean(steps), statistics.mean(passes), bool(recompute))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_speed_arguments(parser)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sb3-steps", type=int, default=256,
                        help="SB3-PPO env steps (tokens) to time; 0 skips SB3")
    parser.add_argument("--agents", default=",".join(n for n in AGENTS if not n.startswith("sb3")),
                        help="comma-separated agent names (default: all but SB3)")
    args = parser.parse_args(argv)
    names = [a.strip() for a in args.agents.split(",") if a.strip()]
    for name in names:
        if name not in AGENTS or name.startswith("sb3-"):
            raise SystemExit(f"--agents: {name!r} is not a native agent; accepted: "
                             f"{[a for a in AGENTS if not a.startswith('sb3-')]}")

    tokenizer = load_tokenizer(args.model)
    n, g = args.num_envs, args.max_new_tokens
    env_kwargs = dict(tokenizer=tokenizer, max_new_tokens=g, stop_tokens=[])

    def fresh() -> tuple[torch.nn.Module, Any]:  # the same start for every agent
        model = load_causal_lm(args.model, device=args.device, dtype=args.dtype)
        envs = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point",
                            **env_kwargs)
        return model, envs

    model, envs = fresh()
    device = next(model.parameters()).device
    compiled = use_compile(args.compile, device)
    overrides = {"device": str(device), "dtype": args.dtype, "compile": compiled,
                 "value_model": "shared"}  # one trunk, as the floor counts (docstring)
    params, peak = parameter_count(model), peak_tflops(device, args.peak_tflops)
    probe = PPOAgent(envs, model, PPOConfig(num_envs=n, **overrides))
    phases, seq = floor_phases(probe, envs, tokenizer, g, compiled)
    parts = {k: statistics.median(v) for k, v in time_phases(phases, args.repeats, device).items()}
    gen_best = min(v for k, v in parts.items() if k.startswith("generate"))
    del probe, model, envs, phases
    gc.collect()

    rows: dict[str, tuple[str, str, float, float, str, str, str]] = {}
    for name in names:
        model, envs = fresh()
        t = time_agent(name, envs, model, args.repeats, device, overrides)
        if AGENTS[name].trainable:
            floor = (gen_best + parts["reference forward"] + t.passes * parts["policy fwd/bwd"]
                     + t.steps * parts["optimizer step"])
            flops = iteration_flops(params, n, g, seq, t.passes, 1 + t.recompute)
        else:
            floor, flops = gen_best, 2 * params * n * g
        rows[name] = (AGENTS[name].family, f"{t.steps:.1f}", t.seconds, t.rate,
                      f"{floor:.3f}", f"{t.seconds / floor:.2f}x",
                      mfu_text(flops, t.seconds, peak))
        print(f"  {name}: {t.seconds:.3f} s/iteration, {t.rate:.0f} tokens/s, floor "
              f"{floor:.3f} s", flush=True)
        del model, envs
        gc.collect()

    sb3_rate = None
    if args.sb3_steps > 0:
        model = load_causal_lm(args.model, device=args.device, dtype=args.dtype)
        sb3 = make_agent("sb3-ppo", None, model)  # an SB3Agent: trains through train_sb3
        _, metrics = sb3.train(ENV_ID, args.sb3_steps, env_kwargs=env_kwargs)
        sb3_rate = float(metrics["steps_per_second"])
        rows["sb3-ppo"] = (AGENTS["sb3-ppo"].family,
                           f"{metrics['total_timesteps'] // sb3.config.n_steps}",
                           n * g / sb3_rate, sb3_rate, "", "", "")

    print(f"\nagents_speed: {args.model} ({params / 1e6:.0f}M parameters, {args.dtype}) on "
          f"{device_text(device)}, {n} rows x {g} new tokens (sequence {seq}), compile "
          f"{'on' if compiled else 'off'}, median of {args.repeats} after a warm-up\n")
    print(f"| {'agent':<10} | {'family':<18} | {'opt steps/it':>12} | {'s/iteration':>11} | "
          f"{'tokens/s':>9} | {'floor s':>7} | {'/floor':>6} | {'MFU':>6} |")
    print(f"|{'-' * 12}|{'-' * 20}|{'-' * 14}|{'-' * 13}|{'-' * 11}|{'-' * 9}|{'-' * 8}|"
          f"{'-' * 8}|")
    for name, (family, steps, sec, rate, floor, ratio, mfu) in rows.items():
        print(f"| {name:<10} | {family:<18} | {steps:>12} | {sec:11.3f} | {rate:9.1f} | "
              f"{floor:>7} | {ratio:>6} | {mfu:>6} |")
    print("\nfloor parts (s): " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))
    rollout = parts["env rollout, compiled" if compiled else "env rollout, eager"]
    print(f"rollout through env.step: {n * g / rollout:.0f} tokens/s "
          f"({1000 * rollout / g:.2f} ms per decode step); generate: {n * g / gen_best:.0f} "
          f"tokens/s; MFU {'against ' + f'{peak:.0f} TFLOP/s bf16' if peak else 'n/a (CPU)'}")
    if sb3_rate is not None and "ppo" in rows:
        ratio = sb3_rate / rows["ppo"][3]
        print(f"SB3-PPO / our PPO throughput (tokens/s) = {ratio:.3f}x "
              f"(our PPO is {1 / ratio:.0f}x faster); SB3 opt-steps column = SB3 rollouts run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
