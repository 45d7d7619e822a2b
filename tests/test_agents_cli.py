"""``tokengym train --agent NAME`` runs end to end on tiny-llama for every agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokengym.agents.logging import read_metrics
from tokengym.agents.registry import AGENTS
from tokengym.cli import main

ENV_ARGS = [
    "--env", "tokengym/Sentiment-v0", "--model", "tiny-llama",
    "--env-kwarg", "max_new_tokens=4", "--env-kwarg", "max_prompt_tokens=12",
]
SMALL = {
    "reinforce": ["--num-envs", "4"],
    "rloo": ["--num-envs", "4", "--samples-per-prompt", "2"],
    "grpo": ["--num-envs", "4", "--samples-per-prompt", "2", "--epochs", "2",
             "--num-minibatches", "2"],
    "a2c": ["--num-envs", "4"],
    "best-of-n": ["--num-envs", "4", "--samples-per-prompt", "2"],
    "sample": ["--num-envs", "2"],
    "greedy": ["--num-envs", "2"],
    "sb3-ppo": ["--n-steps", "8", "--batch-size", "8", "--epochs", "1"],
    "sb3-a2c": ["--n-steps", "8"],
}


# Tiny-model ops are too small to gain from threads; one thread avoids contention stalls.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["reinforce", "rloo", "grpo", "a2c"])
def test_trainable_agent_trains_and_resumes(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    flags = [*SMALL[name], "--num-samples", "2", "--no-tensorboard"]
    assert main(["train", *ENV_ARGS, "--agent", name, *flags, "--iterations", "1",
                 "--out", str(out)]) == 0
    assert main(["train", "--resume", str(out), "--iterations", "2", "--no-tensorboard"]) == 0
    records = read_metrics(out / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2]
    assert {"reward_mean", "kl_mean", "beta", "tokens"} <= set(records[0])
    assert json.loads((out / "config.json").read_text())["agent"] == name
    assert (out / "checkpoints" / "LATEST").read_text() == "iter_000002"
    assert "| prompt | before |" in (out / "samples.md").read_text()
    assert (out / "model" / "config.json").is_file()


@pytest.mark.parametrize("name", ["best-of-n", "sample", "greedy"])
def test_inference_agent_evaluates(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    assert main(["train", *ENV_ARGS, "--agent", name, *SMALL[name], "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "reward_mean" in metrics and "kl_mean" in metrics
    assert "| prompt | completion | reward |" in (out / "samples.md").read_text()


@pytest.mark.parametrize("name", ["sb3-ppo", "sb3-a2c"])
def test_sb3_agent_trains(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    assert main(["train", *ENV_ARGS, "--agent", name, *SMALL[name], "--iterations", "2",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["total_timesteps"] >= 16 and metrics["algo"] == name.removeprefix("sb3-")
    assert (out / f"sb3_{metrics['algo']}.zip").is_file()


def test_flag_of_another_agent_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="samples-per-prompt"):
        main(["train", *ENV_ARGS, "--agent", "reinforce", "--samples-per-prompt", "4",
              "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="samples_per_prompt"):
        main(["train", *ENV_ARGS, "--agent", "rloo", "--num-envs", "6", "--out", str(tmp_path)])


def test_every_agent_is_a_cli_choice() -> None:
    assert set(SMALL) | {"ppo"} == set(AGENTS)
