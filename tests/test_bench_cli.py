"""``tokengym bench`` option parsing: ``--env-kwarg`` and its deprecated ``--max-new-tokens``
alias (parsing level only: nothing runs)."""

from __future__ import annotations

import argparse

import pytest

from tokengym.bench import add_arguments, build_suite, command_line, fold_deprecated
from tokengym.benchmarks.suites import get_suite
from tokengym.cli import main


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tokengym bench")
    add_arguments(parser, "bench")
    return parser.parse_args(["--suite", "smoke", *argv])


def test_env_kwarg_goes_to_every_task_under_the_star_key():
    suite = build_suite(_args("--env-kwarg", "max_new_tokens=4", "--env-kwarg", 'stop_strings=["."]',
                              "--env-kwarg", "reward_model=pkg.mod:fn"))
    smoke = get_suite("smoke")
    assert suite.env_kwargs["*"] == {"max_new_tokens": 4, "stop_strings": ["."],
                                     "reward_model": "pkg.mod:fn"}  # JSON when it parses
    for task in suite.tasks:
        assert suite.task_env_kwargs(task)["max_new_tokens"] == 4
    # A task's own keywords are kept, and the registered suite itself is not modified.
    assert suite.env_kwargs["Overoptimization"] == smoke.env_kwargs["Overoptimization"]
    assert smoke.env_kwargs["*"] == {"max_new_tokens": 8}
    assert build_suite(_args()) == smoke


def test_max_new_tokens_is_a_deprecated_alias_of_env_kwarg(capsys):
    with pytest.warns(DeprecationWarning, match="use --env-kwarg max_new_tokens=4"):
        old = build_suite(_args("--max-new-tokens", "4"))
    assert capsys.readouterr().err.startswith("note: --max-new-tokens is deprecated")
    assert old == build_suite(_args("--env-kwarg", "max_new_tokens=4"))
    with pytest.raises(ValueError, match="keep only --env-kwarg"):
        build_suite(_args("--max-new-tokens", "4", "--env-kwarg", "max_new_tokens=5"))


def test_recorded_command_uses_the_new_spelling():
    with pytest.warns(DeprecationWarning):
        args = fold_deprecated(_args("--max-new-tokens", "4", "--env-kwarg", "num_envs=2",
                                     "--seeds", "1"))
    assert fold_deprecated(args) is args  # folded once: no second warning
    assert command_line(args, "OUT") == ("tokengym bench --suite smoke --seeds 1 --env-kwarg "
                                         "max_new_tokens=4 --env-kwarg num_envs=2 --out OUT")
    assert command_line(_args(), "OUT") == "tokengym bench --suite smoke --out OUT"


def test_malformed_env_kwarg_stops_before_any_run(tmp_path):
    with pytest.raises(SystemExit, match="not KEY=VALUE"):
        main(["bench", "--suite", "smoke", "--env-kwarg", "max_new_tokens", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_token_budget_flag_sets_the_suites_budget():
    assert build_suite(_args("--token-budget", "4096")).token_budget == 4096
    assert build_suite(_args()).token_budget == get_suite("smoke").token_budget
    assert "--token-budget 4096" in command_line(_args("--token-budget", "4096"), "out")
