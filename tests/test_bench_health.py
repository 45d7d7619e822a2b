"""``python -m tokengym.benchmarks.health``: the health figures of a run, from hand-made records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tokengym.benchmarks.health import health, main


def _records() -> list[dict]:
    out = []
    for i in range(1, 9):
        out.append({"iteration": i, "reward_mean": 0.1 * i, "kl_mean": float(i), "tokens": 40,
                    "episode_length_mean": 4.0, "approx_kl": 0.01 * i, "clip_fraction": 0.1,
                    "updates": 3.0, **({"explained_variance": 0.1 * i} if i != 6 else {})})
    return out


def test_health_figures_by_hand() -> None:
    h = health(_records())
    assert h["iterations"] == 8 and h["episodes"] == 80
    assert h["approx_kl_median"] == pytest.approx(0.045)
    assert h["explained_variance_median_2nd_half"] == pytest.approx(0.7)  # 0.5, 0.7, 0.8
    assert h["reward_first5"] == pytest.approx(0.3) and h["reward_last5"] == pytest.approx(0.6)
    assert h["kl_last5"] == pytest.approx(6.0) and h["non_finite"] == 0.0


def test_nan_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = _records()
    records[3]["value_loss"] = math.nan
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main([str(tmp_path)]) == 0
    assert "NaN/inf: yes" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        main([str(tmp_path / "nowhere")])


def test_figures_an_agent_does_not_log_are_left_out(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # REINFORCE logs no approx_kl, clip_fraction or explained_variance: no "nan" for them
    keep = ("iteration", "reward_mean", "kl_mean", "tokens", "episode_length_mean", "updates")
    records = [{k: v for k, v in r.items() if k in keep} for r in _records()]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "approx_kl" not in out and "reward +0.300 -> +0.600" in out


def test_heldout_compares_a_finished_run_with_its_untrained_policy(tmp_path: Path, capsys) -> None:
    from tokengym.benchmarks.heldout import heldout
    from tokengym.benchmarks.heldout import main as heldout_main
    from tokengym.cli import main as cli

    out = tmp_path / "run"
    assert cli(["train", "--agent", "ppo", "--model", "tiny-llama", "--env",
                "tokengym/Length-v0", "--env-kwarg", "max_new_tokens=4", "--num-envs", "4",
                "--iterations", "1", "--lr", "1e-3", "--num-samples", "0", "--no-tensorboard",
                "--out", str(out)]) == 0
    result = heldout(out, episodes=4, seed=3)
    before, after = result["untrained"], result["trained"]
    assert before["kl_mean"] == pytest.approx(0.0, abs=1e-5)  # the untrained policy is the ref
    assert after["kl_mean"] > 0.0 and before["episodes"] == after["episodes"] == 4
    assert after["ref_perplexity_ratio"] == pytest.approx(
        after["ref_perplexity"] / before["ref_perplexity"])
    assert heldout(out, episodes=4, seed=3) == result  # the same prompts and samples
    assert heldout_main([str(out), "--episodes", "4", "--seed", "3"]) == 0
    assert "exact KL" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no config.json"):
        heldout_main([str(tmp_path)])
    # the linear-probe bound on a value head reads the same run
    from tokengym.benchmarks.value_probe import main as probe_main
    assert probe_main([str(out), "--batches", "3", "--episodes", "4", "--layer", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("48 tokens, 16 held out") and len(lines) == 5
    assert all("held out" in line for line in lines[1:])
    # ... or a model on an env, with a non-linear head next to the linear one
    assert probe_main(["--model", "tiny-llama", "--env", "tokengym/Sentiment-v0", "--env-kwarg",
                       "max_new_tokens=4", "--batches", "2", "--episodes", "4",
                       "--head", "linear", "mlp"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("32 tokens, 16 held out")
    assert [line.split(":")[0] for line in lines[1:]] == [
        "ridge 1", "ridge 10", "ridge 100", "ridge 1000", "mlp 50 epochs", "mlp 100 epochs",
        "mlp 200 epochs", "mlp 400 epochs"]
    with pytest.raises(SystemExit, match="not both"):
        probe_main([str(out), "--model", "tiny-llama", "--env", "tokengym/Sentiment-v0"])
