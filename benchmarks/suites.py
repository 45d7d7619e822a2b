"""Benchmark suites: which tasks, agents, seeds, model and sizes ``tokengym bench`` runs.

=========  ===============  ====================================================================
suite      model            what it is for
=========  ===============  ====================================================================
``smoke``  ``tiny-llama``   CI: 2 tasks x 3 agents x 2 seeds, 2 iterations; about a minute on CPU
``tune``   ``smollm2-135m`` the learning-rate sweep that sets ``quick``'s and ``full``'s lrs:
                            PPO, REINFORCE, RLOO and GRPO at 3 lrs on a seed no table reports
``quick``  ``smollm2-135m`` the comparison protocol on CPU, 3 seeds: on Sentiment PPO, REINFORCE,
                            RLOO and GRPO (1,024 episodes' tokens each, tuned lr) at 3 betas (the
                            reward-KL frontier); on Keywords and Length PPO; best-of-4 and the
                            untrained policy everywhere; about 10 hours on a 2-core CPU with
                            --jobs 2, in resumable runs
``full``   ``smollm2-135m`` the same protocol for a GPU: every task and agent, 5 seeds, long runs
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
            logit, unbounded); Calculator 1 (the final answer right, else 0); GuessNumber 1 (the
            secret found within k turns, else 0); Support 1 (VADER compound of the customer's
            last reply, in [-1, 1]).
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
    # Multi-turn (a responder answers each agent turn): a calculator tool, a guessing game, a
    # customer played by a language model.
    "Calculator": TaskInfo("tokengym/Calculator-v0", max_reward=1.0),
    "GuessNumber": TaskInfo("tokengym/GuessNumber-v0", max_reward=1.0),
    "Support": TaskInfo("tokengym/Support-v0", max_reward=1.0),
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
        seeds: how many seeds per task x agent: ``first_seed .. first_seed + seeds - 1``.
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
        first_seed: the first seed (a tuning suite uses seeds that no reported cell uses).
        agent_tasks: run label -> the tasks it runs on (a label absent here runs on every task),
            e.g. a reward-KL frontier's variants on one task only.
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
    first_seed: int = 0
    agent_tasks: dict[str, tuple[str, ...]] = field(default_factory=dict)

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
        int_at_least("first_seed", self.first_seed, 0)
        for label, tasks in self.agent_tasks.items():
            if label not in self.agents:
                raise ValueError(f"agent_tasks names {label!r}, which is not one of the suite's "
                                 f"agents {list(self.agents)}")
            if not isinstance(tasks, (tuple, list)) or not set(tasks) <= set(self.tasks):
                raise ValueError(f"agent_tasks[{label!r}] must list tasks of the suite "
                                 f"{list(self.tasks)}, got {tasks!r}")
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

    def cells(self) -> list[tuple[str, str, int]]:
        """Every ``(task, label, seed)`` of the grid, seed by seed (a suite stopped early has
        every task x label cell, with fewer seeds), without the labels ``agent_tasks`` keeps off
        a task."""
        return [(t, a, k) for k in range(self.first_seed, self.first_seed + self.seeds)
                for t in self.tasks for a in self.agents
                if t in self.agent_tasks.get(a, self.tasks)]

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
        values["agent_tasks"] = {label: tuple(tasks)
                                 for label, tasks in values.get("agent_tasks", {}).items()}
        values["variants"] = {label: (v[0], dict(v[1]))
                              for label, v in values.get("variants", {}).items()}
        return cls(**values)


_PPO_SMALL = {"epochs": 1, "num_minibatches": 2}

# The quick and tuning suites' budget: every trainable run samples 16,384 completion tokens for
# training, 1,024 episodes of 16 new tokens (64 rollouts of 16 episodes; RLOO/GRPO's 4 samples of
# each prompt count, so they see 256 prompts 4 times each).
_QUICK_TOKENS = 64 * 16 * 16
_QUICK_ENV = {"*": {"max_new_tokens": 16}}
# The trainable agents compared, and the learning rates the tuning suite tries for each of them
# (the same grid for every agent; PPO's 3e-5 default was chosen on seed 0 before the protocol).
_TRAINABLE = ("ppo", "reinforce", "rloo", "grpo")
_TUNE_LRS = (1e-5, 3e-5, 1e-4)
# The KL coefficients of the reward-KL frontier (beta, the same meaning for every agent:
# the weight of its KL term, per token for PPO/REINFORCE, per sequence for RLOO, k3 in GRPO's
# loss), each agent at its tuned lr; 0.05 is every agent's default.
_FRONTIER_BETAS = (0.01, 0.2)
# lr per agent: the tuning suite's choice (benchmarks/tuning/SWEEP.md, made by
# `python -m tokengym.benchmarks.sweep benchmarks/tuning`): on Sentiment, seed 100, at quick's
# budget, 3e-5 gave every agent the highest held-out reward - beta x exact KL (1e-5 barely moved
# REINFORCE, RLOO and GRPO; 1e-4 bought reward with 10-44 nats of KL). One seed per cell.
_TUNED: dict[str, dict[str, Any]] = {agent: {"lr": 3e-5} for agent in _TRAINABLE}
_FRONTIER = {f"{agent}-b{beta:g}": (agent, {"beta": beta})
             for agent in _TRAINABLE for beta in _FRONTIER_BETAS}

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
    # The learning-rate sweep behind quick's agent_overrides: every trainable agent at each lr of
    # _TUNE_LRS, on Sentiment with seed 100 (no reported cell uses it), with quick's budget and
    # evaluation. `python -m tokengym.benchmarks.sweep DIR` picks, per agent, the lr with the
    # highest held-out KL-regularised reward (reward - beta * exact KL, what the agents maximise).
    "tune": Suite(
        name="tune", model="smollm2-135m", tasks=("Sentiment",),
        agents=tuple(f"{a}-lr{lr:g}" for a in _TRAINABLE for lr in _TUNE_LRS),
        variants={f"{a}-lr{lr:g}": (a, {"lr": lr}) for a in _TRAINABLE for lr in _TUNE_LRS},
        seeds=1, first_seed=100, iterations=64, num_envs=16, eval_episodes=64,
        checkpoint_every=16, token_budget=_QUICK_TOKENS, env_kwargs=_QUICK_ENV,
    ),
    # The CPU suite of the comparison protocol (docs/benchmarks.md), every trainable agent with
    # the same sampled-token budget at its tuned lr: on Sentiment the four trainable agents at
    # the frontier's 3 betas, so that they are compared at equal KL; on Keywords and Length PPO
    # alone (does the flagship beat sampling on the other tasks where RL should work?); the
    # untrained policy and best-of-4 on all three. 42 trainable runs: about 10 hours on 2 CPU
    # cores with --jobs 2 (seed 0 took 3 h 15 min; PPO 41-73 min a run with its separate critic,
    # the others 12), committed as they finish.
    "quick": Suite(
        name="quick", model="smollm2-135m", tasks=("Sentiment", "Keywords", "Length"),
        agents=(*_TRAINABLE, *_FRONTIER, "best-of-n", "sample"), seeds=3, iterations=64,
        num_envs=16, eval_episodes=64, checkpoint_every=16, token_budget=_QUICK_TOKENS,
        env_kwargs=_QUICK_ENV, variants=_FRONTIER,
        agent_tasks={label: ("Sentiment",) for label in (*_TRAINABLE[1:], *_FRONTIER)},
        agent_overrides=_TUNED,
    ),
    # The same protocol sized for a GPU: every task, every agent, 5 seeds, 12,800 episodes of 24
    # new tokens per trainable run, the frontier on every task. The multi-turn tasks keep their
    # own agent-token budgets (Calculator 96 over up to 4 turns, GuessNumber 64 over up to 8,
    # Support 96 over 2), as many tokens as the others in all (token_budget), so fewer episodes.
    "full": Suite(
        name="full", model="smollm2-135m", tasks=tuple(TASKS),
        agents=(*_TRAINABLE, "a2c", *_FRONTIER, "best-of-n", "greedy", "sample"),
        seeds=5, iterations=200, num_envs=64, eval_episodes=100, eval_every=20,
        checkpoint_every=20, token_budget=200 * 64 * 24, variants=_FRONTIER,
        env_kwargs={"*": {"max_new_tokens": 24},
                    "Overoptimization": {"proxy": {"num_prompts": 240, "k": 8, "epochs": 20}},
                    "Calculator": {"max_new_tokens": 96},
                    "GuessNumber": {"max_new_tokens": 64},
                    "Support": {"max_new_tokens": 96}},
        # quick's tuned lrs, swept at quick's budget on the CPU (a2c keeps its default: it is not
        # in the sweep); rerun `tune` with full's sizes before reading full's table as tuned.
        agent_overrides=_TUNED,
    ),
}


def get_suite(name: str) -> Suite:
    """The suite called ``name`` (``ValueError`` listing the known ones otherwise)."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)} (and 'perf')")
    return SUITES[name]
