"""How much of the score any critic could explain: Monte-Carlo values of a policy's own prefixes.

    python -m tokengym.benchmarks.value_ceiling RUN [--episodes 32] [--samples 8] [--every 4]
    python -m tokengym.benchmarks.value_ceiling --model smollm2-135m --env tokengym/Sentiment-v0 \\
        --env-kwarg max_new_tokens=16

A critic predicts, from the prompt and the first ``t`` tokens of an episode, the score the episode
will end with. The policy samples the rest, so even the true value ``V(s_t) = E[score | s_t]``
leaves the variance of that rest unexplained. This script measures the share it explains:
it samples ``--episodes`` training-split episodes from the policy (a run's ``model/``, or
``--model``), and for each and every ``--every``-th position ``t`` plays ``--samples`` more
episodes in the env that start with the same prompt (``reset(options={"prompt": record})``) and
the same first ``t`` tokens (stepped as actions), the policy sampling the rest (all episodes of
one position in one batch, decoded with a KV cache). With ``r_k`` their
scores, the best possible critic's explained variance at ``t`` is

    1 - mean over episodes of Var_k(r_k) / Var over every (episode, k) of r_k,

and the pooled figure weighs every position equally. A critic's explained variance (PPO's metric,
``docs/metrics.md``) near this ceiling cannot rise much; far below it, the critic is the limit
(:mod:`tokengym.benchmarks.value_probe` says what a head on the policy's features could do). The
score here is the env's reward without the KL penalty, which a critic's targets also carry.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import tokengym.envs  # noqa: F401  (registers the env ids)
from tokengym.agents.rollout import KVCacheDecoder, collect_rollout, sample_tokens
from tokengym.benchmarks.heldout import add_policy_arguments, policy_settings
from tokengym.models import load_causal_lm


@torch.no_grad()
def finish_episodes(envs: Any, model: torch.nn.Module, records: Sequence[Any],
                    prefixes: Sequence[Sequence[int]], temperature: float,
                    generator: torch.Generator, seed: int) -> np.ndarray:
    """Row ``j`` of ``envs`` plays one episode of prompt ``records[j // K]`` whose first actions
    are ``prefixes[j // K]`` (all of one length), the rest sampled from ``model`` with a KV
    cache; ``K = envs.num_envs / len(records)``. Returns the summed rewards ``(len(records), K)``."""
    n, groups = envs.num_envs, len(records)
    k = n // groups
    for g, record in enumerate(records):  # every row of group g starts from its prompt
        rows = np.zeros(n, dtype=bool)
        rows[g * k:(g + 1) * k] = True
        obs, _ = envs.reset(seed=seed + g * k, options={"reset_mask": rows, "prompt": record})
    width = envs.max_prompt_tokens
    decoder = KVCacheDecoder(model)
    logits, _ = decoder.start(torch.as_tensor(obs["input_ids"][:, :width]),
                              torch.as_tensor(obs["attention_mask"][:, :width]))
    forced = torch.as_tensor(np.repeat(np.asarray(prefixes, dtype=np.int64).reshape(groups, -1),
                                       k, axis=0))  # (n, t)
    total, done = np.zeros(n), np.zeros(n, dtype=bool)
    step = 0
    while not done.all():
        actions, _ = sample_tokens(logits[:, : envs.single_action_space.n], temperature,
                                   generator)
        if step < forced.shape[1]:
            actions = forced[:, step]
        _, reward, terminated, truncated, _ = envs.step(actions.numpy())
        total += np.where(done, 0.0, reward)
        done |= terminated | truncated
        logits, _ = decoder.advance(actions)
        step += 1
    return total.reshape(groups, k)


def ceiling(settings: dict[str, Any], episodes: int, samples: int, every: int,
            seed: int = 700) -> dict[int, float]:
    """Position ``t`` -> the best critic's explained variance there (module docstring), plus
    ``-1`` -> the pooled figure."""
    model = load_causal_lm(settings["policy"]).eval()
    kwargs = {k: v for k, v in settings["env_kwargs"].items() if k != "split"}

    def make(n: int) -> Any:
        return gym.make_vec(settings["env"], num_envs=n, vectorization_mode="vector_entry_point",
                            tokenizer=settings["model"], **kwargs)

    base = make(episodes)
    generator = torch.Generator().manual_seed(seed)
    base.reset(seed=seed)
    records = [{"prompt": r.text, **r.fields} for r in base.prompt_records()]
    with torch.no_grad():
        rollout = collect_rollout(base, model, seed=seed, temperature=settings["temperature"],
                                  generator=generator)
    base.close()
    if rollout.step_rewards is not None:
        raise ValueError("value_ceiling replays single-turn episodes (a multi-turn env's replies "
                         "would have to be replayed too)")
    lengths = rollout.mask.sum(1).tolist()
    out: dict[int, float] = {}
    for t in range(0, max(lengths), every):
        live = [i for i in range(episodes) if lengths[i] > t]  # episodes that reach t
        if len(live) < 2:
            continue
        envs = make(len(live) * samples)
        r = finish_episodes(envs, model, [records[i] for i in live],
                            [rollout.tokens[i, :t].tolist() for i in live],
                            settings["temperature"], generator, seed + 100_000 * (t + 1))
        envs.close()
        total = r.var(ddof=1)
        out[t] = float(1 - r.var(axis=1, ddof=1).mean() / total) if total > 0 else float("nan")
    finite = [v for v in out.values() if np.isfinite(v)]
    out[-1] = float(np.mean(finite)) if finite else float("nan")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tokengym.benchmarks.value_ceiling",
                                     description=__doc__.split("\n\n")[0])
    add_policy_arguments(parser)
    parser.add_argument("--episodes", type=int, default=32, help="episodes whose prefixes are "
                        "replayed")
    parser.add_argument("--samples", type=int, default=8, help="endings sampled per prefix")
    parser.add_argument("--every", type=int, default=4, help="replay every N-th position")
    parser.add_argument("--seed", type=int, default=700)
    args = parser.parse_args(argv)
    if args.episodes < 2 or args.samples < 2 or args.every < 1:
        raise SystemExit("--episodes and --samples must be >= 2 and --every >= 1")
    try:
        settings = policy_settings(args)
        result = ceiling(settings, args.episodes, args.samples, args.every, args.seed)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print(f"{args.episodes} episodes x {args.samples} endings per prefix; the best critic's "
          "explained variance of the score")
    for t, value in result.items():
        if t >= 0:
            print(f"after {t} tokens: {value:.3f}")
    print(f"pooled over positions: {result[-1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
