"""Finite or refused: NaN/inf settings are refused when loaded; a NaN or inf reward, gradient or
weight stops training before anything is saved, so the last checkpoint stays good."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tokengym.agents.agent_config import PGConfig
from tokengym.agents.loop import RunConfig
from tokengym.agents.ppo_config import PPOConfig
from tokengym.checks import NonFiniteError
from tokengym.cli import main

ENV_ARGS = ["--env", "tokengym/Sentiment-v0", "--model", "tiny-llama",
            "--env-kwarg", "max_new_tokens=4", "--env-kwarg", "max_prompt_tokens=16"]
SMALL = ["--num-envs", "2", "--num-minibatches", "1", "--epochs", "1", "--num-samples", "0",
         "--no-tensorboard"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("field, value, error", [
    ("beta", math.nan, ValueError), ("lr", math.inf, ValueError), ("lr", 1e6, ValueError),
    ("temperature", 1e-45, ValueError), ("beta", True, TypeError), ("lr", "1e-5", TypeError),
    ("num_envs", 2.0, TypeError), ("value_lr", math.nan, ValueError),
    ("max_approx_kl", -math.inf, ValueError), ("lora", 1, TypeError),
])
def test_bad_settings_are_refused_naming_the_field(field: str, value: object,
                                                   error: type) -> None:
    with pytest.raises(error, match=field):
        PPOConfig.from_dict({field: value}).validate()


@pytest.mark.parametrize("field, value", [("iterations", "ten"), ("token_budget", -1),
                                          ("tensorboard", "yes"), ("checkpoint_every", 1.5)])
def test_bad_run_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises((TypeError, ValueError), match=field):
        RunConfig.from_dict({field: value}).validate()


@pytest.mark.parametrize("flags", [["--beta", "nan"], ["--lr", "inf"], ["--lr", "1e6"],
                                   ["--temperature", "1e-45"]])
def test_cli_refuses_non_finite_flags(tmp_path: Path, flags: list[str]) -> None:
    with pytest.raises(SystemExit, match=flags[0].lstrip("-")):
        main(["train", *ENV_ARGS, *SMALL, *flags, "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_an_inf_reward_stops_before_any_checkpoint_rotation(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", *ENV_ARGS, *SMALL, "--iterations", "1", "--out", str(out)]) == 0
    good = (out / "checkpoints" / "LATEST").read_text()
    # The same run, resumed with a reward model that overflows float32 from iteration 2 on.
    import tokengym.envs.episodes as episodes

    original = episodes.score
    # 1e39: finite in float64, inf once cast to float32.
    monkeypatch.setattr(episodes, "score", lambda rm, p, c, *args, **kw: (
        np.full(len(c), 1e39), *original(rm, p, c, *args, **kw)[1:]))
    assert main(["train", "--resume", str(out), "--iterations", "3", "--no-tensorboard"]) == 1
    assert "is not a finite float32" in capsys.readouterr().err
    assert (out / "checkpoints" / "LATEST").read_text() == good
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1]


def test_a_nan_gradient_stops_without_a_step(tokenizer) -> None:
    from tokengym.agents.ppo import PPOAgent
    from tokengym.agents.toy_task import make_toy_envs
    from tokengym.models import load_causal_lm

    model = load_causal_lm("tiny-llama", device="cpu")
    config = PPOConfig(num_envs=4, num_minibatches=1, epochs=1, temperature=0.5)
    agent = PPOAgent(make_toy_envs(tokenizer, model, 4, max_new_tokens=4), model, config)
    before = {k: v.clone() for k, v in agent.policy.trainable_state_dict().items()}
    original = agent.policy_forward

    def poisoned(b, idx):  # a NaN enters the loss
        logprobs, logp, values = original(b, idx)
        return logprobs * torch.nan, logp, values

    agent.policy_forward = poisoned
    with pytest.raises(NonFiniteError, match="gradient norm"):
        agent.train_iteration()
    after = agent.policy.trainable_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert agent.iteration == 0


def test_pg_config_is_checked_like_ppo() -> None:
    with pytest.raises(ValueError, match="beta"):
        PGConfig(beta=math.nan).validate()


@pytest.mark.parametrize("toml, named", [
    ('iterations = "ten"\n', "iterations"), ("env_kwargs = 5\n", "env_kwargs"),
    ("beta = true\n", "beta"), ("beta = nan\n", "beta"), ("lr = inf\n", "lr"),
    ("agent = 3\n", "agent"),
])
def test_bad_toml_values_are_refused_naming_the_key(tmp_path: Path, toml: str, named: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(toml)
    with pytest.raises(SystemExit, match=named):
        main(["train", *ENV_ARGS, "--config", str(path), "--out", str(tmp_path / "run")])
