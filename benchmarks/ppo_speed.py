"""How close PPO through ``env.step`` comes to the cost of its unavoidable parts.

SmolLM2-135M, 16 prompts x 24 new tokens (stop tokens off, so every row makes 24 tokens in both
paths), PPO with 1 epoch and 2 minibatches. Measured side by side in one process, medians of
``--repeats`` runs after one warm-up:

(a) rollout tokens/s through ``env.step`` (KV cache, ``collect_rollout``) vs ``model.generate``
    on the same prompts (target >= 0.9x);
(b) one PPO iteration vs the floor = generate + one reference forward + one policy
    forward/backward over the batch + one optimizer step (target <= 1.15x);
(c) peak memory: ``torch.cuda.max_memory_allocated`` on GPU, peak RSS (``ru_maxrss``) on CPU.

Run: ``python -m tokengym.benchmarks.ppo_speed [--model NAME] [--repeats N] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import torch

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.agents.batch import trim_columns
from tokengym.agents.policy import token_logprobs
from tokengym.agents.ppo import PPOAgent
from tokengym.agents.ppo_config import PPOConfig
from tokengym.agents.rollout import collect_rollout
from tokengym.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when available)")
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, device=args.device)
    device = next(model.parameters()).device
    n, g = args.num_envs, args.max_new_tokens
    envs = gym.make_vec("tokengym/Sentiment-v0", num_envs=n,
                        vectorization_mode="vector_entry_point",
                        tokenizer=tokenizer, max_new_tokens=g, stop_tokens=[])
    config = PPOConfig(num_envs=n, epochs=1, num_minibatches=2, device=str(device))
    agent = PPOAgent(envs, model, config)
    policy = agent.policy
    gen = torch.Generator(device=device).manual_seed(0)
    rollout = collect_rollout(envs, policy.lm, seed=0, generator=gen)
    prompt_ids, prompt_mask = rollout.prompt_ids.to(device), rollout.prompt_mask.to(device)
    # The same inputs the agent feeds its forwards: leading all-padding columns dropped.
    ids, am = trim_columns(*(t.to(device) for t in rollout.sequences()), g)
    tokens = rollout.tokens.to(device)

    def env_rollout() -> None:
        collect_rollout(envs, policy.lm, seed=0, generator=gen,
                        value_fn=policy.rollout_value_fn())

    @torch.no_grad()
    def generate() -> None:
        policy.lm.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True,
                           max_new_tokens=g, min_new_tokens=g, top_k=0, top_p=1.0,
                           pad_token_id=tokenizer.pad_token_id)

    def reference_forward() -> None:
        policy.reference_logprobs(ids, am, tokens, 1.0, agent.num_actions)

    def policy_forward_backward() -> None:
        logits, values = policy.forward_policy(ids, am, g)
        logprobs, _ = token_logprobs(logits, tokens, 1.0, agent.num_actions)
        (logprobs.mean() + values.mean()).backward()

    def optimizer_step() -> None:
        agent.optimizer.step()
        agent.optimizer.zero_grad(set_to_none=True)

    records: list[dict[str, float]] = []

    def ppo_iteration() -> None:
        records.append(agent.train_iteration())

    phases = {"env rollout": env_rollout, "generate": generate,
              "reference forward": reference_forward,
              "policy fwd/bwd": policy_forward_backward, "optimizer step": optimizer_step,
              "PPO iteration": ppo_iteration}
    times: dict[str, list[float]] = {k: [] for k in phases}
    for repeat in range(args.repeats + 1):
        for name, fn in phases.items():
            t = timed(fn, device)
            if repeat > 0:  # the first round warms up allocators and caches
                times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    floor = sum(med[k] for k in ("generate", "reference forward", "policy fwd/bwd",
                                 "optimizer step"))
    tok = n * g
    print(f"\nppo_speed: {args.model} on {device} ({torch.get_num_threads()} threads), "
          f"{n} prompts x "
          f"{g} new tokens, 1 epoch x 2 minibatches, median of {args.repeats}\n")
    print(f"| {'measurement':<34} | {'seconds':>8} | {'tokens/s':>9} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 11}|")
    for name in phases:
        rate = f"{tok / med[name]:9.0f}" if name in ("env rollout", "generate") else " " * 9
        print(f"| {name:<34} | {med[name]:8.3f} | {rate} |")
    print(f"| {'floor (gen+ref+fwd/bwd+opt)':<34} | {floor:8.3f} | {'':9} |")
    # Where the iteration's time goes, by the agent's own clocks (warm-up iteration excluded).
    timed_records = records[1:] or records
    for key, label in (("time_rollout_s", "rollout (sampling + values)"),
                       ("time_reference_s", "prepare (ref fwd, KL, GAE)"),
                       ("time_update_s", f"update ({config.num_minibatches} minibatch steps)")):
        value = statistics.median(r[key] for r in timed_records)
        print(f"| {'  PPO: ' + label:<34} | {value:8.3f} | {'':9} |")
    ratio_a = med["generate"] / med["env rollout"]
    ratio_b = med["PPO iteration"] / floor
    print(f"\n(a) env.step rollout speed / generate speed = {ratio_a:.2f}x  (target >= 0.90x)")
    print(f"(b) PPO iteration / floor                    = {ratio_b:.2f}x  (target <= 1.15x)")
    print(f"(c) peak memory: {peak_memory_mib(device):.0f} MiB "
          f"({'max_memory_allocated' if device.type == 'cuda' else 'peak RSS'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
