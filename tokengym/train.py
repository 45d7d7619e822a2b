"""``tokengym train``: train an agent on a tokengym env, with logs, checkpoints and resume.

``--agent`` is any name the agent registry knows (:func:`tokengym.agents.registry.available`,
plugins included; default ``ppo``). Every field of every agent's config dataclass is a flag
(``--num-envs 16``, ``--adaptive-kl``/``--no-adaptive-kl``) and a key of the ``--config`` TOML
file; a flag the chosen agent's config lacks is an error. Flags win over the file, the file over
the defaults. The TOML file may also set ``env``, ``model``, ``agent``, an ``[env_kwargs]`` table
and the run settings of :class:`~tokengym.agents.loop.RunConfig` (``iterations``,
``checkpoint_every``, ...). Training runs through :func:`tokengym.agents.loop.train_loop`, the
loop ``tokengym bench`` uses too. See ``docs/ppo.md`` and ``docs/agents.md``.

``--resume DIR`` continues a run with the checkpoint's settings; flags given with it change them
from the restored iteration on (one log line lists every change): run settings (``--iterations``,
``--checkpoint-every``...), and agent settings such as ``--lr`` and ``--beta``, which are written
into the restored optimizer and KL controller. What fixes the run's identity is refused with an
error naming it: ``--env``, ``--env-kwarg``, ``--model``, ``--agent``, and the agent fields of its
config's ``FIXED_ON_RESUME`` (``--seed``, ``--num-envs``, LoRA, dtype, value model).

``--nproc N`` trains in N processes started by torchrun (or run ``torchrun --nproc-per-node N -m
tokengym train ...`` yourself): ``--num-envs`` is per process, rank 0 alone writes the run
directory, ``--dist-timeout`` bounds every wait for the other processes
(``docs/distributed.md``).

Agents that do not train (``sample``, ``greedy``, ``best-of-n``) evaluate
once and write ``metrics.json`` and ``samples.md``; ``sb3-ppo``/``sb3-a2c`` run SB3 for
``iterations x n_steps x num_envs`` timesteps.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import sys
import time
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import gymnasium as gym
from tqdm import tqdm

import tokengym  # noqa: F401  (registers the env ids)
from tokengym import launch
from tokengym.agents import distributed
from tokengym.agents.agent_config import RENAMED, rename_deprecated
from tokengym.agents.checkpoint import CheckpointError, find_checkpoint, read_checkpoint_info
from tokengym.agents.distributed import RankFailure, broadcast_object, is_main, world_size
from tokengym.agents.fsdp import gathered
from tokengym.agents.logging import plot_metrics, sample_rows, write_sample_table
from tokengym.agents.loop import RunConfig, run_settings_from_checkpoint, train_loop
from tokengym.agents.ppo_config import PPOConfig
from tokengym.agents.registry import available, config_class, get_spec, make_agent, make_config
from tokengym.checks import NonFiniteError
from tokengym.fileio import (
    RunLockedError,
    atomic_write_json,
    read_json,
    run_lock,
)
from tokengym.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer
from tokengym.train_outside_loop import run_evaluation, run_sb3

# What the run is; a resumed run keeps them.
IDENTITY_KEYS = ("env", "model", "agent", "env_kwargs")
DEFAULTS = {"env": "tokengym/Sentiment-v0", "model": DEFAULT_MODEL, "agent": "ppo",
            "env_kwargs": {}}
# Run settings with flags of their own outside the agent-config group.
RUN_FLAGS = ("iterations", "token_budget", "checkpoint_every", "keep_checkpoints", "num_samples")


def _config_classes() -> list[type]:
    """PPOConfig first (its flags keep their order), then every other agent's config."""
    out: list[type] = [PPOConfig]
    for name in available():
        cls = config_class(name)
        if cls not in out:
            out.append(cls)
    return out


def _all_fields() -> dict[str, tuple[type, dataclasses.Field]]:
    """Field name -> (a config class that has it, the field), over every agent's config."""
    out: dict[str, tuple[type, dataclasses.Field]] = {}
    for cls in _config_classes():
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, (cls, f))
    return out


def _field_type(cls: type, f: dataclasses.Field) -> tuple[type, bool]:
    """``(type, optional)`` of field ``f``: ``float | None`` is ``(float, True)``."""
    hint = typing.get_type_hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        return next(a for a in args if a is not type(None)), type(None) in args
    return hint, False


def _optional(kind: type) -> Any:
    """An argparse type for ``kind | None``: "none"/"null" give None."""
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null", "") else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _add_field_flag(group: argparse._ArgumentGroup, cls: type, f: dataclasses.Field,
                    name: str | None = None, **extra: Any) -> None:
    """A flag for config field ``f`` (``--name``, default: the field's), typed from its hint."""
    flag = "--" + (name or f.name).replace("_", "-")
    kind, optional = _field_type(cls, f)
    if kind is bool:
        group.add_argument(flag, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, **extra)
    elif optional:
        group.add_argument(flag, type=_optional(kind), default=argparse.SUPPRESS,
                           metavar=f"{kind.__name__.upper()}|none", **extra)
    else:
        group.add_argument(flag, type=kind, default=argparse.SUPPRESS,
                           metavar=kind.__name__.upper(), **extra)


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--env", help=f"env id (default {DEFAULTS['env']})")
    parser.add_argument("--agent", choices=list(available()), help="agent (default ppo; see "
                        "docs/agents.md)")
    parser.add_argument("--model", help=f"policy name, hub id or path (default {DEFAULT_MODEL})")
    parser.add_argument("--out", help="run directory (default runs/<time>; --resume: that run)")
    parser.add_argument("--config", help="TOML file of run keys, run settings and agent fields")
    parser.add_argument("--resume", metavar="DIR", help="continue the run (or checkpoint) in DIR")
    parser.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                        help="gym.make keyword for the env (VALUE parsed as JSON when it can be)")
    parser.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")
    parser.add_argument("--trust-run-dir", action="store_true",
                        help="with --resume: allow the import strings ('package.module:attr') that "
                             "the run directory names (env id, reward model...); importing them "
                             "runs their code, so only for run directories you trust")
    launch.add_arguments(parser)
    run_group = parser.add_argument_group("run settings (RunConfig: docs/ppo.md)")
    for f in dataclasses.fields(RunConfig):
        if f.name in RUN_FLAGS:
            _add_field_flag(run_group, RunConfig, f)
    group = parser.add_argument_group(
        "agent config fields (PPOConfig: docs/ppo.md; the others: docs/agents.md)")
    fields = _all_fields()
    for cls, f in fields.values():
        _add_field_flag(group, cls, f)
    for old, new in RENAMED.items():  # accepted for one release, with a warning
        if new in fields:
            _add_field_flag(group, *fields[new], name=old, dest=old, help=argparse.SUPPRESS)


def parse_env_kwargs(items: list[str]) -> dict[str, Any]:
    """``["max_new_tokens=8", "reward_model=pkg.mod:fn"]`` -> dict (JSON values when valid)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env-kwarg {item!r} is not KEY=VALUE (e.g. max_new_tokens=16)")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@dataclasses.dataclass
class Settings:
    """Everything ``tokengym train`` resolved from defaults, TOML or checkpoint, and flags."""

    identity: dict[str, Any]  # env, model, agent, env_kwargs
    run: RunConfig
    config: Any  # the agent config to train with
    checkpoint_config: Any = None  # --resume: the agent config the checkpoint was trained with


_IMPORT_STRING = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def import_strings(value: Any) -> list[str]:
    """Every ``"package.module:attr"`` string inside ``value`` (nested dicts and lists): what
    gym.make or the reward-model registry would import."""
    if isinstance(value, str):
        return [value] if _IMPORT_STRING.match(value) else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in import_strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in import_strings(v)]
    return []


def remote_code(value: Any) -> bool:
    """Whether ``trust_remote_code`` is set true anywhere inside ``value``."""
    if isinstance(value, dict):
        return value.get("trust_remote_code") is True or any(remote_code(v)
                                                             for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(remote_code(v) for v in value)
    return False


def _flag_values(args: argparse.Namespace, names: Any) -> dict[str, Any]:
    return {f: getattr(args, f) for f in names if hasattr(args, f)}


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Merge defaults < (checkpoint | TOML) < flags; ``SystemExit`` with the reason otherwise."""
    identity = dict(DEFAULTS)
    values: dict[str, Any] = {}
    run_values: dict[str, Any] = {}
    checkpoint_values: dict[str, Any] | None = None
    if args.resume:
        try:
            info = read_checkpoint_info(args.resume)
        except FileNotFoundError as exc:
            raise SystemExit(str(exc)) from None
        checkpoint_values, run_values = run_settings_from_checkpoint(info)
        values.update(checkpoint_values)
        identity.update({k: v for k, v in info["metadata"].items() if k in IDENTITY_KEYS})
        named = import_strings({k: identity[k] for k in ("env", "env_kwargs")})
        if remote_code(identity["env_kwargs"]):  # transformers would run a model folder's code
            named.append("trust_remote_code=true")
        if named and not args.trust_run_dir:
            raise SystemExit(
                f"{args.resume} names code to import: {named}; resuming would import it and run "
                "its code. If you trust this run directory, resume with --trust-run-dir")
    elif args.config:
        try:
            data = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"--config {args.config}: {exc}") from None
        identity.update({k: data.pop(k) for k in IDENTITY_KEYS if k in data})
        for key in ("env", "model", "agent"):
            if not isinstance(identity[key], str):
                raise SystemExit(f"--config {args.config}: {key} must be a string, got "
                                 f"{identity[key]!r}")
        if not isinstance(identity["env_kwargs"], dict):
            raise SystemExit(f"--config {args.config}: env_kwargs must be a table ([env_kwargs] "
                             f"with one key per gym.make keyword), got {identity['env_kwargs']!r}")
        run_fields = RunConfig.field_names()
        run_values = {k: data.pop(k) for k in run_fields if k in data}
        values.update(data)
    given = {k: getattr(args, k) for k in ("env", "model", "agent") if getattr(args, k) is not None}
    if args.env_kwarg:
        given["env_kwargs"] = {**identity["env_kwargs"], **parse_env_kwargs(args.env_kwarg)}
    if args.resume:
        refused = sorted(k for k, v in given.items() if v != identity[k])
        if refused:
            flags = ["--env-kwarg" if k == "env_kwargs" else f"--{k}" for k in refused]
            raise SystemExit(
                f"cannot change {flags} when resuming: "
                f"the checkpoint's run has {({k: identity[k] for k in refused})}; start a new run "
                "(another --out) to train with other settings")
    identity.update(given)
    run_values.update(_flag_values(args, RUN_FLAGS))
    if args.no_tensorboard:
        run_values["tensorboard"] = False
    try:
        run = RunConfig.from_dict(run_values).validate()
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"invalid run settings: {exc}") from None
    agent = identity["agent"]
    try:
        fields = config_class(agent).field_names()
        flags = rename_deprecated(_flag_values(args, [*_all_fields(), *RENAMED]), "flags")
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"invalid configuration: {exc}") from None
    foreign = sorted(f for f in flags if f not in fields)
    if foreign:
        raise SystemExit(
            f"--agent {agent} has no setting(s) {['--' + f.replace('_', '-') for f in foreign]}"
            f"; its settings: {', '.join(fields)}")
    try:
        checkpoint_config = (make_config(agent, checkpoint_values)
                             if checkpoint_values is not None else None)
        values.update(flags)
        config = make_config(agent, values)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"invalid configuration: {exc}") from None
    if checkpoint_config is not None:
        fixed = sorted(k for k in type(config).FIXED_ON_RESUME
                       if getattr(config, k) != getattr(checkpoint_config, k))
        if fixed:
            raise SystemExit(
                f"cannot change {['--' + k.replace('_', '-') for k in fixed]} when resuming (they "
                "shape the model, the optimizer state or the rollout stream); the checkpoint has "
                f"{ {k: getattr(checkpoint_config, k) for k in fixed} }; start a new run instead")
    return Settings(identity, run, config, checkpoint_config)


def run(args: argparse.Namespace, name: str) -> int:
    launch.check(args)
    if args.nproc > 1 and not launch.under_torchrun():
        return launch.launch(args.command_argv, args.nproc, args.dist_timeout)
    try:
        with distributed.session(args.dist_timeout):  # a no-op in one process
            settings = resolve_settings(args)
            if args.out:
                out = Path(args.out)
            elif args.resume:  # the run that holds the checkpoint: OUT/checkpoints/iter_N
                out = find_checkpoint(args.resume).parent.parent
            else:
                out = Path(f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
            out = Path(broadcast_object(str(out)))  # rank 0's clock names a new run
            with run_lock(out) if is_main() else contextlib.nullcontext():  # one writer
                return _train(args, settings, out)
    except (CheckpointError, RunLockedError, RankFailure) as exc:
        raise SystemExit(str(exc)) from None


def _train(args: argparse.Namespace, settings: Settings, out: Path) -> int:
    """``tokengym train`` in run directory ``out``, whose lock the caller holds."""
    identity, run_config, config = settings.identity, settings.run, settings.config
    agent_name, main = identity["agent"], is_main()
    if world_size() > 1 and (agent_name.startswith("sb3-") or not get_spec(agent_name).trainable):
        raise SystemExit(f"--agent {agent_name} does not train through tokengym's loop: run it "
                         "in one process (without --nproc or torchrun)")
    if main:
        atomic_write_json(out / "config.json", {**identity, "run": run_config.to_dict(),
                                                "config": config.to_dict()})
    if agent_name.startswith("sb3-"):
        return run_sb3(identity, config, out, run_config.iterations)

    tokenizer = load_tokenizer(identity["model"])
    lm = load_causal_lm(identity["model"], dtype=config.dtype,
                        device=None if config.device == "auto" else config.device)

    def make_envs(n: int) -> Any:
        return gym.make_vec(identity["env"], num_envs=n, vectorization_mode="vector_entry_point",
                            tokenizer=tokenizer, **identity["env_kwargs"])

    # A resumed agent is built as the checkpoint was, restored, then switched to `config`.
    built_with = settings.checkpoint_config or config
    # fsdp is how this run holds the weights, not what they are: a checkpoint's files are the
    # same with and without it, so a resumed run shards (or not) as asked now.
    settings_now = built_with.to_dict()
    if "fsdp" in settings_now:
        settings_now["fsdp"] = config.fsdp
    agent = make_agent(agent_name, make_envs(config.num_envs), lm, settings_now)
    if not get_spec(agent_name).trainable:
        return run_evaluation(agent, make_envs, out, run_config.num_samples)
    eval_envs = make_envs(run_config.num_samples) if run_config.num_samples and main else None
    before_path = out / "samples_before.json"
    # Rank 0 samples alone; every rank joins the block (with FSDP it gathers the weights).
    if broadcast_object(eval_envs is not None and not args.resume and not before_path.exists()):
        with gathered(agent.policy):
            if main:
                rollout, _ = agent.evaluate(eval_envs, seed=config.seed)
                atomic_write_json(before_path, sample_rows(rollout), indent=None)

    try:
        result = train_loop(agent, out, run_config, metadata=identity, resume_from=args.resume,
                            new_config=config if args.resume else None, log=tqdm.write)
    except NonFiniteError as exc:
        message, latest = f"stopped: {exc}", out / "checkpoints" / "LATEST"
        if main:
            message += f"\nthe last good checkpoint is {latest.parent / latest.read_text().strip()}" \
                if latest.is_file() else "\nno checkpoint was written"
        if world_size() > 1:  # an exception: the other ranks' messages then name this one
            raise SystemExit(message) from None
        print(message, file=sys.stderr)
        return 1
    if result.interrupted:
        if main:
            print(f"interrupted at iteration {agent.iteration}; resume with: tokengym train "
                  f"--resume {out} --iterations {run_config.iterations}")
        return 128 + int(result.signal)
    if broadcast_object(eval_envs is not None and before_path.exists()):
        with gathered(agent.policy):
            if main:
                rollout, _ = agent.evaluate(eval_envs, seed=config.seed)
                try:
                    before = read_json(before_path)
                    print(write_sample_table(out / "samples.md", before, sample_rows(rollout)))
                except (ValueError, TypeError, KeyError) as exc:  # for reading, not resuming
                    print(f"warning: no samples.md: {before_path} is not a sample list ({exc})",
                          file=sys.stderr)
    agent.policy.save_pretrained_policy(str(out / "model"), tokenizer)  # rank 0 writes
    if not main:
        return 0
    plots = plot_metrics(out / "metrics.jsonl", out / "plots")
    print(f"checkpoint: {result.checkpoint}\nplots: {plots[0] if plots else '-'}\n"
          f"model: {out / 'model'}")
    return 0
