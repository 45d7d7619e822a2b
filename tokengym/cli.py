"""The ``tokengym`` command. Each subcommand lives in its own module with ``add_arguments(parser)``
and ``run(args) -> int``; they are imported only when used, so ``tokengym --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Later issues add their subcommands here.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("tokengym.demo", "sample a few Sentiment-v0 episodes with SmolLM2 through env.step"),
    "models": ("tokengym.cli_models", "list the built-in models, or prepare (convert) them"),
    "envs": ("tokengym.cli_models", "list the registered tokengym env ids"),
    "train": ("tokengym.train", "train an agent (PPO) on a tokengym env: logs, checkpoints, resume"),
    "train-rm": ("tokengym.cli_reward_models", "train a Bradley-Terry reward model on pairs"),
    "label-pairs": ("tokengym.cli_reward_models", "policy samples ranked by a gold RM, as pairs"),
    "bench": ("tokengym.bench", "benchmark suites: tasks x agents x seeds -> tables with CIs, plots"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokengym", description="Text generation as a Gymnasium environment."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars drown the command's output
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"tokengym {name}", description=COMMANDS[name][1])
    module.add_arguments(parser, name)
    args = parser.parse_args(rest)
    args.command_argv = rest  # the subcommand's own arguments, as given (to start it again)
    return int(module.run(args, name) or 0)


if __name__ == "__main__":
    sys.exit(main())
