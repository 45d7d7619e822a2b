"""``tokengym train --resume DIR`` with new flags, old (0.1.0) run directories, renamed settings.

The documented semantics (``tokengym/train.py``): flags given with ``--resume`` apply from the
restored iteration on, written into the restored optimizer and KL controller, with a log line;
what fixes the run's identity is refused with an error naming it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from tokengym.agents.agent_config import TokengymDeprecationWarning
from tokengym.agents.logging import read_metrics
from tokengym.agents.ppo_config import PPOConfig
from tokengym.cli import main
from tokengym.train import add_arguments, resolve_settings

ENV_ARGS = ["--env", "tokengym/Sentiment-v0", "--model", "tiny-llama",
            "--env-kwarg", "max_new_tokens=4", "--env-kwarg", "max_prompt_tokens=16"]
# No warm-up: the optimizer's learning rate is then the configured one from the first iteration.
SMALL = ["--num-envs", "2", "--num-minibatches", "1", "--epochs", "1", "--num-samples", "0",
         "--no-tensorboard", "--warmup-iterations", "0"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(out: Path) -> dict:
    return json.loads((out / "checkpoints" / (out / "checkpoints" / "LATEST").read_text()
                       / "state.json").read_text())


def _optimizer_lr(out: Path) -> float:
    ckpt = out / "checkpoints" / (out / "checkpoints" / "LATEST").read_text()
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    return state["param_groups"][0]["lr"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PPO iteration with beta 0.3, lr 1e-4 (copied by each test that resumes it)."""
    out = tmp_path_factory.mktemp("resume") / "run"
    code = main(["train", *ENV_ARGS, *SMALL, "--iterations", "1", "--beta", "0.3", "--lr", "1e-4",
                 "--adaptive-kl", "--adaptive-kl-horizon", "50", "--out", str(out)])
    assert code == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def test_resume_applies_new_beta_and_lr_and_says_so(first_run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = _copy(first_run, tmp_path)
    assert _state(out)["agent"]["kl_controller"]["beta"] != 0.5
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--iterations", "2", "--beta", "0.5",
                 "--lr", "2e-5", "--no-tensorboard"]) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "beta: 0.3 -> 0.5" in text and "lr: 0.0001 -> 2e-05" in text
    records = read_metrics(out / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2]
    assert records[1]["beta"] == 0.5  # iteration 2 was shaped with the new beta
    assert _optimizer_lr(out) == 2e-5  # ... and stepped with the new learning rate
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["beta"] == 0.5 and saved["config"]["lr"] == 2e-5
    assert _state(out)["config"]["lr"] == 2e-5
    # The adaptive controller kept its settings (only beta was reset to the flag's value).
    assert _state(out)["agent"]["kl_controller"]["horizon"] == 50


def test_resume_without_flags_keeps_the_checkpoint_settings(first_run: Path,
                                                            tmp_path: Path) -> None:
    out = _copy(first_run, tmp_path)
    beta = _state(out)["agent"]["kl_controller"]["beta"]  # moved by the adaptive controller
    assert main(["train", "--resume", str(out), "--iterations", "2", "--no-tensorboard"]) == 0
    assert read_metrics(out / "metrics.jsonl")[1]["beta"] == pytest.approx(beta)
    assert _optimizer_lr(out) == 1e-4


@pytest.mark.parametrize("flags, named", [
    (["--seed", "3"], "--seed"),
    (["--num-envs", "4"], "--num-envs"),
    (["--lora"], "--lora"),
    (["--value-model", "shared"], "--value-model"),
    (["--env", "tokengym/Length-v0"], "--env"),
    (["--env-kwarg", "max_new_tokens=9"], "--env-kwarg"),
    (["--model", "smollm2-135m"], "--model"),
    (["--agent", "a2c"], "--agent"),
])
def test_resume_refuses_what_fixes_the_run(first_run: Path, tmp_path: Path, flags: list[str],
                                           named: str) -> None:
    out = _copy(first_run, tmp_path)
    config_before = (out / "config.json").read_text()
    with pytest.raises(SystemExit, match=re.escape(named)):
        main(["train", "--resume", str(out), "--iterations", "2", *flags])
    assert (out / "config.json").read_text() == config_before  # nothing claims the new value
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1]


def test_a_run_directory_of_tokengym_0_1_resumes(first_run: Path, tmp_path: Path) -> None:
    """0.1.0 wrote old names, the run bookkeeping in the config, `iterations` in the metadata
    and the controller's set point as `target_kl`."""
    out = _copy(first_run, tmp_path)
    ckpt = out / "checkpoints" / (out / "checkpoints" / "LATEST").read_text()
    state = json.loads((ckpt / "state.json").read_text())
    config = state["config"]
    config["whiten_rewards"] = config.pop("scale_scores")
    config["target_kl"] = config.pop("adaptive_kl_target")
    config["horizon"] = config.pop("adaptive_kl_horizon")
    config.update(checkpoint_every=1, keep_checkpoints=2, num_samples=0)
    state["metadata"] = {k: state["metadata"][k] for k in ("env", "model", "agent", "env_kwargs")}
    state["metadata"]["iterations"] = 1
    controller = state["agent"]["kl_controller"]
    controller["target_kl"] = controller.pop("target")
    (ckpt / "state.json").write_text(json.dumps(state))
    with pytest.warns(TokengymDeprecationWarning, match="'target_kl' is deprecated"):
        assert main(["train", "--resume", str(out), "--iterations", "2", "--no-tensorboard"]) == 0
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    new_state = _state(out)
    assert new_state["config"]["adaptive_kl_horizon"] == 50 and "horizon" not in new_state["config"]
    assert new_state["metadata"]["run"]["checkpoint_every"] == 1


def _settings(tmp_path: Path, toml: str, *flags: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser, "train")
    path = tmp_path / "run.toml"
    path.write_text(toml)
    return resolve_settings(parser.parse_args(["--config", str(path), *flags]))


def test_old_names_in_toml_and_flags_still_work_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(TokengymDeprecationWarning) as caught:
        settings = _settings(tmp_path, "whiten_rewards = true\nadaptive_kl = true\n"
                             "target_kl = 3.0\ncheckpoint_every = 5\n", "--horizon", "77")
    assert {str(w.message).split("'")[1] for w in caught} >= {"whiten_rewards", "target_kl",
                                                                "horizon"}
    config = settings.config
    assert config.scale_scores and config.adaptive_kl_target == 3.0
    assert config.adaptive_kl_horizon == 77
    assert settings.run.checkpoint_every == 5  # a run setting, at the TOML's top level
    with pytest.warns(TokengymDeprecationWarning):
        rloo = _settings(tmp_path, 'agent = "rloo"\nnormalize_advantages = true\n').config
    assert rloo.whiten_advantages
    with pytest.warns(TokengymDeprecationWarning):
        grpo = _settings(tmp_path, 'agent = "grpo"\nscale_rewards = false\n').config
    assert not grpo.whiten_advantages


def test_config_dicts_name_what_moved_or_clashes() -> None:
    with pytest.raises(ValueError, match="run settings"):
        PPOConfig.from_dict({"checkpoint_every": 5})
    with pytest.raises(ValueError, match="both 'target_kl'"):
        PPOConfig.from_dict({"target_kl": 1.0, "adaptive_kl_target": 2.0})


def test_token_budget_ends_the_run_at_the_first_iteration_past_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *ENV_ARGS, *SMALL, "--iterations", "50", "--token-budget", "10",
                 "--out", str(out)]) == 0
    totals = [r["tokens_total"] for r in read_metrics(out / "metrics.jsonl")]
    assert totals[-1] >= 10 and all(t < 10 for t in totals[:-1])
    assert json.loads((out / "config.json").read_text())["run"]["token_budget"] == 10
