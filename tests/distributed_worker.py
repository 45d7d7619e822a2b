"""One rank of the multi-process equivalence check of ``tests/test_distributed.py``.

Started in 2 processes with torchrun's environment variables (``RANK``, ``WORLD_SIZE``, ...):
``python tests/distributed_worker.py OUT.json``. For each trainable agent:

1. rank 0 alone (``local_only``) trains ONE iteration of the agent on 8 env rows, as one process
   would, and keeps that iteration's rollout;
2. both ranks build the agent on 4 rows each (``num_envs=4`` per rank) and check that their own
   rollout's prompts are rows ``r*4 .. r*4+3`` of the 8-row rollout (the rank's seed offset);
3. rank 0's rollout is sent to both ranks, rank r trains ONE iteration on rows ``r*4 .. r*4+3``
   of it (its ``collect`` replaced: the same prompts and sampled tokens as the 8-row run; only the
   sampling itself differs between 1 x 8 and 2 x 4, since each rank draws its own stream);
4. rank 0 writes into OUT.json the metrics of both runs, how far their first optimizer step's
   gradients (summed over the ranks) and their weights after the iteration differ, and whether
   both ranks hold the same weights.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.agents import distributed
from tokengym.agents.groups import select_rows
from tokengym.agents.registry import make_agent
from tokengym.models import load_causal_lm, load_tokenizer

PROMPTS = [f"Review {i}: the {w} of this film" for i, w in
           enumerate(["start", "music", "plot", "cast", "ending", "camera", "script", "pace",
                      "light", "sound", "story", "score"])]
ROWS = 4  # per rank
# Settings that exercise every global statistic: score scaling, whitening, the adaptive KL
# controller, gradient accumulation, several epochs (one full-batch minibatch each: minibatch
# membership is then the same for 1 x 8 and 2 x 4), leave-one-out and group baselines.
CASES: dict[str, dict[str, Any]] = {
    "ppo": dict(epochs=2, num_minibatches=1, grad_accum_steps=2, scale_scores=True,
                adaptive_kl=True, adaptive_kl_horizon=100, warmup_iterations=0, lr=1e-3),
    "reinforce": dict(whiten_advantages=True, lr=1e-3),
    "rloo": dict(samples_per_prompt=2, whiten_advantages=True, lr=1e-3, scale_scores=True),
    "grpo": dict(samples_per_prompt=4, epochs=2, lr=1e-3),
    "a2c": dict(scale_scores=True, lr=1e-3),
}


def reward(prompts: list[str], completions: list[str]) -> np.ndarray:
    """Scores that differ between samples: the share of letters among the characters."""
    return np.array([sum(ch.isalpha() for ch in c) / max(len(c), 1) for c in completions],
                    dtype=np.float32)


def build(name: str, rows: int, tokenizer: Any) -> Any:
    envs = gym.make_vec("tokengym/TextGen-v0", num_envs=rows,
                        vectorization_mode="vector_entry_point", tokenizer=tokenizer,
                        prompts=PROMPTS, reward_model=reward, max_prompt_tokens=16,
                        max_new_tokens=6, stop_strings=["e"])
    return make_agent(name, envs, load_causal_lm("tiny-llama"),
                      {"num_envs": rows, "seed": 0, **CASES[name]})


def flat_weights(agent: Any) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in agent.params])


def first_gradient(agent: Any, store: dict[str, Any]) -> None:
    """Keep the gradients of the agent's first optimizer step in ``store["grads"]``."""
    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        if "grads" not in store:
            store["grads"] = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p))
                                        .reshape(-1).double() for p in agent.params])

    agent.optimizer.register_step_pre_hook(hook)


def clean(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if not k.startswith("time")
            and not k.endswith("_per_s")}


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    distributed.init_from_env(timeout_s=120)
    rank = distributed.rank()
    tokenizer = load_tokenizer("tiny-llama")
    results: dict[str, Any] = {}
    for name in CASES:
        single: dict[str, Any] = {}
        if rank == 0:
            with distributed.local_only():  # rank 0 alone, as one process with 8 rows
                agent8 = build(name, 2 * ROWS, tokenizer)
                agent8.collect = lambda s=single, c=agent8.collect: s.setdefault("rollout", c())
                before = flat_weights(agent8)
                first_gradient(agent8, single)
                single["record"] = clean(agent8.train_iteration())
                single["weights"] = flat_weights(agent8)
                single["beta"] = agent8.kl_controller.beta
        full = distributed.broadcast_object(single.get("rollout"))
        agent = build(name, ROWS, tokenizer)
        rows = torch.arange(rank * ROWS, (rank + 1) * ROWS)
        own = agent.collect()  # the rank's own prompts: rows r*4.. of the 8-row run
        same_prompts = bool(torch.equal(own.prompt_ids, full.prompt_ids[rows]))
        agent.collect = lambda full=full, rows=rows: select_rows(full, rows)
        multi: dict[str, Any] = {}
        first_gradient(agent, multi)
        record = clean(agent.train_iteration())
        weights = flat_weights(agent)
        weights0 = distributed.broadcast_object(weights)
        ranks_agree = distributed.all_gather_object(bool(torch.equal(weights, weights0)))
        prompts_match = distributed.all_gather_object(same_prompts)
        if rank == 0:
            moved = (single["weights"] - before).abs()
            diff = (weights - single["weights"]).abs()
            grad_diff = (multi["grads"] - single["grads"]).abs()
            results[name] = {
                "single": single["record"], "multi": record,
                "max_weight_diff": float(diff.max()), "max_update": float(moved.max()),
                "mean_update": float(moved.mean()),
                "max_grad_diff": float(grad_diff.max()),
                "max_grad": float(single["grads"].abs().max()),
                "beta_after": [single["beta"], agent.kl_controller.beta],
                "ranks_agree": all(ranks_agree), "prompts_match": all(prompts_match),
                "lengths": full.lengths.tolist(), "scores": full.rewards.tolist(),
            }
    if rank == 0:
        with open(out_path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
