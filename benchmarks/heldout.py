"""Held-out evaluation of finished ``tokengym train`` runs against their untrained policy.

    python -m tokengym.benchmarks.heldout runs/D [runs/E ...] [--episodes 64] [--seed 10000]

For each run directory (its ``config.json`` names the env, env keywords, model and temperature;
its ``model/`` folder holds the trained policy), samples one episode per held-out prompt
(``split="eval"``, reset/sampling seed ``--seed``) from the untrained model and from the trained
one, through :func:`~tokengym.benchmarks.evaluate.evaluate_policy`, and prints the reward, the
exact KL to the untrained model (nats per episode) and the untrained model's perplexity of the
completions, with the trained/untrained perplexity ratio. The figures of ``docs/ppo.md``'s
"Defaults and why" come from here, next to :mod:`~tokengym.benchmarks.health`'s.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import tokengym.envs  # noqa: F401  (registers the env ids)
from tokengym.benchmarks.evaluate import evaluate_policy
from tokengym.fileio import read_json
from tokengym.models import load_causal_lm


def run_settings(run: Path) -> dict[str, Any]:
    """``env``, ``env_kwargs``, ``model``, ``temperature`` of run directory ``run``
    (``ValueError`` naming what is missing)."""
    path = run / "config.json"
    if not path.is_file():
        raise ValueError(f"{run} is not a tokengym train run directory (no config.json)")
    data = read_json(path)
    if not (run / "model").is_dir():
        raise ValueError(f"{run} has no trained model/ folder yet (the run is not finished)")
    config = data.get("config", {})
    return {"env": data["env"], "env_kwargs": dict(data.get("env_kwargs", {})),
            "model": data["model"], "temperature": float(config.get("temperature", 1.0))}


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """The diagnostics' way to name a policy: a run directory, or ``--model`` on ``--env``."""
    parser.add_argument("run", nargs="?", help="a finished tokengym train run directory")
    parser.add_argument("--model", help="a model (name or path) instead of a run's policy")
    parser.add_argument("--env", help="with --model: the env id")
    parser.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                        help="with --model: an env keyword (repeatable)")
    parser.add_argument("--temperature", type=float, default=1.0, help="with --model")


def policy_settings(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_settings` of ``args.run``, or the same keys for ``--model`` on ``--env``, plus
    ``policy`` (what to load as the policy); ``SystemExit`` when neither or both are given,
    ``ValueError`` for a run directory that is not one."""
    from tokengym.train import parse_env_kwargs  # the CLI's parser, only when needed

    if (args.run is None) == (args.model is None) or (args.model is not None) != bool(args.env):
        raise SystemExit("pass a run directory, or --model and --env (not both)")
    if args.run is not None:
        return {**run_settings(Path(args.run)), "policy": f"{args.run}/model"}
    return {"env": args.env, "env_kwargs": parse_env_kwargs(args.env_kwarg), "model": args.model,
            "policy": args.model, "temperature": args.temperature}


def heldout(run: str | Path, episodes: int = 64, seed: int = 10_000) -> dict[str, dict[str, float]]:
    """``{"untrained": metrics, "trained": metrics}`` of run directory ``run`` (metrics of
    :func:`~tokengym.benchmarks.evaluate.evaluate_policy`, plus ``ref_perplexity_ratio`` for the
    trained policy)."""
    run = Path(run)
    s = run_settings(run)
    kwargs = {k: v for k, v in s["env_kwargs"].items() if k != "split"}
    envs = gym.make_vec(s["env"], num_envs=episodes, vectorization_mode="vector_entry_point",
                        tokenizer=s["model"], split="eval", **kwargs)
    reference = load_causal_lm(s["model"]).eval()
    trained = load_causal_lm(str(run / "model")).eval()
    try:
        with torch.no_grad():
            before, _ = evaluate_policy(reference, reference, envs, seed=seed,
                                        temperature=s["temperature"])
            after, _ = evaluate_policy(trained, reference, envs, seed=seed,
                                       temperature=s["temperature"])
    finally:
        envs.close()
    after["ref_perplexity_ratio"] = after["ref_perplexity"] / before["ref_perplexity"]
    return {"untrained": before, "trained": after}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokengym.benchmarks.heldout",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="tokengym train run directories")
    parser.add_argument("--episodes", type=int, default=64, help="held-out prompts (default 64)")
    parser.add_argument("--seed", type=int, default=10_000, help="reset/sampling seed")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        raise SystemExit(f"--episodes must be >= 1, got {args.episodes}")
    for run in args.runs:
        try:
            result = heldout(run, args.episodes, args.seed)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        b, a = result["untrained"], result["trained"]
        print(f"{run}: reward {b['reward_mean']:.3f} -> {a['reward_mean']:.3f}; exact KL "
              f"{a['kl_mean']:.2f} nats; ref perplexity {b['ref_perplexity']:.1f} -> "
              f"{a['ref_perplexity']:.1f} ({a['ref_perplexity_ratio']:.2f}x); "
              f"{args.episodes} eval episodes, seed {args.seed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
