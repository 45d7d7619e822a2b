"""The learned preference reward model: a scalar head on a transformers backbone.

Trained with the Bradley–Terry objective by :mod:`.preference_training`; this module scores
with it, saves it and loads it back. A saved model is a directory::

    DIR/tokengym_reward_model.json   config: type, backbone reference, pooling, training report
    DIR/model.safetensors            the head ("head.weight" (1, H), "head.bias" (1,))
    DIR/backbone/                    the fine-tuned backbone + tokenizer (only when fine-tuned)

and ``tokengym.reward_models.make(DIR)`` loads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokengym.checks import positive_int
from tokengym.fileio import atomic_directory
from tokengym.models import ModelNotAvailableError, minilm_path
from tokengym.reward_models.backbones import Backbone, load_backbone

CONFIG_FILE = "tokengym_reward_model.json"
WEIGHTS_FILE = "model.safetensors"
BACKBONE_DIR = "backbone"
FORMAT = "tokengym-reward-model"
FORMAT_VERSION = 1


class PreferenceRewardModel:
    """Reward = ``head(pool(backbone(prompt, completion)))``, an unbounded scalar (a logit of
    preference: ``sigmoid(r_a - r_b)`` is the modelled probability that a is preferred to b).

    The prompt and the completion are encoded as a text pair. Scoring runs in chunks of
    ``batch_size`` under ``torch.no_grad()``.

    Args:
        backbone: a loaded :class:`~tokengym.reward_models.backbones.Backbone`.
        head: a ``Linear(H, 1)``; a zero-initialised one when ``None``.
        batch_size: texts per forward when scoring.
    """

    name = "preference"

    def __init__(
        self, backbone: Backbone, head: torch.nn.Linear | None = None, batch_size: int = 32
    ) -> None:
        self.backbone = backbone
        if head is None:
            # Zero init: every completion starts at reward 0 and no RNG is involved.
            head = torch.nn.Linear(backbone.hidden_size, 1)
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.zeros_(head.bias)
        if head.in_features != backbone.hidden_size or head.out_features != 1:
            raise ValueError(
                f"head maps {head.in_features} -> {head.out_features}; expected "
                f"{backbone.hidden_size} -> 1 for this backbone"
            )
        self.head = head.to(device=backbone.device, dtype=torch.float32)
        self.batch_size = positive_int("batch_size", batch_size)
        self.config: dict[str, Any] = {}

    def rewards(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        """Rewards ``(n,)`` float32 with gradients through head and backbone (one forward)."""
        return self.head(self.backbone.features(prompts, completions).float()).squeeze(-1)

    def rewards_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Rewards ``(n,)`` from pooled features ``(n, H)`` (frozen-backbone training)."""
        return self.head(features).squeeze(-1)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        if len(completions) == 0:
            return np.zeros(0, dtype=np.float32)
        features = self.backbone.embed(list(prompts), list(completions), batch_size=self.batch_size)
        return self.rewards_from_features(features).cpu().numpy().astype(np.float32)

    # -- saving and loading ---------------------------------------------------------------------
    def save(
        self,
        out_dir: str | os.PathLike[str],
        *,
        save_backbone: bool,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the model to ``out_dir`` atomically (a temp dir renamed into place).

        Args:
            out_dir: the destination; replaced if it holds a saved reward model, refused if it
                is a non-empty directory of something else.
            save_backbone: also save the backbone's weights and tokenizer (needed when it was
                fine-tuned); otherwise the config refers to the backbone by its source path/name.
            extra: more config entries (the training report).
        """
        from safetensors.torch import save_file

        out = Path(out_dir)
        if out.exists() and (
            not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG_FILE).is_file())
        ):
            raise ValueError(
                f"{out} exists and is not a saved tokengym reward model; choose another --out"
            )
        # replace=True: saving again over a saved reward model replaces it as a whole.
        with atomic_directory(out, replace=True) as tmp:
            save_file(
                {
                    k: v.detach().cpu().contiguous()
                    for k, v in {
                        "head.weight": self.head.weight,
                        "head.bias": self.head.bias,
                    }.items()
                },
                str(tmp / WEIGHTS_FILE),
            )
            if save_backbone:
                self.backbone.model.save_pretrained(tmp / BACKBONE_DIR, safe_serialization=True)
                self.backbone.tokenizer.save_pretrained(tmp / BACKBONE_DIR)
            config = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "type": "preference",
                "backbone": BACKBONE_DIR if save_backbone else _portable(self.backbone.source),
                "backbone_saved": bool(save_backbone),
                "pooling": self.backbone.pooling,
                "max_length": self.backbone.max_length,
                "hidden_size": self.backbone.hidden_size,
                **dict(extra or {}),
            }
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            self.config = config
        return out

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        trust_remote_code: bool = False,
    ) -> PreferenceRewardModel:
        """Load a model saved by :meth:`save` (or ``tokengym train-rm``)."""
        from safetensors.torch import load_file

        root = Path(path)
        config = read_config(root)
        source = root / BACKBONE_DIR if config.get("backbone_saved") else config.get("backbone")
        backbone = load_backbone(
            source,
            pooling=config["pooling"],
            device=device,
            max_length=int(config["max_length"]),
            trust_remote_code=trust_remote_code,
        )
        weights = load_file(str(root / WEIGHTS_FILE))
        if set(weights) != {"head.weight", "head.bias"}:
            raise ValueError(
                f"{root / WEIGHTS_FILE} holds {sorted(weights)}; expected head.weight, head.bias"
            )
        head = torch.nn.Linear(weights["head.weight"].shape[1], 1)
        head.load_state_dict({"weight": weights["head.weight"], "bias": weights["head.bias"]})
        model = cls(backbone, head, batch_size=batch_size)
        model.config = config
        return model


def _portable(source: str) -> str | None:
    """``None`` for the default MiniLM, whose install path differs between machines."""
    try:
        return None if Path(source).resolve() == minilm_path().resolve() else source
    except ModelNotAvailableError:
        return source


def read_config(path: Path) -> dict[str, Any]:
    """The config of a saved reward model directory, checked."""
    file = path / CONFIG_FILE
    if not file.is_file():
        raise ValueError(
            f"{path} is not a saved tokengym reward model (no {CONFIG_FILE}); train one with "
            "`tokengym train-rm`, or load a Hugging Face classifier with "
            "make('hf-classifier', model=path, label=...)"
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file} is not valid JSON ({exc.msg})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{file} is not a tokengym reward model config (format != {FORMAT!r})")
    if int(config.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{file} has format version {config['version']}; this tokengym reads "
            f"<= {FORMAT_VERSION}; upgrade tokengym"
        )
    return config


def load_saved(path: str | os.PathLike[str], **kwargs: Any) -> PreferenceRewardModel:
    """Load any saved tokengym reward model directory (``make(DIR)`` calls this)."""
    root = Path(path)
    kind = read_config(root).get("type")
    if kind != "preference":
        raise ValueError(f"{root}: unknown saved reward model type {kind!r}; known: 'preference'")
    return PreferenceRewardModel.load(root, **kwargs)
