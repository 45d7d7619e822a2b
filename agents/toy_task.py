"""A toy task on which any correct policy-gradient agent must improve, for tests and smoke runs.

Reward = the fraction of the completion's tokens that belong to a fixed target set holding 10% of
the vocabulary, so a uniform policy scores ~0.1. The completion text is re-tokenised to score it,
as any text-only reward model would.

The target set is *learnable*: :func:`embedding_targets` picks the tokens whose (tied) embedding
points furthest along one random direction ``u``. A policy improves on all of them at once by
moving its last hidden state along ``u``, which a few dozen PPO updates do. (A random set of ids
would have no such shared direction, and a random 3M-parameter model would need thousands of
updates to raise 5k unrelated logits one by one.) On ``tiny-llama``, whose next-token
distribution is near-uniform over 49k tokens, sample at a low temperature (0.1) so that each
context has a few thousand plausible tokens rather than all of them. Shared by the agent tests.

:func:`make_feedback_envs` is its multi-turn counterpart, a task that can only be solved by using
what the env says: the agent writes one token (turn 1), the env reveals one of two tokens, and
turn 2 earns 1.0 when the agent's one token is among the 10% of the vocabulary on the revealed
token's side of the direction between the two embeddings. Every prompt reads the same, so a policy
blind to the revealed token scores at most 0.5 in expectation; one that reads it can score 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from tokengym.envs.responders import Reply, Transcript

TOY_PROMPTS = ("Hello", "The cat", "Once upon a time", "In the morning", "My friend said",
               "Numbers:", "The weather today", "A short story")


def embedding_targets(model: torch.nn.Module, fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    """Sorted ids of the ``fraction`` of tokens whose input embedding projects highest on a
    random unit direction (seeded)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    emb = model.get_input_embeddings().weight.detach().float().cpu()
    u = torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(seed))
    proj = emb @ u
    return torch.nonzero(proj > torch.quantile(proj, 1 - fraction)).squeeze(-1).numpy()


class TargetFractionReward:
    """``rm(prompts, completions)``: fraction of each completion's tokens in ``target_ids``
    (re-tokenised, as any text reward model sees them).

    ``first_token_only=True`` scores only the FIRST token (1.0 or 0.0): a reward that one
    position decides, arriving after the last one, so an agent must credit the right step.
    """

    name = "target_fraction"

    def __init__(self, tokenizer: Any, target_ids: Sequence[int] | np.ndarray,
                 first_token_only: bool = False) -> None:
        self.tokenizer = tokenizer
        self.first_token_only = first_token_only
        self.is_target = np.zeros(len(tokenizer), dtype=bool)
        self.is_target[np.asarray(target_ids, dtype=np.int64)] = True

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        out = []
        for text in completions:
            ids = np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"], np.int64)
            if self.first_token_only:
                ids = ids[:1]
            out.append(float(self.is_target[ids].mean()) if ids.size else 0.0)
        return out


def make_toy_envs(tokenizer: Any, model: torch.nn.Module, num_envs: int, *,
                  max_new_tokens: int = 8, sync: bool = False) -> Any:
    """The toy task as a native ``TextGenVectorEnv`` (or a ``SyncVectorEnv`` of ``TextGenEnv``).

    ``model`` is only read, to pick the target set (:func:`embedding_targets`).
    """
    kwargs = dict(tokenizer=tokenizer, prompts=list(TOY_PROMPTS),
                  reward_model=TargetFractionReward(tokenizer, embedding_targets(model)),
                  max_new_tokens=max_new_tokens, max_prompt_tokens=8)
    if sync:
        return gym.vector.SyncVectorEnv(
            [lambda: gym.make("tokengym/TextGen-v0", **kwargs).unwrapped] * num_envs
        )
    return gym.make_vec("tokengym/TextGen-v0", num_envs=num_envs,
                        vectorization_mode="vector_entry_point", **kwargs)


FEEDBACK_WORDS = (" red", " blue")
"""The two tokens :func:`make_feedback_envs` reveals (one token each in SmolLM2's vocabulary)."""


class FeedbackResponder:
    """Turn 1: reveal ``words[secret]`` (the record's ``secret``, 0 or 1). Turn 2: reward 1.0
    when the agent's first token of the turn is in ``targets[secret]``, and end the episode."""

    name = "feedback"

    def __init__(self, words: Sequence[str], targets: Sequence[np.ndarray]) -> None:
        self.words = tuple(words)
        self.targets = tuple(targets)

    def __call__(self, transcript: Transcript) -> Reply:
        secret = int(transcript.record.fields["secret"])
        if transcript.turn == 0:
            return Reply(text=self.words[secret])
        token = transcript.last.token_ids[0]
        return Reply(reward=float(self.targets[secret][token]), done=True)


def make_feedback_envs(tokenizer: Any, model: torch.nn.Module, num_envs: int,
                       fraction: float = 0.1) -> Any:
    """The multi-turn feedback task (module docstring) as a native ``TextGenVectorEnv``.

    ``model`` is only read: the target sets are the ``fraction`` of tokens whose input embedding
    projects highest (``secret`` 0) and lowest (``secret`` 1) on ``e(red) - e(blue)``.
    """
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in FEEDBACK_WORDS]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"{FEEDBACK_WORDS} are not one token each in this tokenizer: {ids}")
    emb = model.get_input_embeddings().weight.detach().float().cpu()[: len(tokenizer)]
    proj = emb @ (emb[ids[0][0]] - emb[ids[1][0]])
    targets = [(proj > torch.quantile(proj, 1 - fraction)).numpy(),
               (proj < torch.quantile(proj, fraction)).numpy()]
    prompts = [{"prompt": "Repeat:", "secret": 0}, {"prompt": "Repeat:", "secret": 1}]
    return gym.make_vec("tokengym/TextGen-v0", num_envs=num_envs,
                        vectorization_mode="vector_entry_point", tokenizer=tokenizer,
                        prompts=prompts, reward_model=None, max_prompt_tokens=4,
                        max_new_tokens=2, max_turn_tokens=1, max_turns=2, max_insert_tokens=1,
                        stop_tokens=[],
                        responder=FeedbackResponder(FEEDBACK_WORDS, targets))
