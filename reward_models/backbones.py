"""A transformers backbone (encoder or causal LM) that turns texts into one vector each.

Used by ``embedding-similarity`` (sentence embeddings) and the learned preference reward model
(features for its scalar head). Encoders are mean-pooled over real tokens, as sentence-transformers
does for all-MiniLM-L6-v2; causal LMs are pooled at their last real token, the only position that
has seen the whole text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tokengym.checks import positive_int
from tokengym.models import (
    BUILTIN_MODELS,
    load_causal_lm,
    load_tokenizer,
    minilm_path,
    resolve_device,
    resolve_dtype,
)
from tokengym.reward_models.batching import length_sorted_chunks

POOLINGS = ("mean", "last")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``(n, T, H)`` over positions where ``mask`` ``(n, T)`` is 1.

    Returns ``(n, H)``.
    """
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def last_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``hidden`` ``(n, T, H)`` at each row's last real token (right padding) -> ``(n, H)``."""
    last = (mask.sum(1) - 1).clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@dataclass
class Backbone:
    """A base model (no head) plus its tokenizer; ``features`` maps texts to ``(n, H)`` vectors.

    Attributes:
        model: a transformers base model whose output has ``last_hidden_state``.
        tokenizer: its tokenizer, right-padding.
        pooling: ``"mean"`` or ``"last"``.
        source: the name or path it was loaded from (what a saved reward model refers to).
        max_length: token budget per text (prompt + completion); longer inputs are truncated.
    """

    model: torch.nn.Module
    tokenizer: Any
    pooling: str
    source: str
    max_length: int

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def features(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> torch.Tensor:
        """Pooled last hidden states of one chunk, ``(n, H)`` in the model's dtype (grads kept).

        ``pairs``, when given, is encoded as each text's second segment (prompt, completion).
        """
        enc = self.tokenizer(
            list(texts),
            list(pairs) if pairs is not None else None,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        hidden = self.model(**enc).last_hidden_state
        pool = mean_pool if self.pooling == "mean" else last_pool
        return pool(hidden, enc["attention_mask"])

    @torch.no_grad()
    def embed(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, batch_size: int = 64
    ) -> torch.Tensor:
        """``features`` for any number of texts, chunked, without grads: ``(n, H)`` float32."""
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"got {len(pairs)} second segments for {len(texts)} texts")
        out = torch.empty(len(texts), self.hidden_size, dtype=torch.float32, device=self.device)
        keys = [t + (pairs[i] if pairs is not None else "") for i, t in enumerate(texts)]
        for chunk in length_sorted_chunks(keys, batch_size):
            out[chunk] = self.features(
                [texts[i] for i in chunk], [pairs[i] for i in chunk] if pairs is not None else None
            ).float()
        return out


def _is_causal(name: str, trust_remote_code: bool) -> bool:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    return any(a.endswith("ForCausalLM") for a in (config.architectures or [])) or bool(
        getattr(config, "is_decoder", False)
    )


def load_backbone(
    name: str | os.PathLike[str] | None = None,
    *,
    pooling: str = "auto",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    max_length: int = 256,
    trust_remote_code: bool = False,
) -> Backbone:
    """Load a backbone by tokengym name, hub id or local directory.

    Args:
        name: ``None`` for all-MiniLM-L6-v2 (``tokengym.models.minilm_path()``), a tokengym
            causal-LM name (``"smollm2-135m"``, ``"tiny-llama"``), a hub id or a local directory
            of an encoder or a causal LM.
        pooling: ``"mean"``, ``"last"``, or ``"auto"`` (last for causal LMs, else mean).
        device: CUDA when available when ``None``.
        dtype: parameter dtype, float32 when ``None``.
        max_length: tokens kept per text (capped by the tokenizer's own limit).
        trust_remote_code: forwarded to transformers; off unless you ask.
    """
    from transformers import AutoModel

    if pooling not in (*POOLINGS, "auto"):
        raise ValueError(f"pooling must be 'mean', 'last' or 'auto', got {pooling!r}")
    positive_int("max_length", max_length)
    source = os.fspath(name) if name is not None else str(minilm_path())
    if source in BUILTIN_MODELS:
        lm = load_causal_lm(source, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        model, causal = lm.base_model, True
    else:
        if not Path(source).exists() and "/" not in source:
            raise ValueError(
                f"backbone {source!r} is neither a local directory, a hub id (owner/name) nor one "
                f"of {BUILTIN_MODELS}"
            )
        causal = _is_causal(source, trust_remote_code)
        model = AutoModel.from_pretrained(
            source, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code
        ).to(resolve_device(device))
    tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "right"  # last_pool and mean_pool assume real tokens come first
    limit = getattr(tokenizer, "model_max_length", None) or max_length
    resolved = pooling if pooling != "auto" else ("last" if causal else "mean")
    return Backbone(
        model=model.eval(),
        tokenizer=tokenizer,
        pooling=resolved,
        source=source,
        max_length=min(max_length, int(limit)),
    )
