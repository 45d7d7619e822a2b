"""Adapters to other text-environment packages, each an optional extra of tokengym.

- :mod:`.reasoning_gym_adapter` (``pip install 'tokengym[reasoning-gym]'``): any reasoning-gym
  dataset as a prompt source plus the ``reasoning-gym`` reward model;
  ``gym.make("tokengym/ReasoningGym-v0", task="basic_arithmetic")``.
- :mod:`.textarena_adapter` (``pip install 'tokengym[textarena]'``): textarena's single-player
  games through the ``textarena`` responder; ``gym.make("tokengym/TextArena-v0",
  game="GuessTheNumber-v0-raw")``.

Importing this package imports neither optional package: each loads when first used, and says
which extra to install when it is missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tokengym.reward_models import register


def import_optional(module: str, extra: str) -> ModuleType:
    """``import module``, or a ``ModuleNotFoundError`` saying which tokengym extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"this adapter needs the optional package {module!r}, which is not installed ({exc}); "
            f"install it with: pip install 'tokengym[{extra}]'"
        ) from exc


def _reasoning_gym_reward(**kwargs: object) -> object:
    from tokengym.envs.adapters.reasoning_gym_adapter import ReasoningGymReward

    return ReasoningGymReward(**kwargs)  # type: ignore[arg-type]


register("reasoning-gym", _reasoning_gym_reward)
