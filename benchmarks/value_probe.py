"""How much of the return a value head on a policy's hidden states can explain at all.

    python -m tokengym.benchmarks.value_probe RUN [--layer -1] [--batches 6] [--episodes 64]
    python -m tokengym.benchmarks.value_probe --model smollm2-135m --env tokengym/Sentiment-v0 \
        --env-kwarg max_new_tokens=16 [--head mlp]

Samples ``batches`` x ``episodes`` training-split episodes from the trained policy of run
directory ``RUN`` (its ``model/``, env and env keywords from ``config.json``), or from ``--model``
on ``--env``, takes the hidden state of ``--layer`` (``-1``: the last, what PPO's shared value
head reads; others RMS-normalised) at every generated position, and fits the episode's score (the
Monte-Carlo return without the KL penalty) on all batches but the last: by ridge regression
(``--head linear``, the shape of PPO's head) or by a one-hidden-layer MLP (``--head mlp``, what a
non-linear head could do on the same features). Prints, per ridge strength or per number of MLP
epochs, the explained variance on the fitting episodes and on the held-out last batch, overall
and at a few positions. An online critic's explained variance much below the held-out figure is
an optimisation problem; near it, the features are the limit (``docs/ppo.md``, "Defaults and
why").
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import tokengym.envs  # noqa: F401  (registers the env ids)
from tokengym.agents.policy import completion_logits
from tokengym.agents.rollout import collect_rollout
from tokengym.benchmarks.heldout import add_policy_arguments, policy_settings
from tokengym.models import load_causal_lm

RIDGE = (1.0, 10.0, 100.0, 1000.0)
MLP_EPOCHS = (50, 100, 200, 400)
MLP_HIDDEN = 256


def explained_variance(target: np.ndarray, prediction: np.ndarray) -> float:
    return float(1 - np.var(target - prediction) / np.var(target))


def features(s: dict[str, Any], layer: int, batches: int, episodes: int, seed: int = 500
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X (T, H), scores (T,), episode index (T,), position (T,))`` over every generated
    token T of the sampled episodes of policy ``s["policy"]`` on ``s["env"]`` (the settings of
    :func:`~tokengym.benchmarks.heldout.run_settings`, plus ``policy``: a model name or path)."""
    lm = load_causal_lm(s["policy"]).eval()
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


def fit_ridge(x: np.ndarray, y: np.ndarray, test: np.ndarray
              ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(label, fitted predictions, held-out predictions)`` per ridge strength."""
    xa = np.hstack([x, np.ones((len(x), 1))])
    a, out = xa[~test], []
    for ridge in RIDGE:
        w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ y[~test])
        out.append((f"ridge {ridge:g}", a @ w, xa[test] @ w))
    return out


def fit_mlp(x: np.ndarray, y: np.ndarray, test: np.ndarray, seed: int = 0
            ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(label, fitted, held-out predictions)`` of a ``H -> 256 -> 1`` GELU MLP trained with
    Adam (minibatches of 256 tokens, weight decay 1e-4) on standardised features and targets,
    after each of :data:`MLP_EPOCHS` epochs."""
    torch.manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    mean, std = xt[torch.as_tensor(~test)].mean(0), xt[torch.as_tensor(~test)].std(0) + 1e-6
    xt = (xt - mean) / std
    ym, ys = float(y[~test].mean()), float(y[~test].std()) + 1e-9
    yt = torch.as_tensor((y - ym) / ys, dtype=torch.float32)
    train = torch.as_tensor(np.flatnonzero(~test))
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], MLP_HIDDEN), torch.nn.GELU(),
                              torch.nn.Linear(MLP_HIDDEN, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    out = []
    for epoch in range(1, max(MLP_EPOCHS) + 1):
        for rows in train[torch.randperm(len(train))].split(256):
            loss = (net(xt[rows]).squeeze(-1) - yt[rows]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch in MLP_EPOCHS:
            with torch.no_grad():
                pred = net(xt).squeeze(-1).numpy() * ys + ym
            out.append((f"mlp {epoch} epochs", pred[~test], pred[test]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokengym.benchmarks.value_probe",
                                     description=__doc__.split("\n\n")[0])
    add_policy_arguments(parser)
    parser.add_argument("--head", choices=("linear", "mlp"), nargs="+", default=["linear"],
                        help="the value heads to fit (default linear: PPO's)")
    parser.add_argument("--layer", type=int, default=-1, help="hidden-state index (-1: last)")
    parser.add_argument("--batches", type=int, default=6, help="rollouts; the last is held out")
    parser.add_argument("--episodes", type=int, default=64, help="episodes per rollout")
    args = parser.parse_args(argv)
    if args.batches < 2 or args.episodes < 2:
        raise SystemExit("--batches and --episodes must be >= 2 (one batch is held out)")
    try:
        settings = policy_settings(args)
        x, y, ep, pos = features(settings, args.layer, args.batches, args.episodes)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    test = ep >= (args.batches - 1) * args.episodes
    print(f"{len(y)} tokens, {int(test.sum())} held out; score std {y.std():.3f}; layer "
          f"{args.layer}")
    fits = [fit for head in args.head
            for fit in (fit_ridge(x, y, test) if head == "linear" else fit_mlp(x, y, test))]
    for label, fitted, pred in fits:
        by_pos = [explained_variance(y[test][pos[test] == t], pred[pos[test] == t])
                  for t in sorted(set(pos[test].tolist()))[::4]]
        print(f"{label}: explained variance fitted {explained_variance(y[~test], fitted):.3f}"
              f", held out {explained_variance(y[test], pred):.3f}; held out at every 4th "
              f"position {np.round(by_pos, 2).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
