"""``keywords``: fraction of the given words that appear in the completion, in [0, 1]."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


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
        if isinstance(words, str):
            words = [w for w in re.split(r"[,\s]+", words) if w]
        self.words = list(words) if words is not None else None
        self.case_sensitive = case_sensitive

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
