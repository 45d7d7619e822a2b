"""``hf-classifier``: one label's probability (or logit) under a sequence classifier."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from tokengym.checks import positive_int
from tokengym.models import load_tokenizer, resolve_device, resolve_dtype
from tokengym.reward_models.batching import length_sorted_chunks

OUTPUTS = ("probability", "logit")


class HFClassifierReward:
    """Reward = P(label | completion) under any ``AutoModelForSequenceClassification``.

    This is the reward of RLHF sentiment demos (e.g. an IMDB classifier's ``POSITIVE`` label).

    Args:
        model: a hub id or a local directory saved with ``save_pretrained``.
        label: the rewarded label, by name (``config.id2label``) or index. ``None`` is allowed
            only for one-output models (index 0) and two-label models (index 1, the usual
            "positive" class).
        output: ``"probability"`` (softmax over labels, in [0, 1]; sigmoid for one-output and
            multi-label models) or ``"logit"`` (the raw score, unbounded).
        include_prompt: classify (prompt, completion) as a text pair instead of the completion.
        device: CUDA when available when ``None``.
        dtype: parameter dtype (float32 when ``None``).
        batch_size: texts per forward; larger calls are chunked.
        max_length: tokens kept per text.
        trust_remote_code: forwarded to transformers; off unless you ask.
    """

    name = "hf-classifier"

    def __init__(
        self,
        model: str | os.PathLike[str],
        label: str | int | None = None,
        output: str = "probability",
        include_prompt: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 32,
        max_length: int = 512,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.output = output
        self.include_prompt = bool(include_prompt)
        self.batch_size = positive_int("batch_size", batch_size)
        self.tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "right"
        limit = getattr(self.tokenizer, "model_max_length", None) or max_length
        self.max_length = min(positive_int("max_length", max_length), int(limit))
        self.model = (
            AutoModelForSequenceClassification.from_pretrained(
                os.fspath(model), dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code
            )
            .to(resolve_device(device))
            .eval()
        )
        config = self.model.config
        self.label_index = self._label_index(label, config)
        self.label = config.id2label.get(self.label_index, str(self.label_index))
        self._sigmoid = (
            config.num_labels == 1 or config.problem_type == "multi_label_classification"
        )

    @staticmethod
    def _label_index(label: str | int | None, config: object) -> int:
        num = int(config.num_labels)
        names = {str(v): int(k) for k, v in config.id2label.items()}
        if label is None:
            if num > 2:
                raise ValueError(
                    f"this classifier has {num} labels; choose one with label=: {sorted(names)}"
                )
            return num - 1
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise TypeError(f"label must be a label name or index, got {type(label).__name__}")
        if isinstance(label, int):
            if not 0 <= label < num:
                raise ValueError(f"label index {label} is out of range for {num} labels")
            return label
        lowered = {k.lower(): v for k, v in names.items()}
        if label.lower() not in lowered:
            raise ValueError(
                f"label {label!r} is not one of this classifier's labels {sorted(names)}"
            )
        return lowered[label.lower()]

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        out = np.empty(len(completions), dtype=np.float32)
        device = next(self.model.parameters()).device
        for chunk in length_sorted_chunks(completions, self.batch_size):
            enc = self.tokenizer(
                [prompts[i] for i in chunk]
                if self.include_prompt
                else [completions[i] for i in chunk],
                [completions[i] for i in chunk] if self.include_prompt else None,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            logits = self.model(**enc).logits.float()
            if self.output == "logit":
                scores = logits[:, self.label_index]
            elif self._sigmoid:
                scores = torch.sigmoid(logits[:, self.label_index])
            else:
                scores = torch.softmax(logits, dim=-1)[:, self.label_index]
            out[chunk] = scores.cpu().numpy()
        return out
