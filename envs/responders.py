"""The responder contract: what a multi-turn env asks when the agent ends a turn.

Contract
--------
A responder is any callable::

    responder(transcript: Transcript) -> Reply | str | None | tuple[str | None, float | None, bool]

called once each time the agent ends a turn (a stop token, a stop string, or ``max_turn_tokens``
agent tokens). :class:`Transcript` holds the prompt's record (text, id, fields such as a secret
number or an expected answer), the prompt's token ids and every turn so far, each as text AND
token ids (:class:`Turn`); the last turn is always the agent's. The responder answers with

- the text to insert as the environment's next message (``None`` or ``""``: nothing);
- an optional per-turn reward (a finite number; ``None`` is 0.0), paid at the step that ended
  the turn;
- whether the episode is over (``done``; the step is then ``terminated``).

A bare string means ``Reply(text=...)`` and ``None`` means ``Reply()``. The env tokenizes the text
once (as a user turn when the env has ``chat_template=True``) and never re-tokenizes what the
agent generated. Responders should be deterministic for the same transcript (the native vector
env then matches ``SyncVectorEnv`` exactly); one that keeps state between turns keeps it per
episode itself, or recomputes it from the transcript.

Faults (the responder raises, returns another type, a non-finite reward, a non-bool ``done``, or
a text over ``max_insert_tokens``) raise :class:`ResponderError` naming the responder, the turn
and an excerpt of the agent's last turn; the episode ends and the env stays usable after
``reset()``, as with :class:`~tokengym.reward_models.RewardModelError`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokengym.envs.prompts import PromptRecord

AGENT = "agent"
"""``Turn.role`` of the agent's turns."""
ENV = "env"
"""``Turn.role`` of the environment's (responder's) messages."""

Responder = Callable[["Transcript"], Any]

_EXCERPT_CHARS = 60
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Turn:
    """One turn of an episode.

    Attributes:
        role: :data:`AGENT` or :data:`ENV`.
        text: an agent turn's tokens decoded (special tokens skipped, a final stop token
            dropped, stop strings kept: ``</calc>`` is part of what the agent wrote); an env
            turn's text exactly as the responder returned it (without any chat-template markup).
        token_ids: the turn's token ids in the observation, in order: the agent's actions, or the
            tokens the env inserted (chat-template markup included).
        end: why an agent turn ended: ``"stop_token"``, ``"stop_string"``, ``"max_turn_tokens"``,
            or ``None`` while it is running or when the episode was cut inside it; ``None`` for
            env turns.
    """

    role: str
    text: str
    token_ids: tuple[int, ...]
    end: str | None = None


@dataclass(frozen=True)
class Transcript:
    """An episode so far, as the responder (and a reward model naming ``transcript``) sees it.

    Attributes:
        record: the prompt's :class:`~tokengym.envs.PromptRecord` (text, id, fields).
        prompt_ids: the prompt's token ids in the observation (chat template included).
        turns: every turn so far, agent and env, in order.
    """

    record: PromptRecord
    prompt_ids: tuple[int, ...]
    turns: tuple[Turn, ...]

    @property
    def agent_turns(self) -> list[Turn]:
        """The agent's turns, in order."""
        return [t for t in self.turns if t.role == AGENT]

    @property
    def env_turns(self) -> list[Turn]:
        """The environment's messages, in order."""
        return [t for t in self.turns if t.role == ENV]

    @property
    def turn(self) -> int:
        """Index (0-based) of the agent's latest turn: the one a responder is answering."""
        return len(self.agent_turns) - 1

    @property
    def last(self) -> Turn:
        """The latest turn (the agent's, when a responder is called).

        Raises:
            ValueError: the episode has no turn yet.
        """
        if not self.turns:
            raise ValueError("the transcript has no turn yet")
        return self.turns[-1]

    def text(self, separator: str = "") -> str:
        """The turns' texts joined with ``separator`` (what the env's reward model scores)."""
        return separator.join(t.text for t in self.turns)


@dataclass(frozen=True)
class Reply:
    """A responder's answer: text to insert (or None), a per-turn reward (or None), done."""

    text: str | None = None
    reward: float | None = None
    done: bool = False


class ResponderError(RuntimeError):
    """A responder raised, or returned something that is not a valid reply.

    Attributes:
        responder_name: the responder's name.
        turn: the agent turn it was answering (0-based).
        excerpt: a short excerpt of the agent's last turn.
    """

    def __init__(self, message: str, *, responder_name: str, turn: int, excerpt: str) -> None:
        super().__init__(message)
        self.responder_name = responder_name
        self.turn = turn
        self.excerpt = excerpt


def responder_name(responder: Any) -> str:
    """``responder.name`` if set, else the function or class name."""
    name = getattr(responder, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(responder, "__name__", type(responder).__name__)


def excerpt(text: str, limit: int = _EXCERPT_CHARS) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


_ACCEPTED = ("a responder returns a tokengym.envs.responders.Reply(text, reward, done), a string "
             "(the text to insert), None (nothing), or a tuple (text | None, reward | None, "
             "done: bool)")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 3] + "..."


def _as_reply(raw: Any) -> Reply | str:
    """``raw`` as a Reply, or the reason it is not one."""
    if isinstance(raw, Reply):
        return raw
    if raw is None:
        return Reply()
    if isinstance(raw, str):
        return Reply(text=raw)
    if isinstance(raw, tuple):
        if len(raw) != 3:
            return f"a tuple of {len(raw)} items {_short(raw)} (a reply tuple has 3)"
        return Reply(*raw)
    return f"{type(raw).__name__} {_short(raw)}"


def _field_problem(reply: Reply, max_chars: int) -> str | None:
    text, reward, done = reply.text, reply.reward, reply.done
    if text is not None and not isinstance(text, str):
        return f"text {_short(text)} ({type(text).__name__}): the text must be a string or None"
    if text is not None and len(text) > max_chars:
        return (f"a text of {len(text)} characters, more than {max_chars} (it cannot fit in "
                "max_insert_tokens); shorten the reply or raise max_insert_tokens")
    if reward is not None:
        if isinstance(reward, (bool, np.bool_)) or not isinstance(reward, numbers.Real):
            return (f"reward {_short(reward)} ({type(reward).__name__}): the reward must be a "
                    "finite number or None, never converted")
        if not (math.isfinite(float(reward)) and abs(float(reward)) <= _FLOAT32_MAX):
            return f"reward {reward!r}: rewards must be finite float32 numbers"
    if not isinstance(done, (bool, np.bool_)):
        return f"done {_short(done)} ({type(done).__name__}): done must be True or False"
    return None


def ask(responder: Responder, transcript: Transcript, *, max_chars: int) -> Reply:
    """Call ``responder`` on ``transcript`` and check its reply.

    Args:
        responder: a responder (see the module docstring).
        transcript: the episode so far; its last turn is the agent's.
        max_chars: the longest text accepted before tokenizing (a guard against endless replies).

    Returns:
        The checked :class:`Reply` (reward a float or None, done a bool).

    Raises:
        ResponderError: the responder raised or returned something invalid; the message names
            the responder, the turn and an excerpt of the agent's last turn.
    """
    name = responder_name(responder)
    last = excerpt(transcript.last.text) if transcript.turns else ""
    where = f"turn {transcript.turn} (agent's last turn: {last!r})"
    try:
        raw = responder(transcript)
    except ResponderError:
        raise
    except Exception as exc:
        raise ResponderError(
            f"responder {name!r} raised {type(exc).__name__}: {exc} at {where}",
            responder_name=name, turn=transcript.turn, excerpt=last,
        ) from exc
    reply = _as_reply(raw)
    problem = reply if isinstance(reply, str) else _field_problem(reply, max_chars)
    if isinstance(reply, str) or problem is not None:
        raise ResponderError(
            f"responder {name!r} returned {problem} at {where}; {_ACCEPTED}",
            responder_name=name, turn=transcript.turn, excerpt=last,
        )
    reward = None if reply.reward is None else float(reply.reward)
    return Reply(text=reply.text, reward=reward, done=bool(reply.done))


class EchoResponder:
    """Replies with the agent's last turn, verbatim; never ends the episode (tests, examples)."""

    name = "echo"

    def __call__(self, transcript: Transcript) -> Reply:
        return Reply(text=transcript.last.text)
