"""``tokengym train`` for the agents that do not train through the run loop
(:func:`tokengym.agents.loop.train_loop`): the inference-time agents (``sample``, ``greedy``,
``best-of-n``), which evaluate once, and SB3's own PPO/A2C, which train in SB3's loop. Both run
in one process only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokengym.agents.logging import sample_rows
from tokengym.agents.registry import make_agent
from tokengym.fileio import atomic_write_json, atomic_write_text


def run_evaluation(agent: Any, make_envs: Any, out: Path, num_samples: int) -> int:
    """Agents that do not train: one evaluation rollout; ``metrics.json`` and ``samples.md``."""
    config = agent.config
    rollout, metrics = agent.evaluate(make_envs(config.num_envs), seed=config.seed)
    rows = sample_rows(rollout)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "samples.json", rows, indent=None)
    lines = ["| prompt | completion | reward |", "|---|---|---|"]
    for row in rows[: max(num_samples, 1)]:
        cells = [str(row[k]).replace("\n", " ").replace("|", "\\|")[:160]
                 for k in ("prompt", "completion")]
        lines.append(f"| {cells[0]} | {cells[1]} | {row['reward']:+.3f} |")
    atomic_write_text(out / "samples.md", "\n".join(lines) + "\n")
    print(json.dumps(metrics, indent=1))
    print(f"{type(agent).__name__} does not train: evaluated once; metrics: {out / 'metrics.json'}")
    return 0


def run_sb3(identity: dict[str, Any], config: Any, out: Path, iterations: int) -> int:
    """SB3 PPO/A2C: ``iterations`` SB3 rollouts of ``n_steps`` tokens per env."""
    agent = make_agent(identity["agent"], None, identity["model"], config.to_dict())
    timesteps = iterations * config.n_steps * config.num_envs
    _, metrics = agent.train(identity["env"], timesteps, env_kwargs=dict(identity["env_kwargs"]),
                             out_dir=out)
    print(f"{identity['agent']}: {metrics['total_timesteps']} steps in {metrics['seconds']:.1f} s "
          f"({metrics['steps_per_second']:.1f} steps/s), mean episode reward "
          f"{metrics['mean_episode_reward']:+.3f}; metrics: {out / 'metrics.json'}")
    return 0
