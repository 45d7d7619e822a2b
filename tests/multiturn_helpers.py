"""A multi-turn env for the agent-side tests: rows end turns at random steps (a random fifth of
the vocabulary are stop tokens), insert replies of 0-4 tokens, earn per-turn rewards and end
their episodes at different steps; and a vector wrapper that keeps each row's final observation."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import SyncVectorEnv

from tokengym.envs import Reply, TextGenEnv, TextGenVectorEnv, Transcript

PROMPTS = ["Hello", "The cat sat on the", "Once upon a time there", "Numbers:"]
STOP_IDS = list(range(0, 49152, 5))  # ~20% per step: turns end at different steps in each row
P = 8


def replies(transcript: Transcript) -> Reply:
    """0-4 tokens of reply (``" ok"`` each), a per-turn reward, done after some turns."""
    last = transcript.last.token_ids
    n = (len(last) * 7 + transcript.turn) % 5
    return Reply(text=" ok" * n, reward=0.25 * (transcript.turn + 1) - 0.1 * len(last),
                 done=transcript.turn >= 2 and len(last) % 2 == 0)


def length_score(prompts: list[str], completions: list[str]) -> list[float]:
    return [len(c) / 20 for c in completions]


ENV_KW: dict[str, Any] = dict(prompts=PROMPTS, reward_model=length_score, max_prompt_tokens=P,
                              max_new_tokens=12, stop_tokens=STOP_IDS, responder=replies,
                              max_turns=5, max_insert_tokens=8)


def multiturn_envs(tokenizer: Any, num_envs: int = 6, sync: bool = False, **kwargs: Any) -> Any:
    """The test env (module docstring), native or a ``SyncVectorEnv`` of ``TextGenEnv``."""
    kw = {**ENV_KW, "tokenizer": tokenizer, **kwargs}
    if sync:
        return SyncVectorEnv([lambda: TextGenEnv(**kw)] * num_envs)
    return TextGenVectorEnv(num_envs, **kw)


class FinalObservations(gym.vector.VectorWrapper):
    """Keeps each row's observation at the step its first episode ended (NEXT_STEP autoreset
    returns it then) in :attr:`final`, and each step's ``info`` in :attr:`infos`."""

    def reset(self, **kwargs: Any) -> Any:
        self.final: dict[int, dict[str, np.ndarray]] = {}
        self.infos: list[dict[str, Any]] = []
        return self.env.reset(**kwargs)

    def step(self, actions: Any) -> Any:
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        self.infos.append(infos)
        for i in np.flatnonzero(terminated | truncated):
            self.final.setdefault(int(i), {k: v[i].copy() for k, v in obs.items()})
        return obs, rewards, terminated, truncated, infos
