"""``benchmarks/value_ceiling``: the best critic's explained variance, from replayed prefixes."""

from __future__ import annotations

import numpy as np
import pytest

from tokengym.benchmarks.value_ceiling import ceiling, main

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["a", "a bb", "a bb ccc", "a bb ccc dddd", "e", "ff gg"]


def prompt_length(prompts: list[str], completions: list[str]) -> np.ndarray:
    """A score the prompt alone decides: a critic that reads the prompt explains all of it."""
    return np.array([float(len(p)) for p in prompts], dtype=np.float32)


def settings(reward_model) -> dict:
    return {"env": "tokengym/TextGen-v0", "model": "tiny-llama", "policy": "tiny-llama",
            "temperature": 1.0,
            "env_kwargs": {"prompts": PROMPTS, "reward_model": reward_model,
                           "max_new_tokens": 4, "max_prompt_tokens": 16}}


def test_a_score_fixed_by_the_prompt_is_fully_explained_at_every_position() -> None:
    result = ceiling(settings(prompt_length), episodes=4, samples=3, every=2)
    assert sorted(result) == [-1, 0, 2]
    assert all(v == pytest.approx(1.0) for v in result.values())


def test_the_command_line(capsys) -> None:
    assert main(["--model", "tiny-llama", "--env", "tokengym/Length-v0", "--env-kwarg",
                 "max_new_tokens=4", "--episodes", "3", "--samples", "2", "--every", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("3 episodes x 2 endings") and out[-1].startswith("pooled")
    with pytest.raises(SystemExit, match="not both"):
        main(["run", "--model", "tiny-llama", "--env", "tokengym/Length-v0"])
    with pytest.raises(SystemExit, match=">= 2"):
        main(["--model", "tiny-llama", "--env", "tokengym/Length-v0", "--samples", "1"])
