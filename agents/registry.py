"""Every agent ``tokengym train --agent NAME`` knows, with what it needs, and how to build one.

``AGENTS[name]`` is an :class:`AgentSpec` (the README's "Agents" table is generated from these);
:func:`make_agent` builds the agent on a vector env with its config dataclass (defaults +
overrides, validated). Agent modules are imported lazily, so reading the table costs nothing.

Every agent built here (SB3 aside) has ``config`` (with ``num_envs``, ``seed``, ``temperature``),
``iteration``, ``policy`` (an :class:`~tokengym.agents.policy.ActorCritic`), ``train_iteration()``
(``TypeError`` for agents that do not train), ``evaluate(envs, seed)`` and
``state_dict()``/``load_state_dict()`` (see :mod:`agents.checkpoint`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class AgentSpec:
    """One row of the "Agents" table."""

    name: str  # the --agent value
    family: str  # "actor-critic", "policy gradient", "inference-time"
    samples_per_prompt: str  # "1", "k (default 4)", "N (default 4)"
    uses_value_head: bool  # trains a critic
    uses_reference: bool  # needs the frozen reference model (KL penalty)
    trainable: bool  # False: train_iteration raises TypeError; evaluate only


AGENTS: dict[str, AgentSpec] = {s.name: s for s in (
    AgentSpec("ppo", "actor-critic", "1", True, True, True),
    AgentSpec("reinforce", "policy gradient", "1", False, True, True),
    AgentSpec("rloo", "policy gradient", "k (default 4)", False, True, True),
    AgentSpec("grpo", "policy gradient", "k (default 4)", False, True, True),
    AgentSpec("a2c", "actor-critic", "1", True, True, True),
    AgentSpec("best-of-n", "inference-time", "N (default 4)", False, False, False),
    AgentSpec("sample", "inference-time", "1", False, False, False),
    AgentSpec("greedy", "inference-time", "1", False, False, False),
    # SB3's own algorithms; the reference is used only with beta > 0 (KLPenaltyWrapper).
    AgentSpec("sb3-ppo", "actor-critic (SB3)", "1", True, True, True),
    AgentSpec("sb3-a2c", "actor-critic (SB3)", "1", True, True, True),
)}

# name -> (module, agent class, config class), relative to this package.
_BUILDERS: dict[str, tuple[str, str, str]] = {
    "ppo": ("ppo", "PPOAgent", "ppo_config:PPOConfig"),
    "reinforce": ("reinforce", "ReinforceAgent", "reinforce:ReinforceConfig"),
    "rloo": ("rloo", "RLOOAgent", "rloo:RLOOConfig"),
    "grpo": ("grpo", "GRPOAgent", "grpo:GRPOConfig"),
    "a2c": ("a2c", "A2CAgent", "a2c:A2CConfig"),
    "best-of-n": ("inference", "BestOfNAgent", "inference:BestOfNConfig"),
    "sample": ("inference", "SampleAgent", "inference:SampleConfig"),
    "greedy": ("inference", "GreedyAgent", "inference:GreedyConfig"),
    "sb3-ppo": ("sb3_agent", "SB3Agent", "sb3_agent:SB3Config"),
    "sb3-a2c": ("sb3_agent", "SB3Agent", "sb3_agent:SB3Config"),
}


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(f".{module}", __package__), attr)


def check_agent_name(name: str) -> AgentSpec:
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; accepted: {', '.join(AGENTS)}")
    return AGENTS[name]


def config_class(name: str) -> type:
    """The config dataclass of agent ``name`` (``PPOConfig``, ``RLOOConfig``, ...)."""
    check_agent_name(name)
    return _load(_BUILDERS[name][2])


def make_config(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """Defaults of agent ``name``'s config + ``overrides``, validated (``ValueError`` if not)."""
    cls = config_class(name)
    config = cls.from_dict(dict(overrides or {}))
    if name.startswith("sb3-"):
        config.algo = name.removeprefix("sb3-")
    return config.validate()


def make_agent(name: str, envs: Any, lm: torch.nn.Module,
               overrides: dict[str, Any] | None = None) -> Any:
    """Build agent ``name`` on ``envs`` (a tokengym vector env) with policy ``lm`` (a causal LM).

    ``overrides`` are config fields; ``num_envs`` defaults to ``envs.num_envs``, so the env
    decides the batch. SB3 agents return an :class:`~tokengym.agents.sb3_agent.SB3Agent`, which
    trains through :func:`~tokengym.agents.sb3.train_sb3` rather than ``train_iteration``.
    """
    check_agent_name(name)
    overrides = dict(overrides or {})
    if envs is not None and hasattr(envs, "num_envs"):
        overrides.setdefault("num_envs", int(envs.num_envs))
    config = make_config(name, overrides)
    module, cls_name, _ = _BUILDERS[name]
    cls = _load(f"{module}:{cls_name}")
    return cls(envs, lm, config)
