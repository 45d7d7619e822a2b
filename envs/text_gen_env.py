"""``TextGenEnv``: text generation as a Gymnasium environment, one token per step."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tokengym.envs.episodes import EpisodeBatch, EpisodeSizes
from tokengym.envs.prompts import PromptRecord
from tokengym.models import BUILTIN_MODELS, DEFAULT_MODEL, load_tokenizer


@functools.lru_cache(maxsize=8)
def _shared_tokenizer(name: str) -> Any:
    # Envs only read from the tokenizer, so one instance serves every env built from a name
    # (a SyncVectorEnv of 16 envs would otherwise load it 16 times).
    return load_tokenizer(name)


def resolve_tokenizer(tokenizer: Any) -> Any:
    """A tokengym model name / hub id / path (loaded once per process), or a tokenizer object.

    Raises:
        ValueError: a name or path that does not load (unknown, not in the offline cache, a
            folder without tokenizer files), naming it and what is accepted.
        TypeError: neither a string, a path nor a tokenizer object.
    """
    if isinstance(tokenizer, (str, os.PathLike)):
        name = os.fspath(tokenizer)
        try:
            return _shared_tokenizer(name)
        except (OSError, ValueError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ValueError(
                f"tokenizer {name!r} could not be loaded ({reason}); pass a tokengym model name "
                f"({', '.join(BUILTIN_MODELS)}), a hub id already in the local Hugging Face cache, "
                "a local path to a saved tokenizer, or a tokenizer object"
            ) from exc
    if not (callable(tokenizer) and hasattr(tokenizer, "decode") and hasattr(tokenizer, "__len__")):
        raise TypeError(
            "tokenizer must be a model name ('smollm2-135m', 'tiny-llama', a hub id or a local "
            f"path) or a Hugging Face tokenizer object, got {type(tokenizer).__name__}"
        )
    return tokenizer


def make_spaces(vocab_size: int, seq_len: int, agent_mask: bool = False
                ) -> tuple[spaces.Discrete, spaces.Dict]:
    """The action space and the observation space of one text-generation episode (with an
    ``agent_mask`` Box when ``agent_mask``)."""
    action_space = spaces.Discrete(vocab_size)
    boxes = {
        "input_ids": spaces.Box(0, vocab_size - 1, shape=(seq_len,), dtype=np.int64),
        "attention_mask": spaces.Box(0, 1, shape=(seq_len,), dtype=np.int64),
    }
    if agent_mask:
        boxes["agent_mask"] = spaces.Box(0, 1, shape=(seq_len,), dtype=np.int64)
    return action_space, spaces.Dict(boxes)


class TextGenEnv(EpisodeSizes, gym.Env):
    """A language model writes one token per step; a reward model scores the finished text.

    ## Description
    Each episode is one prompt. The agent (normally a language-model policy) chooses the next token
    at every step; the episode ends when it emits a stop token or reaches ``max_new_tokens``, and
    the reward model scores (prompt text, completion text).

    With a ``responder`` the episode is multi-turn: a stop token/string (or ``max_turn_tokens``)
    ends the agent's *turn*; the responder returns the env's next message (tokenized once and
    appended in the same step, after the agent's token), an optional per-turn reward and whether
    the episode is over. See :mod:`tokengym.envs.conversations` and :mod:`tokengym.envs.turns`.

    ## Action Space
    ``Discrete(len(tokenizer))``: the id of the next token.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))`` with
    ``L = max_prompt_tokens + max_new_tokens``. The prompt is left-padded to end at column
    ``max_prompt_tokens - 1``; generated token t sits at column ``max_prompt_tokens + t``; the rest
    is right padding. ``attention_mask`` is 1 on real tokens and 0 on padding, whose ids are the
    tokenizer's pad id.

    Multi-turn: ``L = max_prompt_tokens + max_episode_tokens``; after the prompt come the agent's
    tokens and the inserted tokens in the order they happened, and a third key ``agent_mask``
    (``Box(0, 1, (L,), int64)``) is 1 exactly on the agent's tokens (0 on prompt, inserted and
    padding tokens). Single-turn envs add it only with ``agent_mask=True`` (it then marks the
    completion columns); their observation is otherwise unchanged.

    ## Rewards
    0.0 on every step but the last; on the last step, the reward model's score of the prompt and
    the completion (the stop token excluded, special tokens skipped, cut before a stop string).
    Multi-turn: the responder's per-turn reward at the step that ends each turn, plus at the last
    step the reward model's score of the whole transcript (``reward_model=None``: 0); the return
    is ``sum(per-turn rewards) + score``.

    ## Starting State
    A prompt drawn from ``prompts`` in a shuffled order seeded by ``reset(seed=...)`` (the same
    seed gives the same prompt order), or the prompt forced with ``options={"prompt": ...}``.
    Prompts longer than ``max_prompt_tokens`` lose their beginning (``info["prompt_truncated"]``).

    ## Episode End
    ``terminated``: the last token is a stop token (EOS by default) or the completion contains a
    stop string. ``truncated``: ``max_new_tokens`` tokens were generated without stopping.
    Multi-turn: ``terminated`` when the responder says done (``stop_reason="responder_done"``);
    ``truncated`` at ``max_turns`` turns, ``max_new_tokens`` agent tokens or
    ``max_episode_tokens`` columns (``stop_reason`` names which).

    ## Info
    At reset: ``prompt``, ``prompt_id`` (index in the prompt source, -1 if forced or generated),
    ``prompt_tokens``, ``prompt_truncated``. At the last step: ``prompt``, ``prompt_id``,
    ``completion``, ``completion_tokens``, ``stop_reason`` (``"stop_token"``, ``"stop_string"``
    or ``"max_new_tokens"``) and ``reward_components`` (name -> score). Multi-turn, at each step
    that ends a turn: ``turn``, ``turn_end``, ``turn_reward``, ``inserted_text``,
    ``inserted_ids`` (a tuple of ints: the tokens appended after the agent's in this step); at the
    last step also ``turns``, ``turn_rewards`` and ``score``.

    ## Arguments
    - ``prompts``: list of strings or ``{"prompt": str, **fields}`` records, a ``.txt``/``.jsonl``
      path, or a callable ``rng -> prompt``. Record fields reach the reward model as keywords.
    - ``reward_model``: a callable ``rm(prompts, completions) -> n floats``, a registered name
      (``"vader"``, ``"keywords"``, ...) or an import string ``"package.module:attribute"``.
    - ``reward_model_kwargs``: arguments when ``reward_model`` is a name.
    - ``tokenizer``: a tokengym model name, hub id, local path, or a tokenizer object
      (default ``"smollm2-135m"``).
    - ``max_prompt_tokens`` (64), ``max_new_tokens`` (32): the token budgets, each at most
      2**20, with ``num_envs * (max_prompt_tokens + max_new_tokens)`` at most 2**27.
    - ``stop_tokens``: ids or token strings ending an episode (default: EOS).
    - ``stop_strings``: strings ending an episode.
    - ``chat_template``: ``True`` wraps prompts as a user turn with the generation prompt
      (``True`` or ``False`` only).
    - ``render_mode``: ``"ansi"`` (render returns the text) or ``"human"`` (prints it).
    - ``responder``: makes episodes multi-turn: a registered name (``"calculator"``,
      ``"guess-number"``, ``"lm-user"``, ``"textarena"``, ``"echo"``), an import string, an object
      or a function ``f(transcript) -> Reply | str | None``; ``responder_kwargs`` for a name.
    - ``max_turns`` (4), ``max_turn_tokens`` (``max_new_tokens``), ``max_insert_tokens`` (64),
      ``max_episode_tokens`` (``max_new_tokens + max_turns * max_insert_tokens``): multi-turn
      limits, only with a responder.
    - ``agent_mask``: ``True`` adds ``agent_mask`` to a single-turn observation (multi-turn
      observations always have it).

    ## Attributes for agents
    ``max_prompt_tokens``, ``max_new_tokens``, ``max_episode_tokens``, ``num_actions`` and
    ``prompt_record`` (the :class:`~tokengym.envs.protocol.TextEnvLike` protocol); ``episodes`` is
    internal state.

    ## Version History
    - v0: initial version.
    """

    metadata = {"render_modes": ["ansi", "human"]}

    def __init__(
        self,
        *,
        prompts: Any,
        reward_model: Any = None,
        tokenizer: Any = DEFAULT_MODEL,
        max_prompt_tokens: int = 64,
        max_new_tokens: int = 32,
        stop_tokens: Sequence[int | str] | None = None,
        stop_strings: Sequence[str] | None = None,
        chat_template: bool = False,
        reward_model_kwargs: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        responder: Any = None,
        responder_kwargs: Mapping[str, Any] | None = None,
        max_turns: int | None = None,
        max_turn_tokens: int | None = None,
        max_insert_tokens: int | None = None,
        max_episode_tokens: int | None = None,
        agent_mask: bool | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            # TypeError, not ValueError: wrappers such as SB3's make_vec_env try render_mode=
            # "rgb_array" first and fall back to no rendering on TypeError.
            raise TypeError(f"render_mode {render_mode!r} is not supported; use 'ansi', 'human' or None")
        self.render_mode = render_mode
        self.tokenizer = resolve_tokenizer(tokenizer)
        self.episodes = EpisodeBatch(
            1,
            prompts=prompts,
            reward_model=reward_model,
            tokenizer=self.tokenizer,
            max_prompt_tokens=max_prompt_tokens,
            max_new_tokens=max_new_tokens,
            stop_tokens=stop_tokens,
            stop_strings=stop_strings,
            chat_template=chat_template,
            reward_model_kwargs=reward_model_kwargs,
            responder=responder,
            responder_kwargs=responder_kwargs,
            max_turns=max_turns,
            max_turn_tokens=max_turn_tokens,
            max_insert_tokens=max_insert_tokens,
            max_episode_tokens=max_episode_tokens,
            agent_mask=agent_mask,
        )
        self.reward_model = self.episodes.reward_model
        self.responder = self.episodes.responder
        self.action_space, self.observation_space = make_spaces(
            self.episodes.vocab_size, self.episodes.seq_len, self.episodes.observe_agent_mask
        )

    # -- what agents may rely on (tokengym.envs.protocol.TextEnvLike; sizes: EpisodeSizes) --------
    @property
    def prompt_record(self) -> PromptRecord | None:
        """The current episode's prompt (text, id in the source, fields); None before any reset."""
        return self.episodes.records[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.episodes.restart_order(0)
        info = self.episodes.reset_slot(0, self.np_random, options)
        if self.render_mode == "human":
            self.render()
        return self.episodes.observation(0), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        token = self.episodes.check_action(action)
        if not self.episodes.started[0]:
            raise ValueError("call reset() before step()")
        if self.episodes.ended[0]:
            raise ValueError("the episode has ended (terminated or truncated); call reset() before step()")
        rewards, terminated, truncated, infos = self.episodes.step_slots(
            np.zeros(1, dtype=np.int64), np.array([token], dtype=np.int64)
        )
        if self.render_mode == "human":
            self.render()
        return (
            self.episodes.observation(0),
            float(rewards[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            infos[0],
        )

    def render(self) -> str | None:
        text = self.episodes.render_text(0)
        if self.render_mode == "ansi":
            return text
        if self.render_mode == "human":
            print(text)
        return None
