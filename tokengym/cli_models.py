"""``tokengym models`` and ``tokengym envs``."""

from __future__ import annotations

import argparse

import gymnasium as gym

import tokengym  # noqa: F401  (registers the ids)
from tokengym.models import BUILTIN_MODELS, DEFAULT_MODEL, load_causal_lm, smollm2_path


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "models":
        parser.add_argument("action", nargs="?", choices=["list", "prepare"], default="list",
                            help="list: show the built-in names; prepare: convert SmolLM2 into the cache now")


def run(args: argparse.Namespace, name: str) -> int:
    if name == "envs":
        for env_id in sorted(k for k in gym.registry if k.startswith("tokengym/")):
            print(env_id)
        return 0
    if args.action == "prepare":
        print(f"{DEFAULT_MODEL}: {smollm2_path()}")
        load_causal_lm(DEFAULT_MODEL, device="cpu")
        return 0
    for model in BUILTIN_MODELS:
        print(model + ("  (default)" if model == DEFAULT_MODEL else ""))
    print("...or any Hugging Face model id or local directory")
    return 0
