"""The agent registry: every agent ``tokengym train --agent NAME`` knows, and how to build it.

``AGENTS[name]`` is an :class:`AgentSpec`: the row of the "Agents" table (README, docs/agents.md)
plus the agent class and its config dataclass, each given as the class or as an import string
``"package.module:Attr"`` imported only when the agent is built, so reading the table imports no
agent code. :func:`make_agent` builds an agent on a vector env with its config
(defaults + overrides, validated).

Other packages add agents with :func:`register`, or from outside through the entry-point group
``tokengym.agents`` (:data:`ENTRY_POINT_GROUP`): each entry point loads to an :class:`AgentSpec`
(or a zero-argument callable returning one) whose ``name`` is the entry point's name. Entry
points are loaded the first time a name is not found, and by :func:`available`.

The contract of an agent class (``AgentClass(envs, lm, config)``; SB3's agents aside, which train
through :func:`~tokengym.agents.sb3.train_sb3`):

- ``config``: the config it was built with: a dataclass with ``from_dict(dict)`` (unknown keys
  raise ``ValueError``), ``validate()`` (raises ``ValueError``) and the fields ``num_envs``,
  ``seed`` and ``temperature`` (``tokengym train`` also reads the fields of
  :class:`~tokengym.agents.agent_config.PGConfig`; deriving from it is simplest);
- ``iteration``: the number of completed training iterations;
- ``policy``: an :class:`~tokengym.agents.policy.ActorCritic`;
- ``train_iteration() -> dict``: one rollout and update, returning the logged metrics
  (``TypeError`` for agents that do not train, ``trainable=False``);
- ``evaluate(envs, seed) -> (rollout, metrics)``;
- ``state_dict()`` / ``load_state_dict(state)`` for checkpoints (see :mod:`agents.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

ENTRY_POINT_GROUP = "tokengym.agents"


@dataclass(frozen=True)
class AgentSpec:
    """What the registry knows about one agent: its row of the "Agents" table and its builder.

    Attributes:
        name: the ``--agent`` value and registry key.
        family: kind of algorithm, as shown in the table ("actor-critic", "policy gradient", ...).
        samples_per_prompt: completions sampled per prompt, as shown ("1", "k (default 4)", ...).
        uses_value_head: whether it trains a critic (value head).
        uses_reference: whether it needs the frozen reference model (KL to the initial policy).
        trainable: False if ``train_iteration`` raises ``TypeError`` (the agent only evaluates).
        agent: the agent class, called as ``agent(envs, lm, config)``; the class or an import
            string ``"package.module:Attr"``, resolved by :meth:`agent_class` when it is built.
        config: its config dataclass (``from_dict(dict)``, ``validate()``); the class or an
            import string, resolved by :meth:`config_class`.
        fixed_config: config fields this name always sets, over any override (``sb3-ppo``:
            ``{"algo": "ppo"}``); copied on creation, read-only by convention.
    """

    name: str
    family: str
    samples_per_prompt: str
    uses_value_head: bool
    uses_reference: bool
    trainable: bool
    agent: str | type
    config: str | type
    # Not hashed: a dict is not hashable, and the other fields identify the spec well enough.
    fixed_config: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"AgentSpec name must be a non-empty string, got {self.name!r}")
        for key in ("family", "samples_per_prompt"):
            if not isinstance(getattr(self, key), str):
                raise TypeError(f"AgentSpec {self.name!r}: {key} must be a string, "
                                f"got {getattr(self, key)!r}")
        for key in ("uses_value_head", "uses_reference", "trainable"):
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f"AgentSpec {self.name!r}: {key} must be a bool, "
                                f"got {getattr(self, key)!r}")
        for key in ("agent", "config"):
            ref = getattr(self, key)
            if isinstance(ref, type):
                continue
            if not isinstance(ref, str):
                raise TypeError(f"AgentSpec {self.name!r}: {key} must be a class or an import "
                                f"string 'package.module:Attr', got {type(ref).__name__}")
            module, sep, attr = ref.partition(":")
            if not (sep and module and attr):
                raise ValueError(f"AgentSpec {self.name!r}: {key}={ref!r} is not an import string "
                                 "'package.module:Attr'")
        if not isinstance(self.fixed_config, Mapping):
            raise TypeError(f"AgentSpec {self.name!r}: fixed_config must be a mapping, "
                            f"got {type(self.fixed_config).__name__}")
        # A copy, so that changing the caller's dict later does not change the spec. A plain dict
        # (not a read-only mappingproxy) keeps specs picklable and dataclasses.asdict-able.
        object.__setattr__(self, "fixed_config", dict(self.fixed_config))

    def agent_class(self) -> type:
        """The agent class (imported now if ``agent`` is an import string)."""
        return self._resolve("agent", self.agent)

    def config_class(self) -> type:
        """The config dataclass (imported now if ``config`` is an import string)."""
        cls = self._resolve("config", self.config)
        missing = [m for m in ("from_dict", "validate") if not callable(getattr(cls, m, None))]
        if missing:
            raise TypeError(f"agent {self.name!r}: config class {cls.__qualname__} has no "
                            f"{' or '.join(missing)}()")
        return cls

    def _resolve(self, key: str, ref: str | type) -> type:
        if isinstance(ref, type):
            return ref
        module_name, _, attr_path = ref.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as exc:  # any failure while importing the module: name the agent
            raise ValueError(f"agent {self.name!r}: cannot import module {module_name!r} of its "
                             f"{key} {ref!r} ({type(exc).__name__}: {exc})") from exc
        for part in attr_path.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"agent {self.name!r}: module {module_name!r} has no "
                                 f"{attr_path!r} (its {key} {ref!r})")
            obj = getattr(obj, part)
        if not isinstance(obj, type):
            raise TypeError(f"agent {self.name!r}: its {key} {ref!r} is a {type(obj).__name__}, "
                            "not a class")
        return obj


_PG = "policy gradient"
_INFERENCE = "inference-time"

#: The live registry, name -> spec, built-ins first (in the order of the "Agents" table), then
#: agents added by :func:`register` and by entry points, in the order they arrived.
AGENTS: dict[str, AgentSpec] = {s.name: s for s in (
    AgentSpec("ppo", "actor-critic", "1", True, True, True,
              "tokengym.agents.ppo:PPOAgent", "tokengym.agents.ppo_config:PPOConfig"),
    AgentSpec("reinforce", _PG, "1", False, True, True,
              "tokengym.agents.reinforce:ReinforceAgent", "tokengym.agents.reinforce:ReinforceConfig"),
    AgentSpec("rloo", _PG, "k (default 4)", False, True, True,
              "tokengym.agents.rloo:RLOOAgent", "tokengym.agents.rloo:RLOOConfig"),
    AgentSpec("grpo", _PG, "k (default 4)", False, True, True,
              "tokengym.agents.grpo:GRPOAgent", "tokengym.agents.grpo:GRPOConfig"),
    AgentSpec("a2c", "actor-critic", "1", True, True, True,
              "tokengym.agents.a2c:A2CAgent", "tokengym.agents.a2c:A2CConfig"),
    AgentSpec("best-of-n", _INFERENCE, "N (default 4)", False, False, False,
              "tokengym.agents.inference:BestOfNAgent", "tokengym.agents.inference:BestOfNConfig"),
    AgentSpec("sample", _INFERENCE, "1", False, False, False,
              "tokengym.agents.inference:SampleAgent", "tokengym.agents.inference:SampleConfig"),
    AgentSpec("greedy", _INFERENCE, "1", False, False, False,
              "tokengym.agents.inference:GreedyAgent", "tokengym.agents.inference:GreedyConfig"),
    # SB3's own algorithms; the reference is used only with beta > 0 (KLPenaltyWrapper).
    AgentSpec("sb3-ppo", "actor-critic (SB3)", "1", True, True, True,
              "tokengym.agents.sb3_agent:SB3Agent", "tokengym.agents.sb3_agent:SB3Config",
              fixed_config={"algo": "ppo"}),
    AgentSpec("sb3-a2c", "actor-critic (SB3)", "1", True, True, True,
              "tokengym.agents.sb3_agent:SB3Agent", "tokengym.agents.sb3_agent:SB3Config",
              fixed_config={"algo": "a2c"}),
)}

# Entry points that failed to load, by name: listing warns once about each and skips it.
_BROKEN: set[str] = set()


def register(spec: AgentSpec, *, overwrite: bool = False) -> None:
    """Add ``spec`` to :data:`AGENTS` under ``spec.name``.

    Raises:
        TypeError: ``spec`` is not an :class:`AgentSpec`.
        ValueError: another spec already has that name and ``overwrite`` is false
            (registering an equal spec again is a no-op).
    """
    if not isinstance(spec, AgentSpec):
        raise TypeError(f"register() takes an AgentSpec, got {type(spec).__name__}")
    current = AGENTS.get(spec.name)
    if current is not None and current != spec and not overwrite:
        raise ValueError(f"agent {spec.name!r} is already registered; pass overwrite=True to "
                         "replace it")
    AGENTS[spec.name] = spec


def _describe(ep: EntryPoint) -> str:
    return f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP!r}"


def _load_entry_point(ep: EntryPoint) -> AgentSpec:
    """Load ``ep``, check it gives an AgentSpec named ``ep.name``, and register it.

    Raises ``ValueError`` / ``TypeError`` naming the entry point when anything is wrong.
    """
    try:
        obj = ep.load()
    except Exception as exc:  # whatever the plugin's import raised: name the entry point
        raise ValueError(f"{_describe(ep)} cannot be loaded ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, AgentSpec):
        spec = obj
    elif isinstance(obj, type):  # a common slip: pointing at the agent class itself
        raise TypeError(f"{_describe(ep)} loads the class {obj.__qualname__}; it must load to an "
                        "AgentSpec or a zero-argument function returning one")
    elif callable(obj):
        try:
            spec = obj()
        except Exception as exc:
            raise ValueError(f"{_describe(ep)}: calling it raised {type(exc).__name__}: {exc}"
                             ) from exc
        if not isinstance(spec, AgentSpec):
            raise TypeError(f"{_describe(ep)} returned a {type(spec).__name__}, not an AgentSpec")
    else:
        raise TypeError(f"{_describe(ep)} loads a {type(obj).__name__}; it must load to an "
                        "AgentSpec or a zero-argument function returning one")
    if spec.name != ep.name:
        raise ValueError(f"{_describe(ep)} gives the AgentSpec named {spec.name!r}; the entry "
                         "point's name and the spec's name must be the same")
    register(spec)
    _BROKEN.discard(ep.name)
    return spec


def _plugin_entry_points() -> list[EntryPoint]:
    """Entry points of the group whose name is not registered yet (registered names win)."""
    return [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in AGENTS]


def available() -> dict[str, AgentSpec]:
    """Every agent: built-ins, registered ones and installed plugins, in :data:`AGENTS` order.

    Loads the entry points not loaded yet; one that fails is skipped with a ``RuntimeWarning``
    (once), so a broken plugin does not hide the others; using its name raises the error.
    Returns a new dict (a snapshot): add agents with :func:`register`, not by changing it.
    """
    for ep in _plugin_entry_points():
        if ep.name in AGENTS:  # two distributions with the same name: the first one wins
            continue
        try:
            _load_entry_point(ep)
        except (TypeError, ValueError) as exc:
            if ep.name not in _BROKEN:
                _BROKEN.add(ep.name)
                warnings.warn(f"skipping agent plugin: {exc}", RuntimeWarning, stacklevel=2)
    return dict(AGENTS)


def get_spec(name: str) -> AgentSpec:
    """The spec of agent ``name``, loading its entry point if it is a plugin not loaded yet.

    Raises:
        ValueError: unknown name (the message lists the known ones and the closest match), or
            a plugin of that name that fails to load (``TypeError`` if it loads to the wrong
            kind of object); the message names the entry point.
    """
    spec = AGENTS.get(name)
    if spec is not None:
        return spec
    for ep in _plugin_entry_points():
        if ep.name == name:
            return _load_entry_point(ep)
    known = list(available())
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown agent {name!r}.{hint} Known: {', '.join(known)} (plugins register "
                     f"more through the entry-point group {ENTRY_POINT_GROUP!r})")


#: The older name of :func:`get_spec` (``benchmarks.runner`` and others call it).
check_agent_name = get_spec


def config_class(name: str) -> type:
    """The config dataclass of agent ``name`` (``PPOConfig``, ``RLOOConfig``, ...)."""
    return get_spec(name).config_class()


def make_config(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """Defaults of agent ``name``'s config + ``overrides`` + the spec's ``fixed_config``,
    validated (``ValueError`` if not, unknown fields included)."""
    spec = get_spec(name)
    config = spec.config_class().from_dict({**(overrides or {}), **spec.fixed_config})
    config.validate()
    return config


def make_agent(name: str, envs: Any, lm: torch.nn.Module | str,
               overrides: Mapping[str, Any] | None = None) -> Any:
    """Build agent ``name`` on ``envs`` (a tokengym vector env) with policy ``lm`` (a causal LM).

    ``overrides`` are config fields; ``num_envs`` defaults to ``envs.num_envs``, so the env
    decides the batch. SB3 agents (which also take a model name as ``lm``) return an
    :class:`~tokengym.agents.sb3_agent.SB3Agent`, which trains through
    :func:`~tokengym.agents.sb3.train_sb3` rather than ``train_iteration``.
    """
    spec = get_spec(name)
    overrides = dict(overrides or {})
    if envs is not None and hasattr(envs, "num_envs"):
        overrides.setdefault("num_envs", int(envs.num_envs))
    config = make_config(name, overrides)
    return spec.agent_class()(envs, lm, config)
