"""Shared fixtures. Tests run offline: nothing may reach the Hugging Face hub."""

from __future__ import annotations

import os
from collections.abc import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import tokengym  # noqa: E402,F401  (registers the env ids)
from tokengym.models import load_tokenizer  # noqa: E402

PROMPTS = [
    "The movie opens with a long shot of",
    "I went into this film expecting",
    "The second act of the story follows",
    "Halfway through the screening, the audience",
    "The soundtrack of this documentary",
]


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer("tiny-llama")


@pytest.fixture
def prompts() -> list[str]:
    return list(PROMPTS)


def length_reward(prompts: list[str], completions: list[str]) -> np.ndarray:
    """A deterministic reward that depends on the completion: its length in characters."""
    return np.array([len(c) for c in completions], dtype=np.float32)


def random_actions(rng: np.random.Generator, n: int, eos: int, p_eos: float = 0.15) -> np.ndarray:
    """Token ids that end episodes at varied times (EOS with probability p_eos)."""
    tokens = rng.integers(300, 5000, size=n)
    return np.where(rng.random(n) < p_eos, eos, tokens).astype(np.int64)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test with one torch thread (modules opt in with ``pytest.mark.usefixtures``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
