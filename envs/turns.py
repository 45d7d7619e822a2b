"""Multi-turn limits and how the env's messages become tokens (once, chat-template aware).

A multi-turn episode (an env with a ``responder``) is a prompt, then agent turns and env messages
in alternation. The limits, each an env keyword:

``max_turns`` (default 4)
    agent turns per episode; after the last one's reply the episode is ``truncated``
    (``stop_reason="max_turns"``) unless the responder said ``done``.
``max_turn_tokens`` (default ``max_new_tokens``)
    agent tokens per turn; the turn then ends (``turn_end="max_turn_tokens"``) and the responder
    is asked, as after a stop token or string. It ends a turn, not the episode.
``max_new_tokens`` (G)
    agent tokens (= steps) per episode, over all turns (``stop_reason="max_new_tokens"``).
``max_insert_tokens`` (default 64)
    tokens of one inserted message, chat-template markup included; a longer reply is a
    :class:`~tokengym.envs.responders.ResponderError` (a responder bug, not an episode outcome).
``max_episode_tokens`` (E; default ``G + max_turns * max_insert_tokens``, room for every turn)
    tokens after the prompt, agent and inserted together: the observation is ``P + E`` columns
    wide. A reply that does not fit in what is left is not inserted (``info["dropped_text"]``)
    and the episode is ``truncated`` (``stop_reason="max_episode_tokens"``); so is an episode
    whose columns are full.

Single-turn envs (no responder) have none of these: ``E = G`` and the observation is ``P + G``
wide, exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tokengym.checks import positive_int

RESPONDER_DONE = "responder_done"
MAX_TURNS = "max_turns"
MAX_TURN_TOKENS = "max_turn_tokens"
MAX_EPISODE_TOKENS = "max_episode_tokens"

DEFAULT_MAX_TURNS = 4
DEFAULT_MAX_INSERT_TOKENS = 64
MAX_LIMIT = 2**20
"""Largest value of each limit (1,048,576 tokens or turns)."""
CHARS_PER_TOKEN_BOUND = 64
"""A reply longer than ``max_insert_tokens * 64`` characters is refused before it is tokenized
(no token of a real vocabulary is that long): a guard against endless replies."""

_LIMIT_NAMES = ("max_turns", "max_turn_tokens", "max_insert_tokens", "max_episode_tokens")


@dataclass(frozen=True)
class TurnLimits:
    """The limits of a multi-turn episode (see the module docstring)."""

    max_turns: int
    max_turn_tokens: int
    max_insert_tokens: int
    max_episode_tokens: int


def turn_limits(multi_turn: bool, max_new_tokens: int, given: dict[str, Any]) -> TurnLimits | None:
    """The checked limits of a multi-turn env (None for a single-turn one).

    Raises:
        ValueError: a limit that is not a positive integer (at most 2**20), or a limit given to
            an env without a responder.
    """
    if not multi_turn:
        named = [f"{k}={v!r}" for k, v in given.items() if v is not None]
        if named:
            raise ValueError(
                f"{', '.join(named)}: turn limits apply to multi-turn episodes only; pass "
                "responder=... (a name, 'module:attr', an object or a function) or leave them unset"
            )
        return None
    turns = positive_int("max_turns", _default(given, "max_turns", DEFAULT_MAX_TURNS), MAX_LIMIT)
    turn_tokens = positive_int(
        "max_turn_tokens", _default(given, "max_turn_tokens", max_new_tokens), MAX_LIMIT)
    insert = positive_int(
        "max_insert_tokens", _default(given, "max_insert_tokens", DEFAULT_MAX_INSERT_TOKENS),
        MAX_LIMIT)
    default_width = min(max_new_tokens + turns * insert, MAX_LIMIT)
    width = positive_int(
        "max_episode_tokens", _default(given, "max_episode_tokens", default_width), MAX_LIMIT)
    return TurnLimits(turns, turn_tokens, insert, width)


def _default(given: dict[str, Any], name: str, default: int) -> Any:
    value = given.get(name)
    return default if value is None else value


class Inserter:
    """Turns an env message into the tokens inserted after an agent turn, tokenized once.

    Without a chat template the message's text is tokenized as is (no special tokens added).
    With one, the message becomes a user turn followed by the assistant header, exactly as the
    tokenizer's template writes them after an assistant turn: the assistant turn's closing markup
    (``<|im_end|>\\n`` for ChatML), the user turn, then the generation prompt. When the agent's
    turn already ended on the token that starts that closing markup (its end-of-turn token), that
    part is not repeated.

    Args:
        tokenizer: the env's Hugging Face tokenizer.
        chat_template: whether the env wraps text with the tokenizer's chat template.
        stop_ids: ``(k,)`` int64, the env's stop token ids.
    """

    _SENT_A = "\ue000tokengym-agent\ue000"  # private-use characters: no template rewrites them
    _SENT_U = "\ue000tokengym-env\ue000"

    def __init__(self, tokenizer: Any, chat_template: bool, stop_ids: np.ndarray) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self._before = ""
        self._after = ""
        self._skip: dict[int, int] = {}  # stop id -> characters of _before it already wrote
        if chat_template:
            messages = [{"role": "user", "content": "x"},
                        {"role": "assistant", "content": self._SENT_A},
                        {"role": "user", "content": self._SENT_U}]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            if self._SENT_A not in text or self._SENT_U not in text:
                raise ValueError("chat_template=True: the tokenizer's chat template does not write "
                                 "message contents verbatim, so env messages cannot be inserted")
            tail = text[text.index(self._SENT_A) + len(self._SENT_A):]
            self._before, self._after = tail.split(self._SENT_U, 1)
            for sid in stop_ids.tolist():
                piece = tokenizer.decode([sid], skip_special_tokens=False)
                if piece and self._before.startswith(piece):
                    self._skip[int(sid)] = len(piece)

    def text(self, message: str, ended_on: int | None) -> str:
        """The text inserted for ``message`` after a turn that ended on token ``ended_on`` (a
        stop token id, or None when it ended otherwise)."""
        if not self.chat_template:
            return message
        before = self._before[self._skip.get(ended_on, 0):] if ended_on is not None else self._before
        return before + message + self._after

    def encode(self, message: str, ended_on: int | None) -> np.ndarray:
        """``(k,)`` int64 token ids of :meth:`text` (no special tokens added; k may be 0)."""
        if not message:
            return np.zeros(0, dtype=np.int64)
        ids = self.tokenizer(self.text(message, ended_on), add_special_tokens=False)["input_ids"]
        return np.asarray(ids, dtype=np.int64).reshape(-1)
