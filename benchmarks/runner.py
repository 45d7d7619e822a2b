"""Runs a suite: every task x agent x seed in ``OUT/runs/<task>/<agent>/seed<k>/``.

``<agent>`` is the suite's run label: a registry agent name, or a variant of
:attr:`~tokengym.benchmarks.suites.Suite.variants` (an agent with other config overrides).

A run directory holds

- ``metrics.jsonl``: one record per training iteration (the agent's metrics plus the cumulative
  ``tokens_total`` generated and ``wall_time_s``); trainable agents only;
- ``evals.jsonl``: held-out evaluations during training (tasks with a gold reward model);
- ``checkpoints/``: the latest checkpoint (deleted once the run is finished);
- ``eval.json``: the final held-out evaluation (with the run's label ``agent``, its registry
  ``algorithm``, the resolved config ``overrides`` and, for trainable agents, the whole
  ``config``); its presence marks the run finished. A trainable run that met a NaN or inf
  (:class:`~tokengym.checks.NonFiniteError`) is finished too, as ``diverged`` (the message) with
  no metrics: rerunning the same seed would diverge the same way.

Finished runs are skipped; unfinished ones resume from their checkpoint (or restart when they
have none). Every agent is evaluated on ``split="eval"`` prompts; the run of seed ``k`` with
reset/sampling seed ``eval_seed + k``, the same for every agent (paired comparisons, and the
prompts drawn vary over seeds like everything else). Trained agents are evaluated through
:func:`~tokengym.benchmarks.evaluate.evaluate_policy` against their reference, the others through
their own ``evaluate`` (best-of-n reports its measured KL estimate and the analytic bound).

Under torchrun (``tokengym bench --nproc N``, or ``torchrun ... -m tokengym bench``) every rank
walks the same grid: each trainable run trains on all ranks at once, ``num_envs / N`` episodes
per rank (so an iteration samples the suite's ``num_envs`` episodes and the token budget counts
every rank's tokens, as in one process), and rank 0 alone decides what is finished, evaluates,
runs the agents that only evaluate and writes ``eval.json``. See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import tokengym.envs  # noqa: F401  (registers the env ids)
from tokengym.agents.checkpoint import LATEST, checkpoints
from tokengym.agents.distributed import barrier, broadcast_object, is_main, local_only, world_size
from tokengym.agents.fsdp import gathered
from tokengym.agents.loop import RunConfig, train_loop
from tokengym.agents.registry import config_class, get_spec, make_agent, make_config
from tokengym.benchmarks.evaluate import distinct_n, evaluate_policy, sequence_logprobs
from tokengym.benchmarks.suites import TASKS, Suite
from tokengym.checks import NonFiniteError
from tokengym.fileio import atomic_write_json, read_json, run_lock
from tokengym.manifest import source_commit
from tokengym.models import load_causal_lm, load_tokenizer
from tokengym.reward_models import make, score

Log = Callable[[str], None]


def run_dir(out: Path, task: str, agent: str, seed: int) -> Path:
    return Path(out) / "runs" / task / agent / f"seed{seed}"


def agent_trainable(name: str) -> bool:
    """Whether agent ``name`` trains (registry spec); ``ValueError`` for unknown names."""
    return get_spec(name).trainable


def eval_group_size(name: str, overrides: dict[str, Any]) -> int:
    """Samples an untrained agent draws per evaluation prompt (best-of-n's N, else 1)."""
    default = getattr(config_class(name)(), "samples_per_prompt", 1)
    return int(overrides.get("samples_per_prompt", default))


def resolve_run(suite: Suite, label: str, seed: int) -> tuple[str, bool, dict[str, Any]]:
    """``(registry agent name, trainable, make_agent overrides)`` of the run of ``label``
    (an agent name or a variant, :meth:`Suite.overrides`) with ``seed``. Agents that are only
    evaluated are built on the eval env: ``num_envs`` is ``eval_episodes`` x their samples per
    prompt (best-of-n's N)."""
    algorithm = suite.algorithm(label)
    trainable = agent_trainable(algorithm)
    overrides = suite.overrides(label, seed)
    if not trainable:
        overrides["num_envs"] = suite.eval_episodes * eval_group_size(algorithm, overrides)
    return algorithm, trainable, overrides


def _same_suite(old: Any, new: dict[str, Any]) -> bool:
    """Whether ``bench.json``'s suite ``old`` is the suite ``new`` (both as JSON), fields that
    ``old`` predates taking their defaults."""
    if old == new:
        return True
    try:
        return Suite.from_dict(old) == Suite.from_dict(new)
    except (TypeError, KeyError, AttributeError, IndexError):
        return False


def _jsonable(value: Any) -> Any:
    """``value`` as JSON would read it back (tuples as lists, other objects as their repr)."""
    return json.loads(json.dumps(value, default=repr))


def complete_metrics(metrics: dict[str, float], rollout: Any, reference: torch.nn.Module,
                     envs: Any, gold: str | None) -> dict[str, float]:
    """Fill in what an agent's own ``evaluate`` may not report, from its rollout.

    The KL is the agent's own (agents/inference.py: 0 for ``sample``, -log ref(y) for
    ``greedy``, Beirami et al.'s estimate with ``kl_bound`` for ``best-of-n``); only its per-token
    value is derived here when missing, and ``kl_mean`` is NaN for an agent that reports none.
    """
    out = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    completions = [info.get("completion", "") for info in rollout.infos]
    if "ref_perplexity" not in out:
        ref_logp = sequence_logprobs(reference, rollout, 1.0, int(envs.single_action_space.n))
        mask = rollout.mask
        nll = -(ref_logp * mask).sum() / mask.sum().clamp(min=1)
        out["ref_perplexity"] = float(torch.exp(nll))
    out.setdefault("distinct_1", distinct_n(completions, 1))
    out.setdefault("distinct_2", distinct_n(completions, 2))
    out.setdefault("mean_length", float(rollout.lengths.float().mean()))
    out.setdefault("reward_mean", float(rollout.rewards.mean()))
    out.setdefault("kl_mean", float("nan"))
    out.setdefault("kl_token_mean", out["kl_mean"] / max(out["mean_length"], 1.0))
    if gold is not None and "gold_reward_mean" not in out:
        prompts = [info.get("prompt", "") for info in rollout.infos]
        out["gold_reward_mean"] = float(np.mean(score(make(gold), prompts, completions)[0]))
    return out


class BenchRunner:
    """Runs :class:`Suite` ``suite`` into ``out`` (see the module docstring).

    Args:
        suite: the (validated) suite.
        out: the benchmark directory.
        keep_checkpoints: keep finished runs' checkpoints (they are deleted by default).
        command: the command line, recorded in ``bench.json`` (and RESULTS.md).
        log: where progress lines go.
        shard: ``(k, n)``: run only runs ``k, k + n, k + 2n, ...`` of :meth:`runs`, so that ``n``
            runners sharing ``out`` split the suite (finished runs are skipped by all of them).
        processes: how many runners split the suite (recorded in ``bench.json``); default n.

    Under torchrun every rank builds its own runner with the same arguments (module docstring);
    ``ValueError`` when the suite's ``num_envs`` cannot be split evenly between the ranks.
    """

    def __init__(self, suite: Suite, out: str | os.PathLike[str], *, keep_checkpoints: bool = False,
                 command: str | None = None, log: Log = print,
                 shard: tuple[int, int] = (0, 1), processes: int | None = None) -> None:
        k, n = shard
        if n < 1 or not 0 <= k < n:
            raise ValueError(f"shard must be (k, n) with n >= 1 and 0 <= k < n, got {shard}")
        self.shard = (k, n)
        self.processes = processes or n
        self.suite = suite.validate()
        self.ranks = world_size()
        if suite.num_envs % self.ranks:
            raise ValueError(f"num_envs {suite.num_envs} cannot be split between {self.ranks} "
                             "processes: pick a multiple of the process count")
        for label in suite.agents:  # every run's config is valid before anything runs
            try:
                make_config(*resolve_run(suite, label, 0)[::2])
            except ValueError as exc:
                raise ValueError(f"agent {label!r} of the suite: {exc}") from None
        self.command = command
        self.out = Path(out)
        self.keep_checkpoints = keep_checkpoints
        self.log = log if is_main() else (lambda message: None)  # rank 0 speaks
        self._tokenizer: Any = None
        self._base_lm: torch.nn.Module | None = None
        self._envs: dict[tuple[str, int, str], Any] = {}  # reused: every rollout resets by seed

    # -- the grid ----------------------------------------------------------------------------
    def runs(self) -> list[tuple[str, str, int]]:
        """Every (task, agent, seed) of the suite in running order (:meth:`Suite.cells`)."""
        return self.suite.cells()

    def run_all(self, todo: Iterable[int] | None = None) -> dict[str, int]:
        """Run (or skip, or resume) every run of this runner's shard, or the runs whose indices
        into :meth:`runs` ``todo`` yields (consumed lazily, so that processes can pull indices
        from one shared queue); returns counts of ``ran`` and ``skipped``."""
        if is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / "bench.json", self.metadata(), sort_keys=True)
        counts = {"ran": 0, "skipped": 0}
        runs = self.runs()
        k, n_shards = self.shard
        for i in range(k, len(runs), n_shards) if todo is None else todo:
            (task, agent, seed), n = runs[i], i + 1
            where = run_dir(self.out, task, agent, seed)
            # Rank 0's answer for every rank: another rank may not see rank 0's files yet.
            if broadcast_object((where / "eval.json").is_file() if is_main() else False):
                counts["skipped"] += 1
                continue
            self.log(f"[{n}/{len(runs)}] {task} / {agent} / seed {seed}")
            self.run_one(task, agent, seed)
            counts["ran"] += 1
        self.close()
        barrier()  # the ranks leave together, once rank 0's last evaluation is written
        return counts

    def close(self) -> None:
        """Close the cached envs and drop the cached model."""
        for envs in self._envs.values():
            envs.close()
        self._envs.clear()
        self._base_lm = None

    def metadata(self) -> dict[str, Any]:
        """``bench.json``: the suite, the command, the machine, the date (kept from the first run)."""
        old = self.out / "bench.json"
        suite = json.loads(json.dumps(self.suite.to_dict()))
        if old.is_file():
            try:
                data = read_json(old)
            except ValueError as exc:
                data = {}
                self.log(f"warning: {exc}; it is written anew")
            if isinstance(data, dict) and _same_suite(data.get("suite"), suite):
                return data
            if data:
                self.log(f"warning: {old} was written by other suite settings; finished runs are "
                         "kept and skipped (use a new --out to rerun them)")
        return {
            "suite": suite,
            "command": self.command,
            "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} CPUs, torch {torch.__version__} "
                       f"({torch.get_num_threads()} thread(s) per process), "
                       f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}",
            "date": time.strftime("%Y-%m-%d"),
            "code": {"tokengym": tokengym.__version__, **(source_commit() or {})},
            "shards": self.processes,
            "ranks": self.ranks,
        }

    # -- one run -----------------------------------------------------------------------------
    def _device(self) -> str | None:
        return None if self.suite.device == "auto" else self.suite.device

    def make_envs(self, task: str, num_envs: int, split: str) -> Any:
        """The task's native vector env on ``split`` with the suite's env keywords (cached)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.suite.model)
        kwargs = self.suite.task_env_kwargs(task)
        if TASKS[task].needs_policy_model:
            kwargs["proxy"] = {"policy_model": self.suite.model, **kwargs.get("proxy", {})}
        key = (task, num_envs, split)
        if key not in self._envs:
            self._envs[key] = gym.make_vec(
                TASKS[task].env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                tokenizer=self._tokenizer, split=split, **kwargs)
        return self._envs[key]

    def fresh_lm(self) -> torch.nn.Module:
        """A fresh copy of the suite's model (loaded once, copied per run)."""
        if self._base_lm is None:
            self._base_lm = load_causal_lm(self.suite.model, device=self._device())
        return copy.deepcopy(self._base_lm)

    def evaluate(self, agent: Any, trainable: bool, lm: torch.nn.Module, envs: Any,
                 gold: str | None, seed: int) -> dict[str, float]:
        """Held-out metrics of ``agent`` with reset/sampling seed ``seed`` (module docstring).

        Every trained agent goes through :func:`evaluate_policy`, so its ``kl_mean`` is the same
        exact per-token KL to its reference (``kl_k1_mean``: the k1 estimate). The reference is
        passed as ``agent.policy.reference`` (a context manager) rather than entered here: with
        LoRA it is the policy with adapters disabled, which must not sample the rollout.
        """
        if trainable:
            temperature = float(getattr(agent.config, "temperature", 1.0))
            metrics, _ = evaluate_policy(agent.policy.lm, agent.policy.reference, envs, seed=seed,
                                         temperature=temperature, gold_reward_model=gold)
            return metrics
        rollout, metrics = agent.evaluate(envs, seed=seed)
        return complete_metrics(metrics, rollout, lm, envs, gold)

    def run_one(self, task: str, agent_name: str, seed: int) -> dict[str, Any]:
        """Train (or resume) and evaluate one run; writes and returns its ``eval.json``.

        Training goes through :func:`~tokengym.agents.loop.train_loop`, the loop of
        ``tokengym train``; a Ctrl-C there checkpoints and raises ``KeyboardInterrupt`` here.
        ``agent_name`` is a run label: an agent name or one of the suite's variants
        (:func:`resolve_run`); the run directory is named by it, and locked while the run goes
        (a second ``tokengym bench`` on the same run is refused, see :func:`run_lock`). Under
        torchrun, rank 0 holds the lock and returns the ``eval.json``; the other ranks train
        with it and return ``{}``.
        """
        where = run_dir(self.out, task, agent_name, seed)
        with run_lock(where) if is_main() else contextlib.nullcontext():
            return self._run_one(task, agent_name, seed)

    def _run_one(self, task: str, agent_name: str, seed: int) -> dict[str, Any]:
        s, where = self.suite, run_dir(self.out, task, agent_name, seed)
        algorithm, trainable, overrides = resolve_run(s, agent_name, seed)
        main = is_main()
        if not trainable and not main:
            return {}  # rank 0 evaluates it alone
        gold = TASKS[task].gold
        torch.manual_seed(seed)
        lm = self.fresh_lm()
        if trainable:
            overrides["num_envs"] = s.num_envs // self.ranks  # per rank, as in tokengym train
            agent = make_agent(algorithm, self.make_envs(task, overrides["num_envs"], "train"), lm,
                               overrides)
        else:  # evaluated only: built on the eval env, N rows per prompt for best-of-n
            agent = make_agent(algorithm, self.make_envs(task, overrides["num_envs"], "eval"), lm,
                               overrides)
        tokens, wall, diverged = 0, 0.0, None
        if trainable:
            # With a token budget, `iterations` is only an upper bound (RunConfig.token_budget).
            run = RunConfig(iterations=s.iterations, token_budget=s.token_budget,
                            checkpoint_every=s.checkpoint_every, keep_checkpoints=1, num_samples=0,
                            eval_every=s.eval_every if gold is not None else 0, tensorboard=False)
            metadata = {"agent": agent_name, "algorithm": algorithm, "model": s.model,
                        "env": TASKS[task].env_id, "env_kwargs": s.task_env_kwargs(task),
                        "task": task, "seed": seed}
            ckpt_root = where / "checkpoints"
            try:
                result = train_loop(
                    agent, where, run, metadata=metadata,
                    resume_from=ckpt_root if (ckpt_root / LATEST).is_file()
                    or checkpoints(ckpt_root) else None,
                    evaluate=lambda a: self.evaluate(
                        a, True, lm, self.make_envs(task, s.eval_episodes, "eval"), gold,
                        s.eval_seed + seed),
                    log=self.log, progress=False)
            except NonFiniteError as exc:
                self.log(f"{task} / {agent_name} / seed {seed} diverged: {exc}")
                diverged = str(exc)
            else:
                if result.interrupted:
                    raise KeyboardInterrupt
                tokens, wall, diverged = result.tokens_total, result.wall_time_s, None
        t0 = time.perf_counter()
        metrics: dict[str, Any] = {}
        if not (trainable and diverged is not None):
            # Every rank joins (with FSDP the weights are gathered); rank 0 evaluates alone.
            with gathered(agent.policy) if trainable else contextlib.nullcontext():
                if main:
                    eval_envs = self.make_envs(
                        task, s.eval_episodes if trainable else overrides["num_envs"], "eval")
                    with local_only():  # rank 0's own rows
                        metrics = self.evaluate(agent, trainable, lm, eval_envs, gold,
                                                s.eval_seed + seed)
        if not main:
            return {}
        if not trainable:  # the evaluation is all they generate (best-of-n: N per prompt)
            tokens = int(metrics.get("tokens", 0))
        result = {
            "task": task, "agent": agent_name, "algorithm": algorithm,
            "overrides": _jsonable(overrides), "seed": seed, "model": s.model,
            "token_budget": s.token_budget if trainable else 0, "trainable": trainable,
            "iterations": int(getattr(agent, "iteration", 0)),
            "eval_seed": s.eval_seed + seed, "eval_episodes": s.eval_episodes,
            "tokens": tokens, "wall_time_s": wall + (0.0 if trainable else time.perf_counter() - t0),
            "metrics": metrics,
        }
        if trainable:
            result["config"] = _jsonable(dataclasses.asdict(agent.config))
            if diverged is not None:
                result["diverged"] = diverged
        atomic_write_json(where / "eval.json", result, sort_keys=True)
        if trainable and not self.keep_checkpoints:
            shutil.rmtree(where / "checkpoints", ignore_errors=True)
        return result
