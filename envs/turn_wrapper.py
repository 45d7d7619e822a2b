"""``TurnLevelWrapper``: the same env, one whole text turn per ``step``.

For text-level agents and comparisons with text-level frameworks. The wrapper tokenizes the
turn's text once, adds the env's end-of-turn token (its first stop token, EOS by default), and
feeds the tokens one by one to the token-level env underneath, so both views of an episode go
through the same code: the same tokens give the same transcript, observations and rewards.
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tokengym.checks import positive_int


class TurnLevelWrapper(gym.Wrapper):
    """A tokengym env (single- or multi-turn) whose action is the agent's whole turn, as text.

    ``step(text)`` tokenizes ``text`` (no special tokens added), appends ``end_token`` and steps
    the token-level env with each token until the turn ends (the env's ``info`` has ``turn``), or
    the episode does. Tokens after that point are not sent: a stop string inside the text ends the
    turn there, as it would at the token level.

    Returns ``(obs, reward, terminated, truncated, info)``: the token-level observation after the
    turn, the sum of the turn's step rewards (the per-turn reward, plus the score at the end),
    and the last step's info plus ``turn_token_ids`` (tuple of ints, the tokens sent) and
    ``unsent_token_ids`` (tuple of ints, those cut off).

    Args:
        env: a :class:`~tokengym.envs.TextGenEnv`, possibly inside gymnasium wrappers.
        end_token: the token id appended to every turn (None: the env's first stop token; with
            no stop token, turns must end by a stop string or ``max_turn_tokens``).
        max_chars: the action space's longest text (``spaces.Text`` needs a bound).

    Raises (from ``step``):
        TypeError: the action is not a string.
        ValueError: the text ended without ending the turn (possible only without an end token).
    """

    def __init__(self, env: gym.Env, end_token: int | None = None, max_chars: int = 4096) -> None:
        super().__init__(env)
        base = env.unwrapped
        episodes = getattr(base, "episodes", None)
        if episodes is None or not hasattr(base, "tokenizer"):
            raise TypeError(f"TurnLevelWrapper wraps a tokengym TextGenEnv, got {type(base).__name__}")
        self.tokenizer = base.tokenizer
        if end_token is None:
            stops = episodes.stop_ids
            end_token = int(stops[0]) if stops.size else None
        elif isinstance(end_token, bool) or not isinstance(end_token, (int, np.integer)):
            raise TypeError(f"end_token must be a token id or None, got {end_token!r}")
        self.end_token = end_token if end_token is None else episodes.check_action(end_token)
        limit = positive_int("max_chars", max_chars)
        self.action_space = spaces.Text(max_length=limit, min_length=0, charset=string.printable)

    def encode(self, text: str) -> list[int]:
        """The token ids one turn of ``text`` is sent as (end token included)."""
        if not isinstance(text, str):
            raise TypeError(f"a turn-level action is the turn's text (a str), got {type(text).__name__}")
        ids = [int(t) for t in self.tokenizer(text, add_special_tokens=False)["input_ids"]]
        return ids + ([self.end_token] if self.end_token is not None else [])

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        ids = self.encode(action)
        total = 0.0
        for k, token in enumerate(ids):
            obs, reward, terminated, truncated, info = self.env.step(token)
            total += float(reward)
            if terminated or truncated or "turn" in info:
                out = dict(info)
                out["turn_token_ids"] = tuple(ids[: k + 1])
                out["unsent_token_ids"] = tuple(ids[k + 1:])
                return obs, total, terminated, truncated, out
        raise ValueError(
            f"the turn {action!r:.60} ended without ending the agent's turn: the env has no stop "
            "token to append; end the text with a stop string, pass end_token=, or reach "
            "max_turn_tokens"
        )
