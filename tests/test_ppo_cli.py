"""``tokengym train`` end to end on tiny-llama: logs, plots, checkpoint, loadable model, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from tokengym.agents.logging import read_metrics
from tokengym.cli import main

ENV_ARGS = [
    "--env", "tokengym/Sentiment-v0", "--model", "tiny-llama",
    "--env-kwarg", "max_new_tokens=6", "--env-kwarg", "max_prompt_tokens=16",
]


# Tiny-model ops are too small to gain from threads; one thread avoids contention stalls.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_writes_logs_plots_checkpoint_and_model(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('num_envs = 4\nnum_minibatches = 2\nepochs = 1\nlr = 1e-4\nbeta = 0.3\n'
                      'num_samples = 2\n[env_kwargs]\nsplit = "eval"\n')
    out = tmp_path / "run"
    code = main(["train", *ENV_ARGS, "--iterations", "2", "--out", str(out), "--config",
                 str(config), "--beta", "0.2", "--lora", "--lora-r", "4"])
    assert code == 0
    records = read_metrics(out / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2]
    for key in ("reward_mean", "kl_mean", "beta", "entropy", "value_loss"):
        assert key in records[0]
        assert (out / "plots" / f"{key}.png").stat().st_size > 0
    assert records[0]["beta"] == 0.2  # the flag wins over the TOML file
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["num_envs"] == 4 and saved["env_kwargs"]["split"] == "eval"
    assert (out / "plots" / "training_curves.png").is_file()
    assert (out / "checkpoints" / "LATEST").read_text() == "iter_000002"
    assert any((out / "tensorboard").iterdir())
    assert "| prompt | before |" in (out / "samples.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.vocab_size == 49152
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_resume_from_cli_continues_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = ["--num-envs", "2", "--num-minibatches", "1", "--epochs", "1", "--num-samples", "0",
             "--no-tensorboard"]
    assert main(["train", *ENV_ARGS, *flags, "--iterations", "1", "--out", str(out)]) == 0
    assert main(["train", "--resume", str(out), "--iterations", "2", "--no-tensorboard"]) == 0
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    assert (out / "checkpoints" / "LATEST").read_text() == "iter_000002"


def test_bad_config_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="num_minibatches"):
        main(["train", *ENV_ARGS, "--num-envs", "3", "--num-minibatches", "2",
              "--out", str(tmp_path)])


def test_ctrl_c_checkpoints_after_the_current_iteration(tmp_path: Path, monkeypatch) -> None:
    import signal

    from tokengym.agents.ppo import PPOAgent

    original = PPOAgent.train_iteration

    def interrupted(self: PPOAgent) -> dict:
        record = original(self)
        if self.iteration == 1:
            signal.raise_signal(signal.SIGINT)  # as if Ctrl-C was pressed during iteration 1
        return record

    monkeypatch.setattr(PPOAgent, "train_iteration", interrupted)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    out = tmp_path / "run"
    flags = ["--num-envs", "2", "--num-minibatches", "1", "--epochs", "1", "--num-samples", "0",
             "--no-tensorboard", "--checkpoint-every", "10"]
    assert main(["train", *ENV_ARGS, *flags, "--iterations", "5", "--out", str(out)]) == 130
    assert (out / "checkpoints" / "LATEST").read_text() == "iter_000001"
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1]
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is restored
