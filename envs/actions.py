"""Checking actions (token ids) and the stop tokens/strings that end an agent's turn."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

STOP_TOKEN = "stop_token"
STOP_STRING = "stop_string"
MAX_NEW_TOKENS = "max_new_tokens"


def stop_strings(value: Any) -> list[str]:
    """``stop_strings=``: a list of non-empty strings (None: none)."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(f"stop_strings must be a list of non-empty strings, got {value!r}")
    strings = list(value)
    if not all(isinstance(s, str) and s for s in strings):
        raise TypeError(f"stop_strings must be a list of non-empty strings, got {value!r}")
    return strings


def stop_ids(tokenizer: Any, vocab_size: int, stop_tokens: Sequence[int | str] | None) -> np.ndarray:
    """``stop_tokens=`` as sorted token ids ``(k,)`` int64 (None: the EOS token, if any)."""
    if stop_tokens is None:
        if tokenizer.eos_token_id is None:
            return np.zeros(0, dtype=np.int64)
        return np.array([tokenizer.eos_token_id], dtype=np.int64)
    if isinstance(stop_tokens, (str, int, np.integer)):
        stop_tokens = [stop_tokens]
    elif isinstance(stop_tokens, (bytes, bytearray, Mapping)) or not isinstance(stop_tokens, Iterable):
        raise TypeError(
            "stop_tokens must be a token id, a token string or a list of them, got "
            f"{type(stop_tokens).__name__} {stop_tokens!r}"
        )
    ids = []
    for tok in stop_tokens:
        if isinstance(tok, str):
            tid = tokenizer.convert_tokens_to_ids(tok)
            if tid is None or tid == tokenizer.unk_token_id:
                raise ValueError(f"stop token {tok!r} is not a single token of this tokenizer")
            ids.append(tid)
        elif (isinstance(tok, (int, np.integer)) and not isinstance(tok, bool)
              and 0 <= tok < vocab_size):
            ids.append(int(tok))
        else:
            raise ValueError(f"stop token {tok!r} must be a token string or an id in [0, {vocab_size})")
    return np.array(sorted(set(ids)), dtype=np.int64)


def check_action(action: Any, vocab_size: int) -> int:
    """Validate one action (a token id) and return it as an int."""
    if isinstance(action, np.ndarray) and action.shape == ():
        action = action[()]
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
        raise TypeError(
            f"action must be an integer token id in [0, {vocab_size}), got "
            f"{type(action).__name__} {action!r}"
        )
    if not 0 <= action < vocab_size:
        raise ValueError(f"action {int(action)} is out of range: token ids are in [0, {vocab_size})")
    return int(action)


def check_actions(actions: Any, num_slots: int, vocab_size: int) -> np.ndarray:
    """Validate a batch of actions, shape ``(N,)`` integer token ids; returns them as int64."""
    try:
        arr = np.asarray(actions)
    except (TypeError, ValueError) as exc:  # ragged nesting: numpy cannot make an array
        raise ValueError(
            f"actions must be a sequence of {num_slots} integer token ids (shape "
            f"({num_slots},)), got {type(actions).__name__} {actions!r:.80} ({exc})"
        ) from None
    if arr.shape != (num_slots,):
        raise ValueError(f"actions must have shape ({num_slots},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"actions must be integer token ids, got dtype {arr.dtype}")
    bad = np.flatnonzero((arr < 0) | (arr >= vocab_size))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"actions[{i}] = {int(arr[i])} is out of range: token ids are in [0, {vocab_size})")
    return arr.astype(np.int64, copy=False)
