"""Benchmark suites: which tasks, agents, seeds, model and sizes ``tokengym bench`` runs.

=========  ===============  ====================================================================
suite      model            what it is for
=========  ===============  ====================================================================
``smoke``  ``tiny-llama``   CI: 2 tasks x 3 agents x 2 seeds, 2 iterations; about a minute on CPU
``quick``  ``smollm2-135m`` every task, PPO, RLOO, best-of-N and the untrained policy, 3 seeds;
                            about 2.3 hours on a 2-core CPU (1.6 with --jobs 2)
``full``   ``smollm2-135m`` every task and agent, 5 seeds, long runs: for a GPU
``perf``   (its own)        the speed benchmarks collected into ``PERF.md`` (:mod:`.perf`)
=========  ===============  ====================================================================

A task is a registered env id plus, optionally, a "gold" reward model scored on the completions
next to the env's own reward, and the best reward its reward model can give (:data:`TASKS`).

A suite's ``agents`` are run labels: a registry agent name (its default config plus the suite's
``agent_overrides``), or a *variant* of :attr:`Suite.variants`, e.g. ``"ppo-b0.01": ("ppo",
{"beta": 0.01})``, so that one algorithm runs at several settings (a reward-vs-KL frontier).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from tokengym.agents.registry import get_spec
from tokengym.checks import int_at_least, positive_int


@dataclass(frozen=True)
class TaskInfo:
    """A benchmark task.

    Attributes:
        env_id: the registered env id (built with ``split="train"`` and ``split="eval"``).
        gold: a reward model also scored on the eval completions (``gold_reward_mean``); tasks
            with one get periodic evaluations and the over-optimisation plot.
        needs_policy_model: the env takes ``proxy={"policy_model": <the suite's model>}`` (the
            over-optimisation env samples its preference pairs with the policy).
        max_reward: the largest per-episode reward the env's reward model can give, the top of
            the normalised score of the report's aggregate over tasks; ``None`` when it has no
            maximum (the task is then left out of the aggregate). Per task: Sentiment 1 (VADER
            compound, in [-1, 1]); Keywords 1 (the fraction of the concepts used, in [0, 1]);
            Length 1 (``max(0, 1 - |words - K| / tolerance)``, in [0, 1]); Arithmetic 1 (1 for a
            right answer, else 0); Overoptimization ``None`` (the proxy is a Bradley-Terry
            logit, unbounded).
    """

    env_id: str
    gold: str | None = None
    needs_policy_model: bool = False
    max_reward: float | None = None


TASKS: dict[str, TaskInfo] = {
    "Sentiment": TaskInfo("tokengym/Sentiment-v0", max_reward=1.0),
    "Keywords": TaskInfo("tokengym/Keywords-v0", max_reward=1.0),
    "Length": TaskInfo("tokengym/Length-v0", max_reward=1.0),
    "Arithmetic": TaskInfo("tokengym/Arithmetic-v0", max_reward=1.0),
    "Overoptimization": TaskInfo("tokengym/Overoptimization-v0", gold="vader",
                                 needs_policy_model=True),
}

# What a variant label may look like: it names run directories (runs/<task>/<label>/seed<k>).
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


@dataclass(frozen=True)
class Suite:
    """Everything one ``tokengym bench --suite NAME`` run needs (CLI flags override fields).

    Attributes:
        name: the suite's name.
        model: the policy (and reference) model name.
        tasks / agents: the grid: task names of :data:`TASKS`; run labels, each an agent name
            of the registry or a key of ``variants``. Run directories are named by the label.
        seeds: seeds 0..seeds-1 per task x agent.
        iterations: training iterations of trainable agents (an upper bound when
            ``token_budget`` is set).
        num_envs: episodes per training rollout.
        eval_episodes: held-out episodes of the final evaluation (``split="eval"``).
        eval_seed: base reset/sampling seed of the evaluations: seed k's runs of every agent
            are evaluated with ``eval_seed + k``.
        eval_every: on tasks with a gold reward model, also evaluate every this many
            iterations (and before training) into ``evals.jsonl``; 0 = final evaluation only.
        checkpoint_every: checkpoint interval of trainable agents (and always at the end).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        env_kwargs: per task (``"*"`` for all) keywords for the env, e.g. ``max_new_tokens``.
        agent_overrides: per agent (``"*"`` for all) config overrides for ``make_agent``, by
            registry name (a variant gets its algorithm's, then its own: :meth:`overrides`).
        variants: run label -> (registry agent name, config overrides), e.g. ``{"ppo-b0.01":
            ("ppo", {"beta": 0.01})}``: the same algorithm at other settings. A label must not
            be a registry name itself (that name already means the default config).
        token_budget: when > 0, every trainable run stops at the first iteration whose
            cumulative sampled training tokens reach it (``RunConfig.token_budget``; RLOO/GRPO's
            k samples per prompt count, they are sampled tokens), so that every trainable agent
            of the suite gets the same sampled-token budget; 0: ``iterations`` alone.
    """

    name: str
    model: str
    tasks: tuple[str, ...]
    agents: tuple[str, ...]
    seeds: int
    iterations: int
    num_envs: int
    eval_episodes: int
    eval_seed: int = 10_000
    eval_every: int = 0
    checkpoint_every: int = 10
    device: str = "auto"
    env_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    agent_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    variants: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    token_budget: int = 0

    def validate(self) -> Suite:
        """Raise ``ValueError`` on unknown tasks, agents or variants' agents, malformed variants
        or non-positive sizes; returns ``self``."""
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
        if not self.tasks or not self.agents:
            raise ValueError("a suite needs at least one task and one agent")
        for name in ("seeds", "iterations", "num_envs", "eval_episodes", "checkpoint_every"):
            positive_int(name, getattr(self, name))
        int_at_least("eval_every", self.eval_every, 0)
        int_at_least("token_budget", self.token_budget, 0)
        for label, variant in self.variants.items():
            if not isinstance(label, str) or not _LABEL.fullmatch(label):
                raise ValueError(f"variant label {label!r}: use letters, digits and . _ + = - "
                                 "(it names the run directories)")
            if (not isinstance(variant, (tuple, list)) or len(variant) != 2
                    or not isinstance(variant[0], str) or not isinstance(variant[1], dict)):
                raise ValueError(f"variant {label!r} must be (agent name, {{overrides}}), "
                                 f"got {variant!r}")
            try:
                get_spec(variant[0])
            except ValueError as exc:
                raise ValueError(f"variant {label!r}: {exc}") from None
            try:
                get_spec(label)
            except ValueError:
                pass
            else:
                raise ValueError(f"variant label {label!r} is a registry agent name (which means "
                                 "its default config); give the variant another label")
        if len(set(self.agents)) != len(self.agents):
            raise ValueError(f"agents listed twice: {list(self.agents)}")
        for label in self.agents:
            if label not in self.variants:
                try:
                    get_spec(label)  # ValueError "unknown agent ..." listing the known ones
                except ValueError as exc:
                    if not self.variants:
                        raise
                    raise ValueError(f"{exc}; or one of the suite's variants: "
                                     f"{', '.join(self.variants)}") from None
        return self

    def resolve(self, label: str) -> tuple[str, dict[str, Any]]:
        """``(registry agent name, the variant's own overrides)`` of run label ``label`` (a
        plain agent name resolves to itself with no overrides)."""
        if label in self.variants:
            agent, overrides = self.variants[label]
            return agent, dict(overrides)
        return label, {}

    def algorithm(self, label: str) -> str:
        """The registry agent name run label ``label`` runs."""
        return self.resolve(label)[0]

    def task_env_kwargs(self, task: str) -> dict[str, Any]:
        """Env keywords for ``task``: the ``"*"`` entry, then the task's own."""
        return {**self.env_kwargs.get("*", {}), **self.env_kwargs.get(task, {})}

    def overrides(self, label: str, seed: int) -> dict[str, Any]:
        """``make_agent`` overrides for the run of ``label``: seed and num_envs, then
        ``agent_overrides["*"]``, then ``agent_overrides[<its registry name>]``, then the
        variant's own (each later one wins)."""
        agent, own = self.resolve(label)
        return {"seed": seed, "num_envs": self.num_envs, **self.agent_overrides.get("*", {}),
                **self.agent_overrides.get(agent, {}), **own}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Suite:
        """The suite of :meth:`to_dict` (or of its JSON: lists back to tuples); fields missing
        (a ``bench.json`` written before they existed) take their defaults."""
        values = dict(values)
        for key in ("tasks", "agents"):
            values[key] = tuple(values[key])
        values["variants"] = {label: (v[0], dict(v[1]))
                              for label, v in values.get("variants", {}).items()}
        return cls(**values)


_PPO_SMALL = {"epochs": 1, "num_minibatches": 2}

SUITES: dict[str, Suite] = {
    "smoke": Suite(
        name="smoke", model="tiny-llama", tasks=("Sentiment", "Overoptimization"),
        agents=("ppo", "best-of-n", "sample"), seeds=2, iterations=2, num_envs=4, eval_episodes=8,
        eval_every=1, checkpoint_every=1, device="cpu",
        env_kwargs={"*": {"max_new_tokens": 8},
                    "Overoptimization": {"proxy": {"num_prompts": 12, "k": 4, "epochs": 3,
                                                   "max_new_tokens": 8}}},
        agent_overrides={"ppo": {**_PPO_SMALL, "lr": 1e-4}},
    ),
    # Sized for ~2.3 hours on 2 CPU cores: 5 tasks x 3 seeds x (ppo and rloo, 16 iterations of 8
    # episodes, + best-of-n / sample evaluations) at 16 new tokens. PPO and RLOO share
    # the demo's learning rate and KL coefficient (2 epochs of PPO learn Sentiment-v0 in ~16
    # iterations there); the lower beta lets a 128-episode budget move the policy at all.
    "quick": Suite(
        name="quick", model="smollm2-135m", tasks=tuple(TASKS),
        agents=("ppo", "rloo", "best-of-n", "sample"), seeds=3, iterations=16,
        num_envs=8, eval_episodes=32, eval_every=4, checkpoint_every=8,
        env_kwargs={"*": {"max_new_tokens": 16},
                    "Overoptimization": {"proxy": {"num_prompts": 96, "k": 4, "epochs": 10,
                                                   "max_new_tokens": 16}}},
        agent_overrides={"ppo": {"epochs": 2, "num_minibatches": 2, "lr": 5e-5, "beta": 0.02,
                                 "vf_coef": 0.1},
                         "rloo": {"samples_per_prompt": 4, "lr": 5e-5, "beta": 0.02}},
    ),
    "full": Suite(
        name="full", model="smollm2-135m", tasks=tuple(TASKS),
        agents=("ppo", "reinforce", "rloo", "grpo", "a2c", "best-of-n", "greedy", "sample"),
        seeds=5, iterations=200, num_envs=64, eval_episodes=100, eval_every=20,
        checkpoint_every=20,
        env_kwargs={"Overoptimization": {"proxy": {"num_prompts": 240, "k": 8, "epochs": 20}}},
        agent_overrides={"ppo": {"num_minibatches": 4, "lr": 1e-5}},
    ),
}


def get_suite(name: str) -> Suite:
    """The suite called ``name`` (``ValueError`` listing the known ones otherwise)."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)} (and 'perf')")
    return SUITES[name]
