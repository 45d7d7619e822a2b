"""Env inputs that used to fail raw or pass silently (issue 15): binary prompt files, reward models
returning strings or objects, and the empty ``/tmp/SB3-*`` folders SB3 runs left behind."""

from __future__ import annotations

import re
import tempfile
from fractions import Fraction
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.envs import PromptSource
from tokengym.reward_models import RewardModelError, score

# ---------------------------------------------------------------------------------------------
# Prompt files must be UTF-8 text.


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
@pytest.mark.parametrize(
    ("data", "offset", "line"),
    [
        (b"Hello there\nThe film \xff was\n", 21, 2),  # one stray byte
        ("Hello there\n".encode("utf-16"), 0, 1),  # UTF-16 with its byte-order mark
        (b"ok\n\xc3(\n", 3, 2),  # a truncated two-byte sequence
        (np.random.default_rng(0).bytes(512), None, None),  # random bytes
    ],
    ids=["stray-byte", "utf16", "truncated", "random"],
)
def test_a_binary_prompt_file_is_a_clear_error(tmp_path: Path, suffix: str, data: bytes,
                                               offset: int | None, line: int | None) -> None:
    path = tmp_path / f"prompts{suffix}"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="prompt files must be UTF-8 text") as info:
        PromptSource(str(path))
    message = str(info.value)
    assert str(path) in message and not isinstance(info.value, UnicodeDecodeError)
    assert re.search(r"(offset \d+)", message)
    if offset is not None:
        assert f"offset {offset} (line {line})" in message


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_a_nul_byte_is_refused_as_binary(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"prompts{suffix}"
    line = b'{"prompt": "a\x00b"}' if suffix == ".jsonl" else b"a\x00b"
    path.write_bytes(b"first\n" + line + b"\n")
    offset = len(b"first\n") + line.index(b"\x00")
    with pytest.raises(ValueError, match=rf"NUL byte at offset {offset} \(line 2\).*UTF-8 text"):
        PromptSource(path)


def test_the_env_reports_a_binary_prompt_file(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b'{"prompt": "Hi"}\n\x89PNG\r\n\x1a\n')
    with pytest.raises(ValueError, match=re.escape(f"prompt file {path}: byte 0x89 at offset 17")):
        gym.make("tokengym/TextGen-v0", prompts=str(path), reward_model="length",
                 tokenizer="tiny-llama", max_new_tokens=4)


def test_utf8_text_still_reads_with_a_bom_and_unicode_line_separators(tmp_path: Path) -> None:
    txt = tmp_path / "p.txt"
    # A UTF-8 byte-order mark (Windows editors) and characters str.splitlines() would split at.
    txt.write_bytes("\ufeffcafé prompt\r\nline\u2028sep \x0c form feed\n\n  \nlast".encode())
    assert [r.text for r in PromptSource(txt).records] == [
        "café prompt", "line\u2028sep \x0c form feed", "last"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_bytes('\ufeff{"prompt": "a\u2028b", "answer": 1}\r\n\n{"prompt": "c"}'.encode())
    records = PromptSource(jsonl).records
    assert [(r.text, dict(r.fields)) for r in records] == [("a\u2028b", {"answer": 1}), ("c", {})]


# ---------------------------------------------------------------------------------------------
# Reward models return numbers: never strings, bytes, None or objects coerced to floats.

PROMPTS = ["p"] * 3
TEXTS = ["first", "second", "third"]


def _returning(value):
    def rm(prompts, completions):
        return value
    return rm


@pytest.mark.parametrize(
    ("value", "index", "shown"),
    [
        (["1.5", "2", "3"], 0, "'1.5' (str)"),
        ([1.0, "1.5", 2.0], 1, "'1.5' (str)"),
        ([1.0, 2.0, b"3"], 2, "b'3' (bytes)"),
        ([1.0, None, 2.0], 1, "None (NoneType)"),
        ([1.0, 2.0, object()], 2, "(object)"),
        ([1.0, 2.0, 3j], 2, "3j (complex)"),
        (np.array(["1", "2", "3"]), 0, "'1' (str)"),
        (np.array([1.0, "x", 2.0], dtype=object), 1, "'x' (str)"),
        ((1.0, {"r": 2}, 3.0), 1, "{'r': 2} (dict)"),
    ],
)
def test_non_numeric_rewards_are_refused_naming_the_sample(value, index: int, shown: str) -> None:
    rm = _returning(value)
    with pytest.raises(RewardModelError) as info:
        score(rm, PROMPTS, TEXTS)
    err = info.value
    message = str(err)
    assert err.index == index and err.excerpt == TEXTS[index] and err.model_name == "rm"
    assert f"{shown} for sample {index} of a batch of 3" in message
    assert "int, float or bool, a numpy number" in message and "torch tensor" in message


@pytest.mark.parametrize("value", ["1.5", b"1.5", None, {"a": 1.0}, {1.0, 2.0, 3.0}])
def test_a_non_array_result_is_refused(value) -> None:
    with pytest.raises(RewardModelError, match="not an array-like of 3 floats") as info:
        score(_returning(value), PROMPTS, TEXTS)
    assert info.value.index is None and "numpy number" in str(info.value)


def test_score_with_components_checks_each_component() -> None:
    class Composite:
        name = "composite"

        def __call__(self, prompts, completions):  # pragma: no cover - score_with_components wins
            raise AssertionError

        def score_with_components(self, prompts, completions):
            return np.ones(len(completions)), {"ok": [1.0] * 3, "bad": [1.0, 2.0, "3"]}

    with pytest.raises(RewardModelError, match=r"'3' \(str\) for sample 2 of a batch of 3 "
                                                r"\(component 'bad'\)"):
        score(Composite(), PROMPTS, TEXTS)


@pytest.mark.parametrize(
    "value",
    [
        [1.0, 2.0, 3.0], [1, 2, 3], (1.0, 2, 3.0), [True, False, True],
        np.array([1.0, 2.0, 3.0]), np.array([1, 2, 3], dtype=np.int8),
        np.array([1.0, 2.0, 3.0], dtype=np.float16), np.array([True, False, True]),
        [np.float32(1.0), np.int64(2), np.bool_(True)], [np.array(1.0)] * 3,
        np.array([1, 2.5, 3], dtype=object), [Fraction(1, 2)] * 3,
        torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16),
        torch.tensor([1, 2, 3]), torch.tensor([1.0, 2.0, 3.0], requires_grad=True),
        [torch.tensor(1.0), torch.tensor(2), torch.tensor(True)],
    ],
)
def test_every_numeric_form_is_accepted(value) -> None:
    rewards, components = score(_returning(value), PROMPTS, TEXTS)
    expected = np.array([float(x) for x in (value.detach() if hasattr(value, "detach") else value)])
    assert rewards.dtype == np.float32 and rewards.shape == (3,)
    np.testing.assert_array_equal(rewards, expected.astype(np.float32))
    assert set(components) == {"rm"}


def test_a_reward_that_overflows_float32_is_refused() -> None:
    with pytest.raises(RewardModelError, match=r"1e\+39 for sample 1 .*overflows float32") as info:
        score(_returning([1.0, 1e39, 2.0]), PROMPTS, TEXTS)
    assert info.value.index == 1


def test_the_env_refuses_string_rewards() -> None:
    env = gym.make("tokengym/TextGen-v0", prompts=["Say something:"],
                   reward_model=lambda p, c: ["1.5"] * len(c), tokenizer="tiny-llama",
                   max_new_tokens=2)
    env.reset(seed=0)
    with pytest.raises(RewardModelError, match=r"'1\.5' \(str\) for sample 0"):
        for _ in range(2):
            env.step(100)


# ---------------------------------------------------------------------------------------------
# SB3 runs leave nothing in the temp folder.


def test_an_sb3_run_leaves_no_sb3_folder_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from tokengym.agents.sb3 import train_sb3

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # gettempdir() caches its first answer
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    before = set(Path(tempfile.gettempdir()).glob("SB3-*"))
    out = tmp_path / "out"
    _, metrics = train_sb3("ppo", "tokengym/TextGen-v0", model="tiny-llama", total_timesteps=8,
                           out_dir=out, verbose=1, n_steps=8, batch_size=8, n_epochs=1,
                           env_kwargs={"prompts": ["Hello there"], "reward_model": "length",
                                       "max_prompt_tokens": 4, "max_new_tokens": 4})
    assert metrics["total_timesteps"] == 8
    assert set(Path(tempfile.gettempdir()).glob("SB3-*")) == before == set()
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "sb3_ppo.zip"]
    assert "total_timesteps" in capsys.readouterr().out  # verbose=1 still prints SB3's table
