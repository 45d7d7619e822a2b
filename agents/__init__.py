"""RL agents that learn through a tokengym vector env's ``reset``/``step``.

``PPOAgent``, ``PPOConfig``, the agent registry (``AGENTS``, ``AgentSpec``, ``register``,
``available``, ``make_agent``; see :mod:`tokengym.agents.registry`) and the baselines are
importable from here; the import is lazy so that ``import tokengym.agents.rollout`` stays light.
See ``docs/agents.md``.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"PPOAgent": "ppo", "PPOConfig": "ppo_config", "ActorCritic": "policy",
         "AGENTS": "registry", "AgentSpec": "registry", "make_agent": "registry",
         "register": "registry", "available": "registry",
         "ReinforceAgent": "reinforce", "RLOOAgent": "rloo", "GRPOAgent": "grpo",
         "A2CAgent": "a2c", "BestOfNAgent": "inference", "SampleAgent": "inference",
         "GreedyAgent": "inference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
