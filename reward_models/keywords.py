"""``keywords``: fraction of the given words that appear in the completion, in [0, 1]."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from tokengym.checks import boolean


def _keywords(words: Any) -> list[str] | None:
    """``words=`` as a list of keywords: None, a list of strings or one comma/space-separated
    string; an empty list would score every completion 0/0."""
    if words is None:
        return None
    if isinstance(words, str):
        words = [w for w in re.split(r"[,\s]+", words) if w]
    elif isinstance(words, (bytes, bytearray)) or not isinstance(words, Iterable):
        raise TypeError(
            "words must be a list of strings (or one comma/space-separated string), got "
            f"{type(words).__name__} {words!r}"
        )
    words = list(words)
    for i, w in enumerate(words):
        if not isinstance(w, str):
            raise TypeError(
                f"words must be a list of strings, but words[{i}] is {type(w).__name__} {w!r}"
            )
        if not w.strip():
            raise ValueError(f"words[{i}] is {w!r}: keywords must not be empty or blank")
    if not words:
        raise ValueError(
            "words must not be empty: give at least one keyword, or leave words=None to use each "
            "prompt record's 'keywords' field"
        )
    return words


class KeywordsReward:
    """Reward = (number of keywords present as whole words) / (number of keywords).

    Keywords come from the constructor (``words=[...]``, the same for every prompt) or per prompt
    from the prompt records' ``keywords`` field, which takes precedence for that sample. Matching
    is on whole words, case-insensitive unless ``case_sensitive=True``.
    """

    name = "keywords"

    def __init__(
        self, words: Sequence[str] | str | None = None, case_sensitive: bool = False
    ) -> None:
        self.words = _keywords(words)
        self.case_sensitive = boolean("case_sensitive", case_sensitive)

    def _coverage(self, text: str, words: Sequence[str]) -> float:
        if not words:
            raise ValueError("keyword list is empty")
        flags = 0 if self.case_sensitive else re.IGNORECASE
        hits = sum(bool(re.search(rf"\b{re.escape(w)}\b", text, flags)) for w in words)
        return hits / len(words)

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        keywords: Sequence[Sequence[str] | None] | None = None,
    ) -> np.ndarray:
        out = np.empty(len(completions), dtype=np.float32)
        for i, text in enumerate(completions):
            words = keywords[i] if keywords is not None and keywords[i] is not None else self.words
            if words is None:
                raise ValueError(
                    "no keywords: pass words=[...] to the reward model or give each prompt record "
                    "a 'keywords' field"
                )
            out[i] = self._coverage(text, words)
        return out
