"""``tokengym/GuessNumber-v0``: guess a secret whole number with higher/lower feedback.

Each prompt record carries ``low``, ``high``, ``secret`` and ``k`` (the turns allowed). The
``guess-number`` responder reads the first whole number of the agent's last turn and answers
deterministically: ``"Higher."``, ``"Lower."``, ``"Correct!"`` (the episode ends, per-turn reward
1.0 when solved within ``k`` turns), a reminder when the turn has no number or one out of range,
and ``"Out of turns. The number was S."`` (the episode ends, reward 0.0) after ``k`` turns. The
task has no reward model: the per-turn rewards are the whole reward.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from tokengym.envs.responders import Reply, Transcript

_INT = re.compile(r"-?\d+")
FIELDS = ("low", "high", "secret", "k")


def _fields(transcript: Transcript) -> tuple[int, int, int, int]:
    fields = transcript.record.fields
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        raise ValueError(f"guess-number needs prompt records with fields {list(FIELDS)}; this one "
                         f"lacks {missing} (prompt {transcript.record.text[:40]!r})")
    values = [fields[f] for f in FIELDS]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"guess-number fields {list(FIELDS)} must be integers, got {values}")
    low, high, secret, k = values
    return low, high, secret, k


class GuessNumberResponder:
    """Deterministic higher/lower feedback; 1.0 for a correct guess within ``k`` turns."""

    name = "guess-number"

    def __call__(self, transcript: Transcript) -> Reply:
        low, high, secret, k = _fields(transcript)
        turns_used = transcript.turn + 1
        match = _INT.search(transcript.last.text)
        guess = int(match.group()) if match else None
        if guess == secret:
            return Reply(text="Correct!", reward=1.0 if turns_used <= k else 0.0, done=True)
        if turns_used >= k:
            return Reply(text=f"Out of turns. The number was {secret}.", reward=0.0, done=True)
        if guess is None:
            return Reply(text=f"Please answer with one whole number from {low} to {high}.")
        if not low <= guess <= high:
            return Reply(text=f"{guess} is out of range: the number is from {low} to {high}.")
        return Reply(text="Higher." if guess < secret else "Lower.")


def make_game(low: int, high: int, rng: np.random.Generator) -> dict[str, Any]:
    """One prompt record for the range ``[low, high]``: a secret drawn with ``rng`` and
    ``k = ceil(log2(high - low + 1)) + 1`` turns (binary search always fits)."""
    k = math.ceil(math.log2(high - low + 1)) + 1
    prompt = (f"I am thinking of a whole number from {low} to {high}. Guess it in at most {k} "
              "turns: answer each turn with one number and I will say if mine is higher or lower.")
    return {"prompt": prompt, "low": low, "high": high, "secret": int(rng.integers(low, high + 1)),
            "k": k}
