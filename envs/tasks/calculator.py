"""``tokengym/Calculator-v0``: multi-step arithmetic where the agent may call a calculator.

The agent writes ``<calc>expression</calc>``; the stop string ``</calc>`` ends its turn, and the
``calculator`` responder inserts ``<result>value</result>`` (or ``<result>error: why</result>``),
computed by :func:`~tokengym.envs.tasks.safe_calc.evaluate` (never ``eval``). A turn without a
calculator call is the final answer: the responder ends the episode and the reward model
``final_answer_reward`` pays 1.0 when the last number of the agent's last turn equals the record's
``answer`` (no per-turn rewards).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from tokengym.envs.responders import Reply, Transcript
from tokengym.envs.tasks.safe_calc import CalcError, evaluate, format_number
from tokengym.reward_models.rules import numbers

CALL = re.compile(r"<calc>(.*?)</calc>", re.DOTALL)
INSTRUCTIONS = ("You may use a calculator: write <calc>expression</calc> and the result will be "
                "shown to you. When you are done, give the final answer as 'Answer: <number>'.")


class CalculatorResponder:
    """Answers the agent's last ``<calc>...</calc>`` call; a turn without one ends the episode.

    Args:
        max_calls: calls answered per episode; the next one gets an error message instead
            (the env's ``max_turns`` bounds the episode as well).
    """

    name = "calculator"

    def __init__(self, max_calls: int = 8) -> None:
        from tokengym.checks import positive_int

        self.max_calls = positive_int("max_calls", max_calls)

    def __call__(self, transcript: Transcript) -> Reply:
        calls = CALL.findall(transcript.last.text)
        if not calls:
            return Reply(done=True)
        if transcript.turn >= self.max_calls:
            return Reply(text=f"<result>error: at most {self.max_calls} calculator calls</result>")
        try:
            shown = format_number(evaluate(calls[-1]))
        except CalcError as exc:
            reason = str(exc).split(" (")[0]  # the reason, without the list of what is allowed
            shown = f"error: {reason[:80]}"
        return Reply(text=f"<result>{shown}</result>")


def _final_turn(transcript: Any, completion: str) -> str:
    if isinstance(transcript, Transcript):
        agent = transcript.agent_turns
        return agent[-1].text if agent else ""
    return completion


def final_answer_reward(prompts: Sequence[str], completions: Sequence[str],
                        answer: Sequence[Any], transcript: Sequence[Any] | None = None
                        ) -> np.ndarray:
    """1.0 when the last number in the agent's final turn equals ``answer`` (else 0.0).

    With ``transcript`` (multi-turn envs pass it) only the agent's last turn counts, so the
    calculator's inserted results never answer for the agent; without it, the completion.
    """
    out = np.zeros(len(completions), dtype=np.float32)
    for i, completion in enumerate(completions):
        text = _final_turn(transcript[i] if transcript is not None else None, completion)
        found = numbers(text)
        try:
            expected = float(answer[i])
        except (TypeError, ValueError):
            raise ValueError(f"answer {answer[i]!r} of sample {i} is not a number") from None
        out[i] = float(bool(found) and abs(found[-1] - expected) < 1e-6)
    return out


final_answer_reward.name = "final-answer"  # type: ignore[attr-defined]


def make_problem(rng: np.random.Generator) -> dict[str, Any]:
    """One prompt record: a 3-5 term expression of 2-3 digit numbers, its ``answer`` and
    ``expression`` (the same generator made the shipped files)."""
    terms = int(rng.integers(3, 6))
    parts = [str(int(rng.integers(10, 1000)))]
    for _ in range(terms - 1):
        op = str(rng.choice(["+", "-", "*"]))
        high = 100 if op == "*" else 1000
        parts += [op, str(int(rng.integers(2 if op == "*" else 10, high)))]
    expression = " ".join(parts)
    answer = evaluate(expression)
    prompt = f"Compute {expression}. {INSTRUCTIONS}"
    return {"prompt": prompt, "answer": int(answer), "expression": expression}
