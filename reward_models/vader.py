"""``vader``: VADER compound sentiment of the completion, in [-1, 1] (prompt ignored)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class VaderReward:
    """Reward = VADER compound score of each completion (-1 very negative, +1 very positive).

    Rule-based and CPU-only (~10k short texts per second), deterministic.
    """

    name = "vader"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return np.array(
            [self._analyzer.polarity_scores(text)["compound"] for text in completions],
            dtype=np.float32,
        )
