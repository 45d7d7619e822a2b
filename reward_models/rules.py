"""Rule-based and verifiable rewards: ``length``, ``regex``, ``repetition``, ``arithmetic``.

All are CPU-only, deterministic and cost microseconds per completion; the prompt is ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from tokengym.checks import boolean, finite_number, positive_int
from tokengym.reward_models.base import RewardModelError
from tokengym.reward_models.batching import per_sample, sample_error

_WORD = re.compile(r"\w+(?:['’]\w+)*")
# An optional sign, digits with optional thousands separators, an optional decimal part.
_NUMBER = re.compile(r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` (runs of letters/digits, apostrophes kept inside)."""
    return _WORD.findall(text.lower())


class LengthReward:
    """Reward = ``max(0, 1 - |n - K| / tolerance)``, n = the completion's word count.

    ``K`` is the prompt record's ``target`` field when it has one (tasks such as ``Length-v0``
    ask for a different count per prompt), else the constructor's ``target``. 1.0 at exactly
    ``K`` words, falling linearly to 0.0 at ``K ± tolerance``; range [0, 1]. ``tolerance``
    defaults to ``K``.
    """

    name = "length"

    def __init__(self, target: int = 20, tolerance: float | None = None) -> None:
        self.target = positive_int("target", target)
        if tolerance is not None:  # a number of words > 0
            tolerance = finite_number("tolerance", tolerance, minimum=0, exclusive=True)
        self.tolerance = tolerance

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        target: Sequence[int | None] | None = None,
    ) -> np.ndarray:
        counts = np.array([len(words(c)) for c in completions], dtype=np.float64)
        targets = np.array(
            [self.target if target is None or target[i] is None
             else positive_int(f"target of sample {i}", target[i]) for i in range(len(completions))],
            dtype=np.float64,
        )
        tolerance = targets if self.tolerance is None else self.tolerance
        return np.clip(1.0 - np.abs(counts - targets) / tolerance, 0.0, 1.0).astype(np.float32)


class RegexReward:
    """Reward = ``match`` (1.0) when the pattern is found in the completion, else ``no_match``.

    Args:
        pattern: a Python regular expression.
        mode: ``"search"`` (anywhere), ``"match"`` (at the start) or ``"fullmatch"``.
        ignore_case: compile with ``re.IGNORECASE``.
        match / no_match: the two reward values.
    """

    name = "regex"
    MODES = ("search", "match", "fullmatch")

    def __init__(
        self,
        pattern: str,
        mode: str = "search",
        ignore_case: bool = False,
        match: float = 1.0,
        no_match: float = 0.0,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        ignore_case = boolean("ignore_case", ignore_case)
        try:
            self.pattern = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except (re.error, TypeError) as exc:
            raise ValueError(
                f"pattern {pattern!r} is not a valid regular expression: {exc}"
            ) from None
        self._test = getattr(self.pattern, mode)
        self.values = (finite_number("match", match), finite_number("no_match", no_match))

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        hit, miss = self.values
        return np.array([hit if self._test(c) else miss for c in completions], dtype=np.float32)


class RepetitionReward:
    """Reward = ``distinct_n - 1`` in [-1, 0]: 0 when no word n-gram repeats, towards -1 when
    the completion repeats itself.

    ``distinct_n`` is (number of distinct word n-grams) / (number of n-grams), the usual
    diversity measure; completions shorter than n words get 0 (nothing to repeat).
    """

    name = "repetition"

    def __init__(self, n: int = 2) -> None:
        self.n = positive_int("n", n)

    def distinct(self, text: str) -> float:
        toks = words(text)
        grams = [tuple(toks[i : i + self.n]) for i in range(len(toks) - self.n + 1)]
        return len(set(grams)) / len(grams) if grams else 1.0

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return np.array([self.distinct(c) - 1.0 for c in completions], dtype=np.float32)


def numbers(text: str) -> list[float]:
    """Every number written in ``text`` (``"-3"``, ``"1,250"``, ``"2.5"``), in order."""
    return [float(m.group().replace(",", "").replace("−", "-")) for m in _NUMBER.finditer(text)]


def first_number(text: str) -> float | None:
    """The first number written in ``text``, or ``None``."""
    found = numbers(text)
    return found[0] if found else None


ANSWER_PICKS = ("last", "first")


class ArithmeticReward:
    """Reward = 1.0 when the completion's answer equals the expected one, else 0.0.

    The completion's answer is its last number by default (``pick="last"``): small models restate
    the question before answering (``"2 * 6 = 12"``), so the first number would mark a right
    answer wrong; ``pick="first"`` reads the first number instead. The expected answer is the
    prompt records' ``answer`` field (a number or a numeric string), e.g. ``{"prompt": "What is
    17 + 25?", "answer": 42}``. Numbers compare within ``tolerance`` (absolute), so ``"42.0"``
    matches 42.
    """

    name = "arithmetic"

    def __init__(self, tolerance: float = 1e-6, pick: str = "last") -> None:
        self.tolerance = finite_number("tolerance", tolerance, minimum=0)
        if pick not in ANSWER_PICKS:
            raise ValueError(f"pick={pick!r}; accepted: {ANSWER_PICKS}")
        self.pick = pick

    def _expected(self, value: Any, i: int, completions: Sequence[str]) -> float:
        if isinstance(value, bool):
            raise sample_error(self.name, i, completions, f"answer {value!r} is not a number")
        if isinstance(value, str):
            parsed = first_number(value)
            if parsed is None:
                raise sample_error(self.name, i, completions, f"answer {value!r} is not a number")
            return parsed
        if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value):
            return float(value)
        raise sample_error(
            self.name,
            i,
            completions,
            f"answer {value!r} is missing or not a number; give each prompt record an 'answer'",
        )

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        answer: Sequence[Any] | None = None,
    ) -> np.ndarray:
        answers = per_sample(answer, len(completions), "answer", self.name, completions)
        if answers is None:
            raise RewardModelError(
                f"reward model {self.name!r} needs the expected answer: give each prompt record an "
                "'answer' field, e.g. {'prompt': 'What is 2 + 3?', 'answer': 5}",
                model_name=self.name,
                index=None,
                excerpt="",
            )
        out = np.zeros(len(completions), dtype=np.float32)
        for i, text in enumerate(completions):
            expected = self._expected(answers[i], i, completions)
            found = numbers(text)
            got = (found[-1] if self.pick == "last" else found[0]) if found else None
            out[i] = float(got is not None and abs(got - expected) <= self.tolerance)
        return out
