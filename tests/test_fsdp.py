"""FSDP2 (issue 13: ``fsdp=True`` for models that do not fit): 2 processes on CPU with gloo,
tiny-llama, PPO (sharded trunk plus a whole value head) and GRPO (groups of samples).

Sharding changes where the numbers live, not what they are: a run with ``--fsdp`` must train
like the same run without it, write the same checkpoint files, resume exactly, and hold half
of the training state on each of 2 ranks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import TRAIN, finish, spawn, tokengym_train, untimed

from tokengym.agents.logging import read_metrics
from tokengym.agents.ppo_config import PPOConfig

WORKER = Path(__file__).with_name("fsdp_worker.py")
RUN = [*TRAIN, "--iterations", "2", "--checkpoint-every", "1", "--num-samples", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("fsdp")
    out = {"fsdp": tmp / "fsdp", "plain": tmp / "plain"}
    for name, extra in (("fsdp", ["--fsdp"]), ("plain", [])):
        done = tokengym_train("--nproc", "2", *RUN, *extra, "--out", str(out[name]))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_fsdp_trains_like_the_same_run_without_it(runs: dict[str, Path]) -> None:
    ckpt = "checkpoints/iter_000002"
    w = {k: load_file(runs[k] / ckpt / "weights.safetensors") for k in runs}
    assert max_diff(w["fsdp"], w["plain"]) <= 1e-6  # gradients summed in another order only
    opt = {k: torch.load(runs[k] / ckpt / "optimizer.pt", weights_only=True) for k in runs}
    assert opt["fsdp"]["param_groups"] == opt["plain"]["param_groups"]
    for index, state in opt["plain"]["state"].items():  # whole Adam moments, as without FSDP
        for key in ("exp_avg", "exp_avg_sq"):
            other = opt["fsdp"]["state"][index][key]
            assert type(other) is torch.Tensor and other.shape == state[key].shape
            assert float((other - state[key]).abs().max()) <= 1e-6
    m = {k: read_metrics(runs[k] / "metrics.jsonl") for k in runs}
    assert [r["iteration"] for r in m["fsdp"]] == [1, 2]
    for a, b in zip(m["fsdp"], m["plain"]):
        for key, value in untimed(b).items():
            assert untimed(a)[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_the_saved_policy_is_whole_and_loads_with_transformers(runs: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM
    models = {k: AutoModelForCausalLM.from_pretrained(runs[k] / "model") for k in runs}
    a, b = (dict(models[k].named_parameters()) for k in ("fsdp", "plain"))
    assert max(float((a[k] - b[k]).detach().abs().max()) for k in b) <= 1e-6
    saved = load_file(runs["fsdp"] / "model" / "model.safetensors")
    assert set(saved) == set(load_file(runs["plain"] / "model" / "model.safetensors"))
    assert (runs["fsdp"] / "samples.md").exists()  # rank 0 sampled alone inside gathered()


def test_resume_under_fsdp_equals_the_uninterrupted_run(runs: dict[str, Path],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(runs["fsdp"], out, ignore=shutil.ignore_patterns(".lock"))
    shutil.rmtree(out / "checkpoints" / "iter_000002")
    (out / "checkpoints" / "LATEST").write_text("iter_000001")
    done = tokengym_train("--nproc", "2", "--resume", str(out), "--iterations", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ckpt = "checkpoints/iter_000002"
    wa = load_file(runs["fsdp"] / ckpt / "weights.safetensors")
    wb = load_file(out / ckpt / "weights.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    oa = torch.load(runs["fsdp"] / ckpt / "optimizer.pt", weights_only=True)["state"]
    ob = torch.load(out / ckpt / "optimizer.pt", weights_only=True)["state"]
    assert all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)


def test_an_fsdp_checkpoint_resumes_in_one_process_without_it(runs: dict[str, Path],
                                                              tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(runs["fsdp"], out, ignore=shutil.ignore_patterns(".lock"))
    done = tokengym_train("--resume", str(out), "--iterations", "3", "--no-fsdp",
                          "--num-samples", "0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]


def test_each_rank_holds_half_the_training_state(tmp_path: Path) -> None:
    procs = spawn([str(WORKER), str(tmp_path / "out.json")], tmp_path)
    assert finish(procs, 300) == [0, 0], (tmp_path / "rank0.log").read_text()[-3000:]
    for per_rank in json.loads((tmp_path / "out.json").read_text()):
        for agent, r in per_rank.items():  # PPO (a value head) and GRPO (groups, no critic)
            assert r["moved"] and r["finite"] and r["loss_finite"], (agent, r)
            assert r["sharded_params"] > 0
            assert r["whole_params"] == (2 if agent == "ppo" else 0)  # the value head's 2
            for what in ("params", "moments", "reference"):
                assert r[f"{what}_local"] <= 0.51 * r[f"{what}_full"], (agent, what, r)


def test_fsdp_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    one = tokengym_train(*RUN, "--fsdp", "--out", str(tmp_path / "one"))
    assert one.returncode != 0 and "start several with" in one.stderr
    with pytest.raises(ValueError, match="fsdp=True with lora=True"):
        PPOConfig(fsdp=True, lora=True).validate()
    with pytest.raises(ValueError, match="decodes eagerly"):
        PPOConfig(fsdp=True, compile=True).validate()
