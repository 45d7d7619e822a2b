"""How much of the return a linear value head on a policy's hidden states can explain at all.

    python -m tokengym.benchmarks.value_probe RUN [--layer -1] [--batches 6] [--episodes 64]

Samples ``batches`` x ``episodes`` training-split episodes from the trained policy of run
directory ``RUN`` (its ``model/``, env and env keywords from ``config.json``), takes the hidden
state of ``--layer`` (``-1``: the last, what PPO's shared value head reads; others RMS-normalised)
at every generated position, and fits the episode's score (the Monte-Carlo return without the KL
penalty) by ridge regression on all batches but the last. Prints, per ridge strength, the
explained variance on the fitting episodes and on the held-out last batch, overall and at a few
positions. An online critic's explained variance much below the held-out figure is an
optimisation problem; near it, the features are the limit (``docs/ppo.md``, "Defaults and why").
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import tokengym.envs  # noqa: F401  (registers the env ids)
from tokengym.agents.policy import completion_logits
from tokengym.agents.rollout import collect_rollout
from tokengym.benchmarks.heldout import run_settings
from tokengym.models import load_causal_lm

RIDGE = (1.0, 10.0, 100.0, 1000.0)


def explained_variance(target: np.ndarray, prediction: np.ndarray) -> float:
    return float(1 - np.var(target - prediction) / np.var(target))


def features(run: str, layer: int, batches: int, episodes: int, seed: int = 500
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X (T, H), scores (T,), episode index (T,), position (T,))`` over every generated
    token T of the sampled episodes."""
    s = run_settings(Path(run))
    lm = load_causal_lm(f"{run}/model").eval()
    kwargs = {k: v for k, v in s["env_kwargs"].items() if k != "split"}
    envs = gym.make_vec(s["env"], num_envs=episodes, vectorization_mode="vector_entry_point",
                        tokenizer=s["model"], **kwargs)
    xs, ys, eps, pos = [], [], [], []
    for k in range(batches):
        generator = torch.Generator().manual_seed(seed + k)
        with torch.no_grad():
            r = collect_rollout(envs, lm, seed=seed + k, temperature=s["temperature"],
                                generator=generator)
            ids, am = r.sequences()
            _, h = completion_logits(lm, ids, am, r.tokens.shape[1], hidden=True,
                                     hidden_layer=layer)
            h = h.float()
            if layer != -1:
                h = h / h.norm(dim=-1, keepdim=True) * h.shape[-1] ** 0.5
        for i in range(r.mask.shape[0]):
            n = int(r.mask[i].sum())
            xs.append(h[i, :n].numpy())
            ys.append(np.full(n, float(r.rewards[i])))
            eps.append(np.full(n, k * episodes + i))
            pos.append(np.arange(n))
    envs.close()
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(eps), np.concatenate(pos)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokengym.benchmarks.value_probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished tokengym train run directory")
    parser.add_argument("--layer", type=int, default=-1, help="hidden-state index (-1: last)")
    parser.add_argument("--batches", type=int, default=6, help="rollouts; the last is held out")
    parser.add_argument("--episodes", type=int, default=64, help="episodes per rollout")
    args = parser.parse_args(argv)
    if args.batches < 2 or args.episodes < 2:
        raise SystemExit("--batches and --episodes must be >= 2 (one batch is held out)")
    try:
        x, y, ep, pos = features(args.run, args.layer, args.batches, args.episodes)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    test = ep >= (args.batches - 1) * args.episodes
    xa = np.hstack([x, np.ones((len(x), 1))])
    a = xa[~test]
    print(f"{len(y)} tokens, {int(test.sum())} held out; score std {y.std():.3f}; layer "
          f"{args.layer}")
    for ridge in RIDGE:
        w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ y[~test])
        pred = xa[test] @ w
        by_pos = [explained_variance(y[test][pos[test] == t], pred[pos[test] == t])
                  for t in sorted(set(pos[test].tolist()))[::4]]
        print(f"ridge {ridge:g}: explained variance fitted {explained_variance(y[~test], a @ w):.3f}"
              f", held out {explained_variance(y[test], pred):.3f}; held out at every 4th "
              f"position {np.round(by_pos, 2).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
