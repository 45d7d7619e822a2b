"""``tokengym train``: train an agent on a tokengym env, with logs, checkpoints and resume.

``--agent`` is any name of :data:`tokengym.agents.registry.AGENTS` (default ``ppo``). Every field
of every agent's config dataclass is a flag (``--num-envs 16``, ``--adaptive-kl``/
``--no-adaptive-kl``) and a key of the ``--config`` TOML file; a flag the chosen agent's config
lacks is an error. Flags win over the file, the file over the defaults. The TOML file may also set
``env``, ``model``, ``agent``, ``iterations`` and an ``[env_kwargs]`` table. See ``docs/ppo.md``
and ``docs/agents.md``. Agents that do not train (``sample``, ``greedy``, ``best-of-n``) evaluate
once and write ``metrics.json`` and ``samples.md``; ``sb3-ppo``/``sb3-a2c`` run SB3 for
``iterations x n_steps x num_envs`` timesteps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any

from tokengym.agents.ppo_config import PPOConfig
from tokengym.agents.registry import AGENTS, config_class, make_config
from tokengym.models import DEFAULT_MODEL

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: no TOML reader in the standard library
    tomllib = None  # type: ignore[assignment]

RUN_KEYS = ("env", "model", "agent", "iterations", "env_kwargs")
DEFAULTS = {"env": "tokengym/Sentiment-v0", "model": DEFAULT_MODEL, "agent": "ppo",
            "iterations": 20, "env_kwargs": {}}


def _config_classes() -> list[type]:
    """PPOConfig first (its flags keep their order), then every other agent's config."""
    out: list[type] = [PPOConfig]
    for name in AGENTS:
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


def _field_type(cls: type, f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "null", "") else float(text)


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--env", help=f"env id (default {DEFAULTS['env']})")
    parser.add_argument("--agent", choices=list(AGENTS), help="agent (default ppo; see "
                        "docs/agents.md)")
    parser.add_argument("--model", help=f"policy name, hub id or path (default {DEFAULT_MODEL})")
    parser.add_argument("--iterations", type=int, help="total iterations to reach (default 20)")
    parser.add_argument("--out", help="run directory (default runs/<time>; --resume: that run)")
    parser.add_argument("--config", help="TOML file of PPOConfig fields and run keys")
    parser.add_argument("--resume", metavar="DIR", help="continue the run (or checkpoint) in DIR")
    parser.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                        help="gym.make keyword for the env (VALUE parsed as JSON when it can be)")
    parser.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")
    group = parser.add_argument_group(
        "agent config fields (PPOConfig: docs/ppo.md; the others: docs/agents.md)")
    for cls, f in _all_fields().values():
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(cls, f)
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS)
        elif f.name == "no_stop_penalty":
            group.add_argument(flag, type=_optional_float, default=argparse.SUPPRESS,
                               metavar="FLOAT|none")
        else:
            group.add_argument(flag, type=kind, default=argparse.SUPPRESS,
                               metavar=kind.__name__.upper())


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


def resolve_settings(
    args: argparse.Namespace,
) -> tuple[dict[str, Any], Any, dict[str, Any] | None]:
    """Merge defaults < (checkpoint | TOML) < flags into ``(run settings, config, ckpt info)``."""
    from tokengym.agents.checkpoint import read_checkpoint_info

    run = dict(DEFAULTS)
    values: dict[str, Any] = {}
    info = None
    if args.resume:
        info = read_checkpoint_info(args.resume)
        values.update(info["config"])
        run.update({k: v for k, v in info["metadata"].items() if k in RUN_KEYS})
    elif args.config:
        if tomllib is None:
            raise SystemExit("--config needs Python >= 3.11 (tomllib); pass the fields as flags")
        try:
            data = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"--config {args.config}: {exc}") from None
        run.update({k: data.pop(k) for k in RUN_KEYS if k in data})
        values.update(data)
    for key in ("env", "model", "agent", "iterations"):
        if getattr(args, key) is not None:
            run[key] = getattr(args, key)
    run["env_kwargs"] = {**run["env_kwargs"], **parse_env_kwargs(args.env_kwarg)}
    fields = config_class(run["agent"]).field_names()
    flags = {f: getattr(args, f) for f in _all_fields() if hasattr(args, f)}
    foreign = sorted(f for f in flags if f not in fields)
    if foreign:
        raise SystemExit(
            f"--agent {run['agent']} has no setting(s) {['--' + f.replace('_', '-') for f in foreign]}"
            f"; its settings: {', '.join(fields)}")
    values.update(flags)
    try:
        config = make_config(run["agent"], values)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"invalid configuration: {exc}") from None
    return run, config, info


def run(args: argparse.Namespace, name: str) -> int:
    import gymnasium as gym
    from tqdm import tqdm

    import tokengym  # noqa: F401  (registers the env ids)
    from tokengym.agents.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
    from tokengym.agents.logging import MetricsLogger, plot_metrics, sample_rows, write_sample_table
    from tokengym.agents.registry import make_agent
    from tokengym.models import load_causal_lm, load_tokenizer

    settings, config, info = resolve_settings(args)
    if args.out:
        out = Path(args.out)
    elif args.resume:  # the run that holds the checkpoint: OUT/checkpoints/iter_N
        out = find_checkpoint(args.resume).parent.parent
    else:
        out = Path(f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    iterations = int(settings["iterations"])
    agent_name = settings["agent"]
    metadata = {k: settings[k] for k in RUN_KEYS}
    (out / "config.json").write_text(json.dumps({**metadata, "config": config.to_dict()}, indent=1),
                                     encoding="utf-8")
    if agent_name.startswith("sb3-"):
        return _run_sb3(settings, config, out, iterations)

    tokenizer = load_tokenizer(settings["model"])
    lm = load_causal_lm(settings["model"], dtype=config.dtype,
                        device=None if config.device == "auto" else config.device)

    def make_envs(n: int) -> Any:
        return gym.make_vec(settings["env"], num_envs=n, vectorization_mode="vector_entry_point",
                            tokenizer=tokenizer, **settings["env_kwargs"])

    agent = make_agent(agent_name, make_envs(config.num_envs), lm, config.to_dict())
    if not AGENTS[agent_name].trainable:
        return _run_evaluation(agent, make_envs, out)
    if info is not None:
        load_checkpoint(args.resume, agent)
    logger = MetricsLogger(out, tensorboard=not args.no_tensorboard,
                           start_iteration=agent.iteration)
    eval_envs = make_envs(config.num_samples) if config.num_samples else None
    before_path = out / "samples_before.json"
    if eval_envs is not None and not before_path.exists():
        rollout, _ = agent.evaluate(eval_envs, seed=config.seed)
        before_path.write_text(json.dumps(sample_rows(rollout)), encoding="utf-8")

    # Ctrl-C: finish the current iteration, checkpoint, exit (a second Ctrl-C aborts at once).
    stop = {"requested": False}

    def on_sigint(signum: int, frame: Any) -> None:
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        tqdm.write("Ctrl-C: checkpointing after this iteration (press again to abort now)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    ckpt_root = out / "checkpoints"
    try:
        bar = tqdm(total=iterations, initial=agent.iteration, desc=agent_name, unit="it",
                   file=sys.stderr)
        while agent.iteration < iterations and not stop["requested"]:
            record = agent.train_iteration()
            logger.log(record)
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward_mean']:+.3f}", kl=f"{record['kl_mean']:.2f}",
                            beta=f"{record['beta']:.3g}")
            if agent.iteration % config.checkpoint_every == 0:
                save_checkpoint(ckpt_root, agent, metadata, keep=config.keep_checkpoints)
        bar.close()
    finally:
        signal.signal(signal.SIGINT, previous)
        logger.close()
    ckpt = save_checkpoint(ckpt_root, agent, metadata, keep=config.keep_checkpoints)
    if stop["requested"]:
        print(f"interrupted at iteration {agent.iteration}; resume with: tokengym train "
              f"--resume {out} --iterations {iterations}")
        return 130

    plots = plot_metrics(out / "metrics.jsonl", out / "plots")
    if eval_envs is not None:
        rollout, _ = agent.evaluate(eval_envs, seed=config.seed)
        before = json.loads(before_path.read_text(encoding="utf-8"))
        table = write_sample_table(out / "samples.md", before, sample_rows(rollout))
        print(table)
    agent.policy.save_pretrained_policy(str(out / "model"), tokenizer)
    print(f"checkpoint: {ckpt}\nplots: {plots[0] if plots else '-'}\nmodel: {out / 'model'}")
    return 0


def _run_evaluation(agent: Any, make_envs: Any, out: Path) -> int:
    """Agents that do not train: one evaluation rollout; ``metrics.json`` and ``samples.md``."""
    from tokengym.agents.logging import sample_rows

    config = agent.config
    rollout, metrics = agent.evaluate(make_envs(config.num_envs), seed=config.seed)
    rows = sample_rows(rollout)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    (out / "samples.json").write_text(json.dumps(rows), encoding="utf-8")
    lines = ["| prompt | completion | reward |", "|---|---|---|"]
    for row in rows[: max(config.num_samples, 1)]:
        cells = [str(row[k]).replace("\n", " ").replace("|", "\\|")[:160]
                 for k in ("prompt", "completion")]
        lines.append(f"| {cells[0]} | {cells[1]} | {row['reward']:+.3f} |")
    (out / "samples.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(json.dumps(metrics, indent=1))
    print(f"{type(agent).__name__} does not train: evaluated once; metrics: {out / 'metrics.json'}")
    return 0


def _run_sb3(settings: dict[str, Any], config: Any, out: Path, iterations: int) -> int:
    """SB3 PPO/A2C: ``iterations`` SB3 rollouts of ``n_steps`` tokens per env."""
    from tokengym.agents.registry import make_agent

    agent = make_agent(settings["agent"], None, settings["model"], config.to_dict())
    timesteps = iterations * config.n_steps * config.num_envs
    _, metrics = agent.train(settings["env"], timesteps, env_kwargs=dict(settings["env_kwargs"]),
                             out_dir=out)
    print(f"{settings['agent']}: {metrics['total_timesteps']} steps in {metrics['seconds']:.1f} s "
          f"({metrics['steps_per_second']:.1f} steps/s), mean episode reward "
          f"{metrics['mean_episode_reward']:+.3f}; metrics: {out / 'metrics.json'}")
    return 0
