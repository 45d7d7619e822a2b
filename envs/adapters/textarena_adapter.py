"""textarena's single-player games as multi-turn tokengym episodes, through a responder.

A record per game: the game's opening observation as the prompt, and the fields
``textarena_game`` (its id) and ``textarena_seed``. The ``textarena`` responder replays the
episode's agent turns on a fresh game made with that seed, steps it with the agent's last turn
and inserts what the game says back; when the game ends it pays the game's reward for player 0
as the per-turn reward and ends the episode. Replaying keeps the responder stateless, so the
native vector env matches ``SyncVectorEnv`` and the same record can be played by several rows.

textarena seeds Python's global ``random`` when a game resets; the adapter restores the global
``random`` and ``numpy.random`` states around every call, so the env leaves them as it found them.
Splits: ``train`` draws a fresh seed in ``[0, 10**9)`` per episode from the env's seeded RNG;
``eval`` is 100 fixed games with seeds ``10**9 + i``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from tokengym.envs.adapters import import_optional
from tokengym.envs.responders import Reply, Transcript
from tokengym.envs.text_gen_env import TextGenEnv
from tokengym.envs.vector_env import TextGenVectorEnv

EXTRA = "textarena"
DEFAULT_GAME = "GuessTheNumber-v0-raw"
EVAL_SEED = 10**9
EVAL_GAMES = 100
PLAYER = 0


@contextlib.contextmanager
def _isolated_random() -> Iterator[None]:
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _new_game(game: str, seed: int) -> Any:
    """A textarena game made and reset with ``seed`` (inside :func:`_isolated_random`)."""
    ta = import_optional("textarena", EXTRA)
    registry = ta.envs.registration.ENV_REGISTRY
    if game not in registry:
        raise ValueError(f"unknown textarena game {game!r}; single-player examples: "
                         "GuessTheNumber-v0-raw, Wordle-v0-raw, Hangman-v0-raw, TowerOfHanoi-v0-raw")
    env = ta.make(game)
    try:
        env.reset(num_players=1, seed=seed)
    except AssertionError as exc:
        raise ValueError(f"textarena game {game!r} is not a single-player game ({exc}); the "
                         "adapter plays single-player games only") from None
    return env


def _messages(env: Any) -> str:
    """The game's messages to the player since the last call (the player's own echo left out)."""
    _, observation = env.get_observation()
    return "\n".join(str(m[1]) for m in observation if m[0] != PLAYER)


def game_record(game: str, seed: int) -> dict[str, Any]:
    """The prompt record of one game: its opening observation and how to remake it."""
    with _isolated_random():
        prompt = _messages(_new_game(game, seed))
    return {"prompt": prompt, "textarena_game": game, "textarena_seed": int(seed)}


def textarena_prompts(game: str = DEFAULT_GAME, split: str = "train"
                      ) -> Callable[[np.random.Generator], dict[str, Any]] | list[dict[str, Any]]:
    """The prompt source of ``game``: a callable ``rng -> record`` (train) or the eval records."""
    if split == "train":
        game_record(game, 0)  # fail now on an unknown or multi-player game, not at reset

        def draw(rng: np.random.Generator) -> dict[str, Any]:
            return game_record(game, int(rng.integers(0, EVAL_SEED)))

        return draw
    if split == "eval":
        return [game_record(game, EVAL_SEED + i) for i in range(EVAL_GAMES)]
    raise ValueError(f"split {split!r} is not one of ['eval', 'train']")


class TextArenaResponder:
    """Plays the episode's agent turns in the record's textarena game (see the module doc)."""

    name = "textarena"

    def __call__(self, transcript: Transcript) -> Reply:
        fields = transcript.record.fields
        if "textarena_game" not in fields or "textarena_seed" not in fields:
            raise ValueError("the prompt record has no 'textarena_game'/'textarena_seed' fields; "
                             "use textarena_prompts(game) as the env's prompts")
        with _isolated_random():
            env = _new_game(fields["textarena_game"], int(fields["textarena_seed"]))
            _messages(env)  # the opening, already the prompt
            agent_turns = transcript.agent_turns
            for turn in agent_turns[:-1]:
                done, _ = env.step(action=turn.text)
                _messages(env)
                if done:
                    raise ValueError("the game ended before the agent's last turn; was the "
                                     "episode continued after the responder said done?")
            done, _ = env.step(action=agent_turns[-1].text)
            if not done:
                return Reply(text=_messages(env))
            rewards, game_info = env.close()
            reason = game_info.get(PLAYER, {}).get("reason", "The game is over.")
            return Reply(text=str(reason), reward=float(rewards.get(PLAYER, 0.0)), done=True)


def _kwargs(game: str, split: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    if "prompts" in kwargs:
        raise ValueError("tokengym/TextArena-v0 makes its prompts from game=/split=; do not pass "
                         "prompts= (use tokengym/TextGen-v0 with textarena_prompts() instead)")
    defaults: dict[str, Any] = {"responder": "textarena", "reward_model": None,
                                "chat_template": True, "max_prompt_tokens": 384,
                                "max_new_tokens": 256, "max_turn_tokens": 32, "max_turns": 12,
                                "max_insert_tokens": 128}
    return {**defaults, "prompts": textarena_prompts(game, split), **kwargs}


def make_env(game: str = DEFAULT_GAME, split: str = "train", **kwargs: Any) -> TextGenEnv:
    """``gym.make("tokengym/TextArena-v0", game=..., split=...)``: a multi-turn TextGenEnv."""
    return TextGenEnv(**_kwargs(game, split, kwargs))


def make_vector_env(num_envs: int = 1, game: str = DEFAULT_GAME, split: str = "train",
                    **kwargs: Any) -> TextGenVectorEnv:
    """The native vector env of :func:`make_env`."""
    return TextGenVectorEnv(num_envs, **_kwargs(game, split, kwargs))
