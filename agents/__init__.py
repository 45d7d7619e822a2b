"""RL agents that learn through a tokengym vector env's ``reset``/``step``.

``PPOAgent`` and ``PPOConfig`` are importable from here; the import is lazy so that
``import tokengym.agents.rollout`` stays light.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"PPOAgent": "ppo", "PPOConfig": "ppo_config", "ActorCritic": "policy"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
