"""``sb3-ppo`` / ``sb3-a2c``: Stable-Baselines3's own PPO and A2C, run by :func:`train_sb3`.

SB3 owns its rollout and update, so an :class:`SB3Agent` has no ``train_iteration``: it holds
the config and the policy LM and trains for a number of timesteps (tokens) on an env id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tokengym.agents.agent_config import ConfigMixin
from tokengym.agents.kl import KL_ESTIMATORS

SB3_ALGOS = ("ppo", "a2c")


@dataclass
class SB3Config(ConfigMixin):
    """Settings passed to :func:`~tokengym.agents.sb3.train_sb3` (SB3's own names in comments)."""

    # "ppo" or "a2c" (set from the agent name by the registry).
    algo: str = "ppo"
    # Seeds SB3 and the envs (sub-env i gets seed + i).
    seed: int = 0
    # Envs in SB3's DummyVecEnv (n_envs).
    num_envs: int = 1
    # Policy sampling temperature (and of the KL's distributions).
    temperature: float = 1.0
    # KL coefficient: > 0 wraps each env in KLPenaltyWrapper (per-token -beta * KL).
    beta: float = 0.05
    kl_estimator: str = "k1"
    # SB3 learning_rate.
    lr: float = 1e-5
    # SB3 n_steps: tokens per env between updates.
    n_steps: int = 64
    # PPO only: SB3 batch_size (minibatch, in tokens) and n_epochs.
    batch_size: int = 32
    epochs: int = 4
    # Discount and GAE lambda (SB3 gamma, gae_lambda).
    gamma: float = 1.0
    lam: float = 0.95

    def validate(self) -> SB3Config:
        self.check_types()
        if self.algo not in SB3_ALGOS:
            raise ValueError(f"algo={self.algo!r}; accepted: {SB3_ALGOS}")
        self._check_positive_ints("num_envs", "n_steps", "batch_size", "epochs")
        if self.temperature <= 0 or self.lr <= 0 or self.beta < 0:
            raise ValueError("temperature and lr must be > 0 and beta >= 0")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator={self.kl_estimator!r}; accepted: {KL_ESTIMATORS}")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        return self


class SB3Agent:
    """SB3 PPO/A2C with :class:`~tokengym.agents.sb3.LMActorCriticPolicy` on ``lm``."""

    def __init__(self, envs: Any, lm: torch.nn.Module | str, config: SB3Config) -> None:
        self.config = config.validate()
        self.lm = lm
        self.iteration = 0

    def algo_kwargs(self) -> dict[str, Any]:
        """SB3 keyword arguments from the config."""
        cfg = self.config
        kwargs: dict[str, Any] = {"n_steps": cfg.n_steps, "learning_rate": cfg.lr,
                                  "gamma": cfg.gamma, "gae_lambda": cfg.lam}
        if cfg.algo == "ppo":
            kwargs.update(batch_size=min(cfg.batch_size, cfg.n_steps * cfg.num_envs),
                          n_epochs=cfg.epochs)
        return kwargs

    def train(self, env_id: str, total_timesteps: int, env_kwargs: dict[str, Any] | None = None,
              out_dir: Any = None) -> tuple[Any, dict[str, Any]]:
        """Run :func:`train_sb3`; returns ``(sb3_model, metrics)``."""
        from tokengym.agents.sb3 import train_sb3  # lazy: sb3 imports stable-baselines3 (heavy)

        cfg = self.config
        return train_sb3(cfg.algo, env_id, model=self.lm, total_timesteps=total_timesteps,
                         seed=cfg.seed, out_dir=out_dir, env_kwargs=env_kwargs, beta=cfg.beta,
                         kl_estimator=cfg.kl_estimator, n_envs=cfg.num_envs,
                         temperature=cfg.temperature, **self.algo_kwargs())
