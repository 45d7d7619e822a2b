"""Training the preference reward model with the Bradley–Terry objective.

For each pair, loss = ``-log sigmoid(r(prompt, chosen) - r(prompt, rejected))``. By default the
backbone is frozen and only the scalar head trains; every distinct (prompt, completion) is then
embedded once up front and training runs on the cached features (seconds, even on a CPU). With
``finetune_backbone=True`` the backbone trains too, one forward per minibatch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tokengym.checks import positive_int
from tokengym.reward_models.backbones import load_backbone
from tokengym.reward_models.preference import PreferenceRewardModel

PAIR_KEYS = ("prompt", "chosen", "rejected")


@dataclass
class TrainReport:
    """What :func:`train_preference_model` did.

    Attributes:
        out_dir: where the model was saved.
        history: one dict per epoch: ``epoch``, ``loss`` (mean train BT loss), ``train_accuracy``
            and ``val_accuracy`` (pairwise accuracy on the held-out split, ``None`` without one).
        num_train / num_val: pairs in each split.
    """

    out_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    num_train: int = 0
    num_val: int = 0

    @property
    def val_accuracy(self) -> float | None:
        return self.history[-1]["val_accuracy"] if self.history else None


def read_pairs(pairs: Sequence[Mapping[str, Any]] | str | os.PathLike[str]) -> list[dict[str, str]]:
    """Validated ``{"prompt", "chosen", "rejected"}`` records from a list or a JSONL file."""
    where = "pairs"
    if isinstance(pairs, (str, os.PathLike)):
        path = Path(pairs)
        where = str(path)
        if not path.is_file():
            raise ValueError(f"pairs file {path} does not exist")
        records = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        pairs = records
    out = []
    for i, rec in enumerate(pairs):
        if not isinstance(rec, Mapping) or not all(isinstance(rec.get(k), str) for k in PAIR_KEYS):
            raise ValueError(
                f"{where}[{i}]: each pair needs string keys {PAIR_KEYS}, got {rec!r:.200}"
            )
        out.append({k: rec[k] for k in PAIR_KEYS})
    if len(out) < 2:
        raise ValueError(f"{where}: need at least 2 preference pairs, got {len(out)}")
    return out


def split_pairs(
    n_pairs: int, prompts: Sequence[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train / held-out pair indices. With 10+ distinct prompts the split is by prompt, so no
    held-out prompt was seen in training; otherwise by pair."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    if val_fraction == 0.0:
        return rng.permutation(n_pairs), np.zeros(0, dtype=np.int64)
    distinct = sorted(set(prompts))
    if len(distinct) >= 10:
        order = rng.permutation(len(distinct))
        n_val_prompts = max(1, round(val_fraction * len(distinct)))
        held = {distinct[k] for k in order[:n_val_prompts]}
        is_val = np.array([p in held for p in prompts])
    else:
        is_val = np.zeros(n_pairs, dtype=bool)
        is_val[rng.permutation(n_pairs)[: max(1, round(val_fraction * n_pairs))]] = True
    return rng.permutation(np.flatnonzero(~is_val)), np.flatnonzero(is_val)


def pairwise_accuracy(margins: torch.Tensor) -> float:
    """Fraction of pairs with r_chosen > r_rejected (ties count half)."""
    return (
        float(((margins > 0).float() + 0.5 * (margins == 0).float()).mean())
        if len(margins)
        else 0.0
    )


def train_preference_model(
    pairs: Sequence[Mapping[str, Any]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    backbone: str | os.PathLike[str] | None = None,
    finetune_backbone: bool = False,
    epochs: int = 10,
    lr: float = 1e-3,
    backbone_lr: float = 2e-5,
    batch_size: int = 32,
    val_fraction: float = 0.1,
    seed: int = 0,
    max_length: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
    trust_remote_code: bool = False,
) -> TrainReport:
    """Train a Bradley–Terry reward model on preference pairs and save it to ``out_dir``.

    Args:
        pairs: ``{"prompt", "chosen", "rejected"}`` records, or a JSONL file of them.
        out_dir: destination directory (written atomically); ``make(out_dir)`` loads it.
        backbone: ``None`` (all-MiniLM-L6-v2), a tokengym causal-LM name, hub id or directory.
        finetune_backbone: train the backbone too (else frozen; only the head trains).
        epochs: passes over the training pairs.
        lr / backbone_lr: AdamW learning rates of the head and of the backbone.
        batch_size: pairs per optimiser step.
        val_fraction: share held out for the per-epoch pairwise accuracy (0 for none).
        seed: fixes the split, the shuffling and dropout.
        max_length: tokens kept per (prompt, completion).
        device: CUDA when available when ``None``.
        progress: show a tqdm progress bar and one line per epoch.

    Returns:
        A :class:`TrainReport` (per-epoch loss and accuracies); the same report is saved in the
        model's config under ``"training"``.
    """
    records = read_pairs(pairs)
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    for name, value in (("lr", lr), ("backbone_lr", backbone_lr)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    train_idx, val_idx = split_pairs(
        len(records), [r["prompt"] for r in records], val_fraction, seed
    )
    # A private RNG stream: the seed fixes dropout without touching the caller's global RNG.
    with torch.random.fork_rng(devices=_cuda_devices()):
        torch.manual_seed(seed)
        bb = load_backbone(
            backbone, device=device, max_length=max_length, trust_remote_code=trust_remote_code
        )
        rm = PreferenceRewardModel(bb, batch_size=batch_size)

        # Every distinct (prompt, completion) gets an id; pairs become (chosen id, rejected id).
        ids: dict[tuple[str, str], int] = {}
        for r in records:
            for key in ("chosen", "rejected"):
                ids.setdefault((r["prompt"], r[key]), len(ids))
        texts = list(ids)
        pair_ids = torch.tensor(
            [[ids[(r["prompt"], r["chosen"])], ids[(r["prompt"], r["rejected"])]] for r in records]
        )

        def margins_of(idx: np.ndarray, cache: torch.Tensor | None) -> torch.Tensor:
            """r(chosen) - r(rejected) for the pairs ``idx``, from cached features or a forward."""
            used = pair_ids[idx]
            flat = used.reshape(-1)
            if cache is not None:
                r = rm.rewards_from_features(cache[flat])
            else:
                r = rm.rewards(
                    [texts[k][0] for k in flat.tolist()], [texts[k][1] for k in flat.tolist()]
                )
            r = r.view(-1, 2)
            return r[:, 0] - r[:, 1]

        params = [{"params": rm.head.parameters(), "lr": lr}]
        cache = None
        if finetune_backbone:
            params.append({"params": bb.model.parameters(), "lr": backbone_lr})
        else:
            bb.model.requires_grad_(False)
            cache = bb.embed(
                [t[0] for t in texts], [t[1] for t in texts], batch_size=max(batch_size, 64)
            )
        optimizer = torch.optim.AdamW(params, weight_decay=0.0)
        steps_per_epoch = -(-len(train_idx) // batch_size)
        generator = np.random.default_rng(seed)
        report = TrainReport(Path(out_dir), num_train=len(train_idx), num_val=len(val_idx))
        bar = tqdm(
            total=epochs * steps_per_epoch, desc="train-rm", disable=not progress, unit="step"
        )
        for epoch in range(1, epochs + 1):
            bb.model.train(finetune_backbone)
            order = generator.permutation(train_idx)
            losses, correct = [], []
            for start in range(0, len(order), batch_size):
                margins = margins_of(order[start : start + batch_size], cache)
                loss = -torch.nn.functional.logsigmoid(margins).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                correct.append(margins.detach().cpu())
                bar.update(1)
            bb.model.eval()
            with torch.no_grad():
                val = (
                    pairwise_accuracy(_eval_margins(margins_of, val_idx, batch_size, cache))
                    if len(val_idx)
                    else None
                )
            row = {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "train_accuracy": pairwise_accuracy(torch.cat(correct)),
                "val_accuracy": val,
            }
            report.history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", val_acc="-" if val is None else f"{val:.3f}")
            if progress:
                tqdm.write(
                    f"epoch {epoch}/{epochs}: loss {row['loss']:.4f}  train acc "
                    f"{row['train_accuracy']:.3f}  held-out acc "
                    f"{'-' if val is None else f'{val:.3f}'}"
                )
        bar.close()
        training = {
            "epochs": epochs,
            "lr": lr,
            "backbone_lr": backbone_lr if finetune_backbone else None,
            "batch_size": batch_size,
            "val_fraction": val_fraction,
            "seed": seed,
            "finetune_backbone": bool(finetune_backbone),
            "num_train": len(train_idx),
            "num_val": len(val_idx),
            "history": report.history,
        }
        rm.save(out_dir, save_backbone=finetune_backbone, extra={"training": training})
        return report


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _eval_margins(
    margins_of: Any, idx: np.ndarray, batch_size: int, cache: torch.Tensor | None
) -> torch.Tensor:
    """Held-out margins in chunks (no grads; the caller holds ``torch.no_grad``)."""
    step = len(idx) if cache is not None else batch_size
    return torch.cat([margins_of(idx[k : k + step], cache).cpu() for k in range(0, len(idx), step)])
