"""Splitting a batch of texts into forward-sized chunks, and checking per-sample field lists.

Network reward models score a whole call in as few forwards as possible; only calls larger than
``batch_size`` are split. Chunks group texts of similar length so that little compute is spent on
padding; the grouping depends only on the texts, so the same inputs always give the same chunks
(and therefore the same scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokengym.reward_models.base import RewardModelError, excerpt


def length_sorted_chunks(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Indices of ``texts`` in chunks of at most ``batch_size``, each of similar-length texts.

    Returns:
        A list of index lists; together they cover ``range(len(texts))`` exactly once.
    """
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def per_sample(
    field: Sequence[Any] | None,
    n: int,
    field_name: str,
    model_name: str,
    completions: Sequence[str],
) -> list[Any] | None:
    """Check that a per-prompt field has one entry per completion (``None`` passes through)."""
    if field is None:
        return None
    if isinstance(field, (str, bytes)) or len(field) != n:
        got = "a string" if isinstance(field, (str, bytes)) else f"{len(field)} entries"
        raise RewardModelError(
            f"reward model {model_name!r}: field {field_name!r} must have one entry per "
            f"completion ({n}), got {got}",
            model_name=model_name,
            index=None,
            excerpt=excerpt(completions[0]) if n else "",
        )
    return list(field)


def sample_error(
    model_name: str, index: int, completions: Sequence[str], problem: str
) -> RewardModelError:
    """A :class:`RewardModelError` about sample ``index`` of the batch (for the caller to raise)."""
    text = excerpt(completions[index])
    return RewardModelError(
        f"reward model {model_name!r}: sample {index} of a batch of {len(completions)}: {problem}. "
        f"Completion: {text!r}",
        model_name=model_name,
        index=index,
        excerpt=text,
    )
