"""The 16 ``tokengym train --resume DIR`` flag variants of issue 15, each applied or refused as
documented (``tokengym/train.py``'s docstring, ``docs/ppo.md`` "--resume").

- applied: exit 0; ``config.json`` and the new checkpoint's ``state.json`` (``config`` or
  ``metadata.run``) hold the new value, and the one printed change line names it (deprecated
  flag names are applied under their new name, with a deprecation warning);
- refused: ``SystemExit`` naming the flag; ``config.json``, ``metrics.jsonl`` and the checkpoints
  stay as they were.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tokengym.agents.agent_config import TokengymDeprecationWarning
from tokengym.agents.logging import read_metrics
from tokengym.cli import main

ENV_ARGS = ["--env", "tokengym/Sentiment-v0", "--model", "tiny-llama",
            "--env-kwarg", "max_new_tokens=4", "--env-kwarg", "max_prompt_tokens=16"]
# No warm-up: the optimizer's learning rate is then the configured one from the first iteration.
SMALL = ["--num-envs", "2", "--num-minibatches", "1", "--epochs", "1", "--num-samples", "0",
         "--no-tensorboard", "--warmup-iterations", "0"]
BASE = ["--iterations", "1", "--beta", "0.3", "--lr", "1e-4"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One PPO iteration with the adaptive KL controller on, and one with it off (for
    ``--adaptive-kl``); each case resumes a copy."""
    out = {}
    for name, flags in {"adaptive": ["--adaptive-kl", "--adaptive-kl-horizon", "50"],
                        "fixed": ["--no-adaptive-kl"]}.items():
        out[name] = tmp_path_factory.mktemp("resume-matrix") / name
        assert main(["train", *ENV_ARGS, *SMALL, *BASE, *flags, "--out", str(out[name])]) == 0
    return out


def _latest(out: Path) -> Path:
    return out / "checkpoints" / (out / "checkpoints" / "LATEST").read_text().strip()


def _snapshot(out: Path) -> dict[str, Any]:
    ckpts = out / "checkpoints"
    return {"config.json": (out / "config.json").read_bytes(),
            "metrics.jsonl": (out / "metrics.jsonl").read_bytes(),
            "LATEST": (ckpts / "LATEST").read_bytes(),
            "checkpoints": sorted(p.name for p in ckpts.iterdir()),
            "state.json": (_latest(out) / "state.json").read_bytes()}


APPLIED, REFUSED = "applied", "refused"
# (flags, expected, where the value lands: "config"/"run" and the field, the value, base run)
CASES = [
    (["--beta", "0.5"], APPLIED, ("config", "beta", 0.5)),
    (["--lr", "2e-5"], APPLIED, ("config", "lr", 2e-5)),
    (["--target-kl", "3"], APPLIED, ("config", "adaptive_kl_target", 3.0)),  # deprecated name
    (["--horizon", "100"], APPLIED, ("config", "adaptive_kl_horizon", 100)),  # deprecated name
    (["--env", "tokengym/Length-v0"], REFUSED, "--env"),
    (["--env-kwarg", "max_new_tokens=9"], REFUSED, "--env-kwarg"),
    (["--seed", "3"], REFUSED, "--seed"),
    (["--num-envs", "4"], REFUSED, "--num-envs"),
    (["--temperature", "0.7"], APPLIED, ("config", "temperature", 0.7)),
    (["--no-adaptive-kl"], APPLIED, ("config", "adaptive_kl", False)),
    (["--adaptive-kl"], APPLIED, ("config", "adaptive_kl", True)),  # on the run without it
    (["--lora"], REFUSED, "--lora"),
    (["--value-model", "shared"], REFUSED, "--value-model"),
    (["--model", "does-not-exist"], REFUSED, "--model"),
    (["--iterations", "3"], APPLIED, ("run", "iterations", 3)),
    (["--checkpoint-every", "2"], APPLIED, ("run", "checkpoint_every", 2)),
]
DEPRECATED = {"--target-kl": "target_kl", "--horizon": "horizon"}


@pytest.mark.parametrize(("flags", "expected", "detail"), CASES,
                         ids=[" ".join(c[0]) for c in CASES])
def test_resume_flag_is_applied_or_refused_as_documented(
        runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        flags: list[str], expected: str, detail: Any) -> None:
    base = runs["fixed" if flags == ["--adaptive-kl"] else "adaptive"]
    out = tmp_path / "run"
    shutil.copytree(base, out)
    before = _snapshot(out)
    iterations = ["--iterations", "2"] if "--iterations" not in flags else []
    argv = ["train", "--resume", str(out), *iterations, *flags, "--no-tensorboard"]
    capsys.readouterr()

    if expected == REFUSED:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert re.search(re.escape(detail) + r"(?![\w-])", str(info.value.code)), (
            f"the error does not name {detail}: {info.value.code}")
        assert _snapshot(out) == before  # nothing claims the new value, nothing trained
        return

    section, field, value = detail
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    old = DEPRECATED.get(flags[0])
    if old is not None:  # applied under its new name, with a deprecation warning
        assert any(issubclass(w.category, TokengymDeprecationWarning)
                   and f"'{old}' is deprecated, use '{field}'" in str(w.message) for w in caught)
    printed = capsys.readouterr()
    lines = [ln for ln in (printed.out + printed.err).splitlines()
             if "with changed settings:" in ln]
    assert len(lines) == 1, f"expected one change line, got {lines}"
    assert re.search(rf"\b{field}: [^;]* -> {re.escape(repr(value))}(;|$)", lines[0]), lines[0]

    saved = json.loads((out / "config.json").read_text())
    state = json.loads((_latest(out) / "state.json").read_text())
    state_section = state["config"] if section == "config" else state["metadata"]["run"]
    assert saved[section][field] == value and type(saved[section][field]) is type(value)
    assert state_section[field] == value
    if old is not None:
        assert old not in saved["config"] and old not in state["config"]
    target = value if field == "iterations" else 2
    assert _latest(out).name == f"iter_{target:06d}"
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == list(
        range(1, target + 1))
    if field == "lr":  # written into the restored optimizer
        optimizer = torch.load(_latest(out) / "optimizer.pt", weights_only=True)
        assert optimizer["param_groups"][0]["lr"] == value  # the policy's group (the critic's
        # has its own value_lr)
