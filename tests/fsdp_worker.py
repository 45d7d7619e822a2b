"""One rank of ``tests/test_fsdp.py``'s memory check: ``python tests/fsdp_worker.py OUT.json``
under torchrun's environment variables. Builds PPO and GRPO with ``fsdp=True`` on tiny-llama,
trains one iteration of each and writes (rank 0) how many numbers of the policy's weights, Adam
moments and reference this rank holds against the whole model's, and whether the update moved
the weights and left them finite."""

from __future__ import annotations

import json
import sys

import gymnasium as gym
import torch
from distributed_worker import PROMPTS, reward

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.agents import distributed
from tokengym.agents.fsdp import is_sharded
from tokengym.agents.registry import make_agent
from tokengym.models import load_causal_lm, load_tokenizer


def local_numel(tensor: torch.Tensor) -> int:
    return tensor.to_local().numel() if is_sharded(tensor) else tensor.numel()


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    with distributed.session(timeout_s=120):
        tokenizer = load_tokenizer("tiny-llama")
        # Scores that differ between samples, so that GRPO's group advantages are not all 0.
        envs = gym.make_vec("tokengym/TextGen-v0", num_envs=2,
                            vectorization_mode="vector_entry_point", tokenizer=tokenizer,
                            prompts=PROMPTS, reward_model=reward, max_new_tokens=6,
                            max_prompt_tokens=16)
        result = {}
        for name, extra in (("ppo", {}), ("grpo", {"samples_per_prompt": 2})):
            agent = make_agent(name, envs, load_causal_lm("tiny-llama"),
                               {"num_envs": 2, "fsdp": True, "warmup_iterations": 0, "lr": 1e-4,
                                **extra})
            before = [p.detach().full_tensor().clone() if is_sharded(p) else p.detach().clone()
                      for p in agent.params]
            record = agent.train_iteration()
            params = agent.params
            moments = [v for s in agent.optimizer.state.values() for k, v in s.items()
                       if k in ("exp_avg", "exp_avg_sq")]
            reference = list(agent.policy.ref.parameters())
            after = [p.detach().full_tensor() if is_sharded(p) else p.detach() for p in params]
            result[name] = {
                "params_local": sum(local_numel(p) for p in params),
                "params_full": sum(p.numel() for p in params),
                "moments_local": sum(local_numel(m) for m in moments),
                "moments_full": sum(m.numel() for m in moments),
                "reference_local": sum(local_numel(p) for p in reference),
                "reference_full": sum(p.numel() for p in reference),
                "sharded_params": sum(is_sharded(p) for p in params),
                "whole_params": sum(not is_sharded(p) for p in params),
                "moved": any(not torch.equal(a, b) for a, b in zip(before, after)),
                "finite": all(bool(torch.isfinite(a).all()) for a in after),
                "loss_finite": all(v == v for v in record.values() if isinstance(v, float)),
            }
        gathered = distributed.all_gather_object(result)
        if distributed.is_main():
            with open(out_path, "w", encoding="utf-8") as f:
                json.dump(gathered, f)


if __name__ == "__main__":
    main(sys.argv[1])
