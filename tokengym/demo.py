"""``tokengym demo``: a few minutes of PPO on SmolLM2-135M + VADER (``tokengym/Sentiment-v0``).

The policy writes movie-review continuations token by token through the native vector env's
``step`` (KV cache, batched), VADER scores them, and PPO with a KL penalty to the starting model
makes them more positive. Prints the mean reward and KL on held-out prompts before and after,
and where the plot of the run is.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.agents.logging import MetricsLogger, plot_metrics, sample_rows
from tokengym.agents.ppo import PPOAgent
from tokengym.agents.ppo_config import PPOConfig
from tokengym.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="policy (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=20,
                        help="PPO iterations (20 fit in ~5 minutes on a 2-core CPU)")
    parser.add_argument("--epochs", type=int, default=2, help="PPO epochs per rollout")
    parser.add_argument("--num-envs", type=int, default=8, help="episodes per iteration")
    parser.add_argument("--eval-episodes", type=int, default=16, help="held-out episodes")
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--beta", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/demo", help="where metrics and plots go")


def run(args: argparse.Namespace, name: str) -> int:
    if args.iterations < 1 or args.num_envs < 2:
        raise SystemExit("--iterations must be >= 1 and --num-envs >= 2")
    started = time.perf_counter()
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model)

    def make_envs(n: int, split: str):
        return gym.make_vec("tokengym/Sentiment-v0", num_envs=n, split=split,
                            vectorization_mode="vector_entry_point", tokenizer=tokenizer,
                            max_new_tokens=args.max_new_tokens)

    config = PPOConfig(num_envs=args.num_envs, lr=args.lr, beta=args.beta, seed=args.seed,
                       epochs=args.epochs, num_minibatches=2, vf_coef=0.1)
    agent = PPOAgent(make_envs(args.num_envs, "train"), model, config)
    eval_envs = make_envs(args.eval_episodes, "eval")
    print(f"model loaded in {time.perf_counter() - started:.0f} s; evaluating the start policy...")
    before_rollout, before = agent.evaluate(eval_envs, seed=args.seed)

    out = Path(args.out)
    logger = MetricsLogger(out, tensorboard=False, start_iteration=0)
    for _ in range(args.iterations):
        record = agent.train_iteration()
        logger.log(record)
        print(f"iteration {record['iteration']:3d}  reward {record['reward_mean']:+.3f}  "
              f"KL {record['kl_mean']:6.3f}  beta {record['beta']:.3f}  "
              f"({record['time_iteration_s']:.1f} s)", flush=True)
    logger.close()
    after_rollout, after = agent.evaluate(eval_envs, seed=args.seed)
    plots = plot_metrics(out / "metrics.jsonl", out / "plots")

    for b, a in list(zip(sample_rows(before_rollout), sample_rows(after_rollout)))[:3]:
        print(f"\nprompt: {b['prompt']}\n  before ({b['reward']:+.2f}): {b['completion'].strip()!r}"
              f"\n  after  ({a['reward']:+.2f}): {a['completion'].strip()!r}")
    print(f"\nheld-out mean reward: {before['reward_mean']:+.3f} -> {after['reward_mean']:+.3f}")
    print(f"held-out mean KL to the start model (nats per episode): {before['kl_mean']:.3f} -> "
          f"{after['kl_mean']:.3f}")
    print(f"plot: {plots[0]}\ntotal time {time.perf_counter() - started:.0f} s")
    return 0
