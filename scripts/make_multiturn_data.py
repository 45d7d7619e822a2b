"""Regenerate the prompt sets of the multi-turn tasks (envs/data/*.jsonl): Calculator,
GuessNumber and Support, each with a train and a held-out eval split.

Deterministic (fixed seeds): running it again rewrites identical files. The generators are the
tasks' own (tokengym.envs.tasks.*), so a record always matches what its responder expects.

    python scripts/make_multiturn_data.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tokengym.envs.tasks.calculator import make_problem
from tokengym.envs.tasks.guess_number import make_game
from tokengym.envs.tasks.support import OPENINGS, PROBLEMS, PRODUCTS, make_complaint

DATA = Path(__file__).resolve().parent.parent / "envs" / "data"


def write(name: str, records: list[dict]) -> None:
    path = DATA / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    print(f"{path}: {len(records)} records")


def calculator() -> None:
    rng = np.random.default_rng(14)
    seen: set[str] = set()
    records = []
    while len(records) < 600:
        record = make_problem(rng)
        if record["expression"] not in seen:  # distinct problems: the splits never share one
            seen.add(record["expression"])
            records.append(record)
    write("calculator_train.jsonl", records[:500])
    write("calculator_eval.jsonl", records[500:])


def guess_number() -> None:
    rng = np.random.default_rng(15)
    # Distinct ranges (so distinct prompt texts): widths 10-100, starts 0-199; split by range.
    ranges = [(low, low + width - 1) for low in range(0, 200) for width in (10, 20, 50, 100)]
    order = rng.permutation(len(ranges))
    games = [make_game(*ranges[int(j)], rng) for j in order[:500]]
    write("guess_number_train.jsonl", games[:400])
    write("guess_number_eval.jsonl", games[400:])


def support() -> None:
    # Split by product: held-out complaints are about products never seen in training.
    held_out = set(PRODUCTS[-3:])
    train, held = [], []
    for product in PRODUCTS:
        for k, problem in enumerate(PROBLEMS):
            record = make_complaint(product, problem, OPENINGS[k % len(OPENINGS)])
            (held if product in held_out else train).append(record)
    write("support_train.jsonl", train)
    write("support_eval.jsonl", held)


if __name__ == "__main__":
    calculator()
    guess_number()
    support()
