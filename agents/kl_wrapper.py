"""``KLPenaltyWrapper``: the per-token KL penalty to a reference model, on the env side.

Third-party agents (Stable-Baselines3, CleanRL, ...) know nothing about a reference model. This
wrapper turns a tokengym env into one whose reward already carries the penalty::

    r_t = env_reward_t - beta * KL_t

with ``KL_t`` the k1 or k3 estimate (:func:`~tokengym.agents.kl.kl_per_token`) of the sampled
token ``a_t``, from ``log pi(a_t|s_t)`` and ``log ref(a_t|s_t)``. The env's score still arrives
on the last step (plus that step's penalty). Each model keeps a KV cache for the current episode,
so every token costs one single-token forward per model; ``reset()`` drops the caches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from tokengym.agents.agent_config import rename_deprecated
from tokengym.agents.kl import KL_ESTIMATORS, kl_per_token
from tokengym.agents.rollout import KVCacheDecoder
from tokengym.envs.protocol import TextEnvLike
from tokengym.models import load_causal_lm

# policy(input_ids (1, T), attention_mask (1, T)) -> next-token logits (1, V) or (V,)
LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _is_causal_lm(obj: Any) -> bool:
    return isinstance(obj, nn.Module) and hasattr(getattr(obj, "config", None), "vocab_size")


def _params_version(model: nn.Module) -> int:
    # In-place updates (optimizer steps, load_state_dict) bump each tensor's version counter:
    # a changed sum means cached keys/values were computed with other weights.
    return sum(p._version for p in model.parameters())


class _NextTokenScorer:
    """Log-probs of the next token of one growing sequence under one model.

    A causal LM gets a KV cache (rebuilt from scratch when its weights change mid-episode);
    a plain callable is run on the whole sequence at every step.
    """

    def __init__(self, model: nn.Module | LogitsFn, num_actions: int, temperature: float) -> None:
        self.model = model
        self.num_actions = num_actions
        self.temperature = temperature
        self.cached = _is_causal_lm(model)
        self.reset(torch.zeros(1, 0, dtype=torch.long))

    def reset(self, prompt_ids: torch.Tensor) -> None:
        """Start a new sequence from ``prompt_ids`` ``(1, T0)`` (no padding)."""
        self.prompt_ids = prompt_ids
        self._decoder: KVCacheDecoder | None = None
        self._fed = 0  # generated tokens already in the cache
        self._logits: torch.Tensor | None = None
        self._version = -1

    @torch.no_grad()
    def logprob(self, generated: list[int], action: int) -> float:
        """``log p(action | prompt + generated)`` under ``softmax(logits[:n] / temperature)``."""
        if self.cached:
            logits = self._cached_logits(generated)
        else:
            ids = torch.cat([self.prompt_ids, torch.tensor([generated], dtype=torch.long)], dim=1)
            logits = torch.as_tensor(self.model(ids, torch.ones_like(ids))).reshape(-1)
            if logits.numel() < self.num_actions:
                raise ValueError(f"policy returned {logits.numel()} logits; the env has "
                                 f"{self.num_actions} actions (return next-token logits, (1, V))")
        logp = torch.log_softmax(logits[: self.num_actions].float() / self.temperature, dim=-1)
        return float(logp[action])

    def _cached_logits(self, generated: list[int]) -> torch.Tensor:
        version = _params_version(self.model)
        if self._decoder is None or version != self._version:
            self._decoder = KVCacheDecoder(self.model)
            ids = torch.cat([self.prompt_ids, torch.tensor([generated], dtype=torch.long)], dim=1)
            self._logits, _ = self._decoder.start(ids, torch.ones_like(ids))
            self._fed, self._version = len(generated), version
        while self._fed < len(generated):
            tok = torch.tensor([generated[self._fed]], dtype=torch.long)
            self._logits, _ = self._decoder.advance(tok)
            self._fed += 1
        return self._logits[0]


class KLPenaltyWrapper(gym.Wrapper):
    """Shapes a tokengym env's reward with ``-beta * KL_t`` to a frozen reference model.

    Args:
        env: a tokengym ``TextGenEnv`` (possibly wrapped), e.g. ``gym.make("tokengym/Sentiment-v0")``.
        reference: the frozen reference LM, a ``transformers`` causal LM or a tokengym model name.
            It is only read (no gradients, never modified).
        beta: the KL coefficient, >= 0.
        policy: what ``log pi(a_t|s_t)`` is computed with, sharing weights with the agent's
            policy so the KL follows training: a causal LM ``nn.Module`` (KV-cached; the cache is
            rebuilt when its weights change), an object with such a module as ``.lm`` (e.g.
            ``LMActorCriticPolicy``), or a callable ``policy(input_ids (1, T), attention_mask
            (1, T)) -> next-token logits (1, V)`` (run on the whole sequence at every step).
            Can also be given later with :meth:`set_policy`.
        kl_estimator: ``"k1"`` (log-ratio) or ``"k3"``; see :mod:`tokengym.agents.kl`.
        estimator: the 0.1.0 name of ``kl_estimator`` (deprecated, accepted until 0.3).
        temperature: both distributions are ``softmax(logits / temperature)`` (use the agent's
            sampling temperature).

    Without a policy, the wrapper cannot know ``log pi`` and uses the reference-only estimator
    ``r_t = env_reward_t + beta * log ref(a_t|s_t)`` (the cross-entropy part of the KL). Since
    ``-KL_t = E_pi[log ref(a_t|s_t)] + H(pi(.|s_t))``, adding an entropy bonus ``beta * H_t`` to the
    per-token return makes it exactly the KL-penalised objective in expectation. SB3's ``ent_coef``
    adds the entropy to the loss rather than to the return (and PPO normalises advantages), so
    ``ent_coef=beta`` there is only an approximation of that missing term.

    Info keys added at each step: ``env_reward``, ``ref_logprob``, ``kl_penalty`` (the amount
    subtracted from the reward); with a policy also ``logprob`` and ``kl`` (``KL_t``), and on
    the last step ``episode_kl`` (the episode's summed ``KL_t``, also appended to
    ``episode_kls``). The observation, termination and truncation are the env's.

    Multi-turn envs: ``KL_t`` is taken at every agent token (step) with the env's inserted tokens
    (``info["inserted_ids"]``) in the context, never on the inserted tokens themselves.
    """

    def __init__(
        self,
        env: gym.Env,
        reference: nn.Module | str,
        beta: float,
        *,
        policy: nn.Module | LogitsFn | None = None,
        kl_estimator: str = "k1",
        temperature: float = 1.0,
        estimator: str | None = None,
    ) -> None:
        if estimator is not None:  # its 0.1.0 name
            kl_estimator = rename_deprecated({"estimator": estimator}, "KLPenaltyWrapper")[
                "kl_estimator"]
        if not isinstance(env, gym.Env):
            raise TypeError(f"env must be a gymnasium.Env (a tokengym TextGenEnv), got {type(env).__name__}")
        # Only the env protocol's members are read (tokengym.envs.protocol); the env's state is internal.
        if not isinstance(env.unwrapped, TextEnvLike):
            raise TypeError(f"env must be a tokengym text-generation env (a TextGenEnv), got {env}")
        super().__init__(env)
        self.prompt_len = env.unwrapped.max_prompt_tokens
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0 or math.isinf(beta):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        if kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator={kl_estimator!r}; accepted: {KL_ESTIMATORS}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
        if isinstance(reference, str):
            reference = load_causal_lm(reference)
        if not _is_causal_lm(reference):
            raise TypeError("reference must be a transformers causal LM (nn.Module with a config) or a "
                            f"model name, got {type(reference).__name__}")
        self.num_actions = int(env.action_space.n)
        if reference.config.vocab_size < self.num_actions:
            raise ValueError(f"reference vocabulary ({reference.config.vocab_size}) is smaller than the "
                             f"env's action space ({self.num_actions})")
        self.reference = reference
        self.beta = float(beta)
        self.kl_estimator = kl_estimator
        self.temperature = float(temperature)
        self._ref = _NextTokenScorer(reference, self.num_actions, self.temperature)
        self._policy: _NextTokenScorer | None = None
        self.set_policy(policy)
        self._generated: list[int] = []
        self._episode_kl = 0.0
        self.episode_kls: list[float] = []

    def set_policy(self, policy: nn.Module | LogitsFn | None) -> None:
        """Use ``policy`` for ``log pi`` from the next step on (None: reference-only estimator)."""
        if policy is not None and not _is_causal_lm(policy) and _is_causal_lm(getattr(policy, "lm", None)):
            policy = policy.lm
        if policy is not None and not callable(policy):
            raise TypeError("policy must be a causal LM nn.Module, an object with one as .lm, a callable "
                            f"(input_ids, attention_mask) -> logits, or None; got {type(policy).__name__}")
        self.policy = policy
        self._policy = None
        if policy is not None:
            self._policy = _NextTokenScorer(policy, self.num_actions, self.temperature)
            self._policy.reset(self._ref.prompt_ids)  # mid-episode: it catches up on the next step

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        ids, mask = obs["input_ids"][: self.prompt_len], obs["attention_mask"][: self.prompt_len]
        # The prompt without its left padding: same positions (0..T0-1), nothing to mask.
        prompt = torch.as_tensor(ids[mask.astype(bool)], dtype=torch.long).unsqueeze(0)
        self._ref.reset(prompt)
        if self._policy is not None:
            self._policy.reset(prompt)
        self._generated = []
        self._episode_kl = 0.0
        return obs, info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        # The env validates the action (and that an episode is running) before we index with it.
        obs, reward, terminated, truncated, info = self.env.step(action)
        token = int(action)
        ref_lp = self._ref.logprob(self._generated, token)
        info = dict(info)
        info["env_reward"] = float(reward)
        info["ref_logprob"] = ref_lp
        if self._policy is not None:
            lp = self._policy.logprob(self._generated, token)
            kl = float(kl_per_token(torch.tensor([lp], dtype=torch.float64),
                                    torch.tensor([ref_lp], dtype=torch.float64), self.kl_estimator)[0])
            info["logprob"], info["kl"] = lp, kl
            penalty = self.beta * kl
            self._episode_kl += kl
        else:
            penalty = -self.beta * ref_lp
        info["kl_penalty"] = penalty
        self._generated.append(token)
        # Multi-turn: the env's inserted tokens follow the agent's (context, not actions).
        self._generated.extend(int(t) for t in info.get("inserted_ids", ()))
        if (terminated or truncated) and self._policy is not None:
            info["episode_kl"] = self._episode_kl
            self.episode_kls.append(self._episode_kl)
        return obs, float(reward) - penalty, terminated, truncated, info
