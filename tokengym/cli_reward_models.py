"""``tokengym train-rm`` and ``tokengym label-pairs``: the learned preference reward model."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tokengym.envs import sentiment_prompts
from tokengym.labeling import label_pairs
from tokengym.models import DEFAULT_MODEL
from tokengym.reward_models import train_preference_model


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"target\": 20}'")
    return value


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "train-rm":
        parser.add_argument(
            "--pairs", required=True, help='JSONL of {"prompt", "chosen", "rejected"}'
        )
        parser.add_argument("--out", required=True, help="directory to save the reward model in")
        parser.add_argument(
            "--backbone",
            default=None,
            help="encoder or causal LM name/path (default: all-MiniLM-L6-v2)",
        )
        parser.add_argument(
            "--finetune-backbone",
            action="store_true",
            help="train the backbone too (default: frozen, only the head trains)",
        )
        parser.add_argument("--epochs", type=int, default=10)
        parser.add_argument("--lr", type=float, default=1e-3, help="head learning rate")
        parser.add_argument("--backbone-lr", type=float, default=2e-5)
        parser.add_argument("--batch-size", type=int, default=32, help="pairs per step")
        parser.add_argument("--val-fraction", type=float, default=0.1)
        parser.add_argument("--max-length", type=int, default=256, help="tokens per text")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--device", default=None, help="default: cuda when available")
        return
    parser.add_argument(
        "--prompts",
        default="sentiment",
        help="a .txt/.jsonl prompt file, or 'sentiment' for Sentiment-v0's train split",
    )
    parser.add_argument("--out", required=True, help="JSONL file to write the pairs to")
    parser.add_argument(
        "--policy", default=DEFAULT_MODEL, help="the sampling model (default: %(default)s)"
    )
    parser.add_argument(
        "--gold", default="vader", help="gold reward model name, path or import string"
    )
    parser.add_argument(
        "--gold-kwargs",
        type=_json_object,
        default=None,
        help="JSON object of arguments for the gold reward model",
    )
    parser.add_argument("--k", type=int, default=4, help="completions per prompt")
    parser.add_argument(
        "--num-prompts", type=int, default=None, help="use only the first N prompts"
    )
    parser.add_argument("--strategy", choices=["best-worst", "all"], default="best-worst")
    parser.add_argument(
        "--min-margin",
        type=float,
        default=0.0,
        help="keep pairs whose gold scores differ by more than this",
    )
    parser.add_argument("--max-prompt-tokens", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--chat-template", action="store_true")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace, name: str) -> int:
    if name == "train-rm":
        report = train_preference_model(
            args.pairs,
            args.out,
            backbone=args.backbone,
            finetune_backbone=args.finetune_backbone,
            epochs=args.epochs,
            lr=args.lr,
            backbone_lr=args.backbone_lr,
            batch_size=args.batch_size,
            val_fraction=args.val_fraction,
            seed=args.seed,
            max_length=args.max_length,
            device=args.device,
        )
        acc = report.val_accuracy
        print(
            f"saved {report.out_dir} ({report.num_train} train / {report.num_val} held-out pairs"
            + (f", held-out accuracy {acc:.3f})" if acc is not None else ")")
        )
        print(f"use it with: reward_model={str(report.out_dir)!r}")
        return 0
    prompts: Any = args.prompts
    if prompts == "sentiment":
        prompts = sentiment_prompts("train")
    pairs = label_pairs(
        args.policy,
        prompts,
        args.gold,
        args.out,
        strategy=args.strategy,
        min_margin=args.min_margin,
        k=args.k,
        gold_kwargs=args.gold_kwargs,
        max_prompt_tokens=args.max_prompt_tokens,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        chat_template=args.chat_template,
        seed=args.seed,
        num_prompts=args.num_prompts,
    )
    print(f"wrote {len(pairs)} preference pairs to {args.out}")
    return 0
