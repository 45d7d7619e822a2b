"""One rank of ``tests/test_fsdp.py``'s memory check: ``python tests/fsdp_worker.py OUT.json``
under torchrun's environment variables. Builds PPO with ``fsdp=True`` on tiny-llama, trains one
iteration and writes (rank 0) how many numbers of the policy's weights, gradients-to-be and Adam
moments this rank holds against the whole model's."""

from __future__ import annotations

import json
import sys

import gymnasium as gym
import torch

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
        envs = gym.make_vec("tokengym/Sentiment-v0", num_envs=2,
                            vectorization_mode="vector_entry_point", tokenizer=tokenizer,
                            max_new_tokens=4, max_prompt_tokens=16)
        agent = make_agent("ppo", envs, load_causal_lm("tiny-llama"),
                           {"num_envs": 2, "fsdp": True, "warmup_iterations": 0, "lr": 1e-4})
        agent.train_iteration()
        params = agent.params
        moments = [v for s in agent.optimizer.state.values() for k, v in s.items()
                   if k in ("exp_avg", "exp_avg_sq")]
        reference = list(agent.policy.ref.parameters())
        result = {
            "params_local": sum(local_numel(p) for p in params),
            "params_full": sum(p.numel() for p in params),
            "moments_local": sum(local_numel(m) for m in moments),
            "moments_full": sum(m.numel() for m in moments),
            "reference_local": sum(local_numel(p) for p in reference),
            "reference_full": sum(p.numel() for p in reference),
            "sharded_params": sum(is_sharded(p) for p in params),
            "whole_params": sum(not is_sharded(p) for p in params),
        }
        gathered = distributed.all_gather_object(result)
        if distributed.is_main():
            with open(out_path, "w", encoding="utf-8") as f:
                json.dump(gathered, f)


if __name__ == "__main__":
    main(sys.argv[1])
