"""How close PPO through ``env.step`` comes to the cost of its unavoidable parts.

SmolLM2-135M, 16 prompts x 24 new tokens by default (stop tokens off, so every row makes G tokens
in every path), PPO with 1 epoch and 2 minibatches. Measured side by side in one process, medians
of ``--repeats`` runs after one warm-up round (which also compiles):

(a) rollout tokens/s through ``env.step`` (``collect_rollout``): the eager path (KV cache) and,
    with compile on, the compiled static-cache path (``agents/decode.py``), each vs
    ``model.generate`` on the same prompts: dynamic cache and, with compile on, static cache
    (which transformers compiles on CUDA) (target >= 0.9x of the faster generate);
(b) one PPO iteration (``--compile``/``--no-compile``, ``--dtype``) vs the floor = the faster
    generate + one reference forward + one policy forward/backward over the batch + one
    optimizer step (target <= 1.15x on CPU, <= 1.3x on the GPU);
(c) end-to-end generated tokens/s of the PPO iteration, and on GPU the model FLOPs utilisation
    (MFU, ``benchmarks/flops.py``) of every row, against the bf16 peak;
(d) peak memory: ``torch.cuda.max_memory_allocated`` on GPU, peak RSS (``ru_maxrss``) on CPU.

Run: ``python -m tokengym.benchmarks.ppo_speed [--model NAME] [--num-envs N]
[--max-new-tokens G] [--repeats N] [--device cpu] [--compile/--no-compile] [--dtype bfloat16]
[--peak-tflops X]``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
from collections.abc import Callable

import gymnasium as gym
import torch

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.agents.agent_config import DTYPES
from tokengym.agents.batch import trim_columns
from tokengym.agents.decode import use_compile
from tokengym.agents.policy import token_logprobs
from tokengym.agents.ppo import PPOAgent
from tokengym.agents.ppo_config import PPOConfig
from tokengym.agents.rollout import collect_rollout
from tokengym.benchmarks.flops import (
    device_text,
    iteration_flops,
    mfu_text,
    parameter_count,
    peak_tflops,
    time_phases,
)
from tokengym.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def floor_phases(agent: PPOAgent, envs: object, tokenizer: object, g: int, compiled: bool
                 ) -> tuple[dict[str, Callable[[], object]], int]:
    """The parts of the floor, each a callable on the same batch (one rollout of ``envs``):
    env rollouts (eager; compiled when ``compiled``), ``model.generate`` (dynamic cache; static
    cache when ``compiled``), one reference forward, one policy forward/backward, one optimizer
    step. Returns them and the batch's teacher-forced sequence length."""
    policy, device = agent.policy, agent.policy.device
    gen = torch.Generator(device=device).manual_seed(0)
    rollout = collect_rollout(envs, policy.lm, seed=0, generator=gen, compile=False)
    prompt_ids, prompt_mask = rollout.prompt_ids.to(device), rollout.prompt_mask.to(device)
    # The same inputs the agent feeds its forwards: leading all-padding columns dropped.
    ids, am = trim_columns(*(t.to(device) for t in rollout.sequences()), g)
    tokens = rollout.tokens.to(device)

    def env_rollout(compile: bool) -> None:
        collect_rollout(envs, policy.lm, seed=0, generator=gen,
                        value_fn=policy.rollout_value_fn(), compile=compile)

    @torch.no_grad()
    def generate(cache: str | None) -> None:
        policy.lm.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True,
                           max_new_tokens=g, min_new_tokens=g, top_k=0, top_p=1.0,
                           pad_token_id=tokenizer.pad_token_id, cache_implementation=cache)

    def reference_forward() -> None:
        policy.reference_logprobs(ids, am, tokens, 1.0, agent.num_actions)

    def policy_forward_backward() -> None:
        logits, values = policy.forward_policy(ids, am, g)
        logprobs, _ = token_logprobs(logits, tokens, 1.0, agent.num_actions)
        (logprobs.mean() + values.mean()).backward()

    def optimizer_step() -> None:
        agent.optimizer.step()
        agent.optimizer.zero_grad(set_to_none=True)

    phases: dict[str, Callable[[], object]] = {"env rollout, eager": lambda: env_rollout(False)}
    if compiled:
        phases["env rollout, compiled"] = lambda: env_rollout(True)
    phases["generate"] = lambda: generate(None)
    if compiled:
        phases["generate, static cache"] = lambda: generate("static")
    phases.update({"reference forward": reference_forward,
                   "policy fwd/bwd": policy_forward_backward, "optimizer step": optimizer_step})
    return phases, ids.shape[1]


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags ``ppo_speed`` and ``agents_speed`` share."""
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when available)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="the compiled static-cache decode path (default: on CUDA only)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="parameter dtype of policy and reference (default float32)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak bf16 TFLOP/s for MFU (default: by GPU name)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_speed_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, device=args.device, dtype=args.dtype)
    device = next(model.parameters()).device
    compiled = use_compile(args.compile, device)
    n, g = args.num_envs, args.max_new_tokens
    envs = gym.make_vec("tokengym/Sentiment-v0", num_envs=n,
                        vectorization_mode="vector_entry_point",
                        tokenizer=tokenizer, max_new_tokens=g, stop_tokens=[])
    # The shared value head: the floor counts one trunk's forward/backward (PPO's default with
    # full fine-tuning, a separate value model, adds a second trunk's to every step).
    config = PPOConfig(num_envs=n, epochs=1, num_minibatches=2, device=str(device),
                       dtype=args.dtype, compile=compiled, value_model="shared")
    agent = PPOAgent(envs, model, config)
    phases, seq = floor_phases(agent, envs, tokenizer, g, compiled)
    records: list[dict[str, float]] = []
    phases["PPO iteration"] = lambda: records.append(agent.train_iteration())
    times = time_phases(phases, args.repeats, device)
    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: (min(v), max(v)) for k, v in times.items()}
    gen_best = min(med[k] for k in med if k.startswith("generate"))
    floor = gen_best + sum(med[k] for k in ("reference forward", "policy fwd/bwd",
                                            "optimizer step"))

    params, tok = parameter_count(agent.policy.lm), n * g
    peak = peak_tflops(device, args.peak_tflops)
    it_flops = iteration_flops(params, n, g, seq, config.epochs,
                               extra_forwards=1 + config.recomputes_logprobs())
    flops = {"reference forward": 2 * params * n * seq, "policy fwd/bwd": 6 * params * n * seq,
             "PPO iteration": it_flops, "floor": iteration_flops(params, n, g, seq, 1)}
    for name in phases:
        if "rollout" in name or name.startswith("generate"):
            flops[name] = 2 * params * tok
    print(f"\nppo_speed: {args.model} ({params / 1e6:.0f}M parameters, {args.dtype}) on "
          f"{device_text(device)}, {n} prompts x {g} new tokens (sequence {seq}), "
          f"1 epoch x 2 minibatches, compile {'on' if compiled else 'off'}, median of "
          f"{args.repeats} (min-max)\n")
    print(f"| {'measurement':<34} | {'seconds':>8} | {'min-max':>13} | {'tokens/s':>9} | "
          f"{'MFU':>7} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 15}|{'-' * 11}|{'-' * 9}|")
    rows = [*phases, "floor"]
    med["floor"], spread["floor"] = floor, (floor, floor)
    for name in rows:
        rate = f"{tok / med[name]:9.0f}" if name in flops and name not in (
            "reference forward", "policy fwd/bwd") else ""
        lo, hi = spread[name]
        mfu = mfu_text(flops[name], med[name], peak) if name in flops else ""
        label = "floor (gen+ref+fwd/bwd+opt)" if name == "floor" else name
        print(f"| {label:<34} | {med[name]:8.3f} | {lo:6.3f}-{hi:6.3f} | {rate:>9} | {mfu:>7} |")
    # Where the iteration's time goes, by the agent's own clocks (warm-up iteration excluded).
    timed_records = records[1:] or records
    for key, label in (("time_rollout_s", "rollout (sampling + values)"),
                       ("time_reference_s", "prepare (ref fwd, KL, GAE)"),
                       ("time_update_s", f"update ({config.num_minibatches} minibatch steps)")):
        value = statistics.median(r[key] for r in timed_records)
        print(f"| {'  PPO: ' + label:<34} | {value:8.3f} | {'':13} | {'':9} | {'':7} |")
    decode_ms = 1000 * med["env rollout, compiled" if compiled else "env rollout, eager"] / g
    print(f"\n(a) env.step rollout speed / generate speed (generate {med['generate']:.3f} s):")
    for name in (k for k in phases if "rollout" in k):
        ratios = ", ".join(f"{med[k] / med[name]:.2f}x vs {k}" for k in phases
                           if k.startswith("generate"))
        print(f"      {name}: {ratios}  (target >= 0.90x)")
    print(f"    one decode step of the rollout ({'compiled' if compiled else 'eager'}): "
          f"{decode_ms:.2f} ms (sampling, values and env.step included)")
    print(f"(b) PPO iteration / floor = {med['PPO iteration'] / floor:.2f}x  "
          f"(PPO {med['PPO iteration']:.3f} s, floor {floor:.3f} s; target <= 1.15x CPU, "
          "<= 1.3x GPU)")
    mfu = "MFU n/a (no GPU peak)" if peak is None else (
        f"MFU {mfu_text(it_flops, med['PPO iteration'], peak)} of {peak:.0f} TFLOP/s (bf16)")
    print(f"(c) end-to-end: {tok / med['PPO iteration']:.0f} generated tokens/s through PPO, "
          f"{med['PPO iteration']:.3f} s per iteration, {mfu}")
    print(f"(d) peak memory: {peak_memory_mib(device):.0f} MiB "
          f"({'max_memory_allocated' if device.type == 'cuda' else 'peak RSS'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
