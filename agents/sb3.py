"""Stable-Baselines3 as a client of tokengym: a causal-LM actor-critic policy for SB3's PPO and A2C.

``LMActorCriticPolicy`` plugs a causal LM into SB3's unmodified on-policy algorithms::

    from stable_baselines3 import PPO
    model = PPO(LMActorCriticPolicy, env, policy_kwargs={"model": "tiny-llama"})

The actor is the LM's next-token distribution (``Categorical`` over ``action_space.n`` logits,
divided by ``temperature``) at the current position of the observation; the critic is a linear
value head on the LM's last hidden state at that position. SB3 stores observations and re-runs
the policy on every stored observation in its update: one full forward per token, no KV cache.
That cost is what this module exists to measure against tokengym's own PPO, so nothing here
changes how SB3 collects or learns.

:func:`train_sb3` builds the env (with :class:`~tokengym.agents.kl_wrapper.KLPenaltyWrapper`
when ``beta > 0``), trains, optionally saves, and returns the model with episode metrics.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import HumanOutputFormat, Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from tokengym.agents.kl_wrapper import KLPenaltyWrapper
from tokengym.agents.rollout import forward_kwarg_names
from tokengym.agents.sb3_agent import SB3_ALGOS  # defined with the config, which must not import SB3
from tokengym.fileio import atomic_write_json
from tokengym.models import load_causal_lm

_MODEL_TYPE_ERROR = "model must be a model name/path or a causal LM nn.Module, got {}"

# SB3's rollout buffers hold observations and actions as float32, exact for integers < 2**24.
_FLOAT32_EXACT = 2**24


class TokenIdsExtractor(BaseFeaturesExtractor):
    """SB3 "features extractor" that undoes SB3's float conversion instead of one-hot/flattening.

    SB3 hands the policy ``{"input_ids": (N, L), "attention_mask": (N, L)}`` as int64 while
    collecting and as float32 (from its rollout buffer) while learning; this returns ``(N, 2, L)``
    int64: row 0 the token ids, row 1 the attention mask. It has no parameters.
    """

    def __init__(self, observation_space: spaces.Dict) -> None:
        super().__init__(observation_space, features_dim=int(observation_space["input_ids"].shape[0]))

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        parts = []
        for key in ("input_ids", "attention_mask"):
            x = observations[key]
            parts.append(x.round().long() if x.is_floating_point() else x.long())
        return torch.stack(parts, dim=1)


_OBS_KEYS = {"input_ids", "attention_mask"}


def _check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    if not isinstance(action_space, spaces.Discrete):
        raise TypeError(f"LMActorCriticPolicy needs a Discrete action space (token ids), got {action_space}")
    # Multi-turn envs add agent_mask: the policy reads the last real token whoever wrote it (the
    # env's inserted tokens included), and SB3 acts, stores and learns on agent tokens only.
    if not (isinstance(observation_space, spaces.Dict)
            and set(observation_space.spaces) in (_OBS_KEYS, _OBS_KEYS | {"agent_mask"})):
        raise TypeError("LMActorCriticPolicy needs a tokengym observation space: Dict(input_ids=Box, "
                        f"attention_mask=Box[, agent_mask=Box]), got {observation_space}")
    shapes = {k: s.shape for k, s in observation_space.spaces.items()}
    if len(set(shapes.values())) != 1 or len(shapes["input_ids"]) != 1:
        raise TypeError(f"input_ids, attention_mask (and agent_mask) must be 1-D of the same length, "
                        f"got {shapes}")
    if int(action_space.n) > _FLOAT32_EXACT:
        raise ValueError(f"vocabulary of {action_space.n} tokens: SB3 stores token ids as float32, "
                         f"exact only below {_FLOAT32_EXACT}")


class LMActorCriticPolicy(ActorCriticPolicy):
    """SB3 actor-critic policy whose actor is a causal LM and whose critic is a value head.

    Args (``policy_kwargs``, besides SB3's own):
        model: a tokengym model name / hub id / path (loaded with
            :func:`~tokengym.models.load_causal_lm`) or a loaded causal LM ``nn.Module``.
            Prefer a name: SB3's ``save`` pickles ``policy_kwargs``.
        temperature: the actor samples from ``softmax(logits / temperature)`` (> 0).
        model_kwargs: extra arguments for ``load_causal_lm`` (e.g. ``{"dtype": "bf16"}``).

    SB3's ``net_arch``, ``activation_fn`` and ``ortho_init`` have no meaning here and are ignored
    (orthogonal re-initialisation would erase the LM's weights). The optimiser is SB3's
    ``optimizer_class(lm + value head parameters, lr=lr_schedule(1), **optimizer_kwargs)``.
    The LM stays in eval mode (dropout off) in rollout and update alike, so the update's log-probs
    are those of the distribution that was sampled (tokengym's own PPO does the same).

    Multi-turn envs (observations with ``agent_mask``) are accepted: one SB3 step is one agent
    token and the env's inserted tokens are context in the next observation, so SB3's loss, values
    and entropy are on agent tokens only; wrap such envs in :class:`LimitsEndEpisodes` (as
    :func:`train_sb3` does) so that an episode cut at the env's limits is not bootstrapped.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *,
        model: str | nn.Module = "tiny-llama",
        temperature: float = 1.0,
        model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        _check_spaces(observation_space, action_space)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
        if not isinstance(model, (str, nn.Module)):
            raise TypeError(_MODEL_TYPE_ERROR.format(type(model).__name__))
        fe_class = kwargs.pop("features_extractor_class", TokenIdsExtractor)
        if fe_class is not TokenIdsExtractor:
            raise ValueError("LMActorCriticPolicy extracts token ids itself: no features_extractor_class")
        if kwargs.get("use_sde", False):
            raise ValueError("use_sde=True is for continuous actions; token actions are Discrete")
        if not kwargs.pop("share_features_extractor", True):
            raise ValueError("share_features_extractor=False is not supported: actor and critic share the LM")
        # nn.Module.__init__ has not run yet: a module can only be stashed inside a container here.
        self._model_arg = (model,)
        self.temperature = float(temperature)
        self.model_kwargs = dict(model_kwargs or {})
        super().__init__(observation_space, action_space, lr_schedule,
                         features_extractor_class=TokenIdsExtractor, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        """Load the LM, add the value head, create the optimiser (replaces SB3's MLP build)."""
        model = self._model_arg[0]
        lm = load_causal_lm(model, device="cpu", **self.model_kwargs) if isinstance(model, str) else model
        vocab = getattr(getattr(lm, "config", None), "vocab_size", None)
        if vocab is None:
            raise TypeError("model must be a transformers causal LM (with a config.vocab_size)")
        if vocab < self.action_space.n:
            raise ValueError(f"the model's vocabulary ({vocab}) is smaller than the action space "
                             f"({self.action_space.n}): use the env's tokenizer's model")
        self.lm = lm.eval()
        param = next(lm.parameters())
        hidden = int(lm.config.hidden_size)
        self.value_net = nn.Linear(hidden, 1).to(device=param.device, dtype=param.dtype)
        with torch.no_grad():
            # Small weights, zero bias: initial values ~0 (SB3's seed fixes the draw).
            nn.init.normal_(self.value_net.weight, std=0.1 / hidden**0.5)
            self.value_net.bias.zero_()
        import transformers.modeling_utils as tmu

        # transformers >= 5 accepts logits_to_keep as an (N, k) tensor of per-row positions.
        self._per_row_keep = (forward_kwarg_names(lm)[1] == "logits_to_keep"
                              and hasattr(tmu, "slice_logits_to_keep"))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(model=self._model_arg[0], temperature=self.temperature, model_kwargs=self.model_kwargs)
        return data

    def set_training_mode(self, mode: bool) -> None:
        """SB3 toggles train/eval around updates; the LM keeps dropout off either way."""
        super().set_training_mode(mode)
        self.lm.eval()

    def extract_features(  # type: ignore[override]
        self, obs: dict[str, torch.Tensor], features_extractor: BaseFeaturesExtractor | None = None
    ) -> torch.Tensor:
        """``(N, 2, L)`` int64 ids and mask; bypasses SB3's ``preprocess_obs`` (float/one-hot)."""
        return self.features_extractor(obs)

    def lm_forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One LM forward over a batch of observations.

        Args:
            obs: ``input_ids`` and ``attention_mask``, each ``(N, L)`` (int or float).

        Returns:
            ``(logits (N, n) float32, already divided by the temperature; values (N, 1))`` at
            each row's last real token (column ``P - 1 + generated``). The value of a full
            observation (``G`` tokens generated: no action is left) is 0, so SB3's bootstrap at a
            ``max_new_tokens`` truncation adds nothing.
        """
        features = self.extract_features(obs)
        ids, mask = features[:, 0], features[:, 1]
        length = ids.shape[1]
        cols = torch.arange(length, device=ids.device)
        last = (mask * cols).argmax(-1)  # (N,) column of the last real token
        rows = torch.arange(ids.shape[0], device=ids.device)
        # Causal attention: columns after the furthest last token cannot change what we read.
        width = int(last.max()) + 1
        ids, mask = ids[:, :width], mask[:, :width]
        kwargs: dict[str, Any] = {}
        if self._per_row_keep:
            kwargs["logits_to_keep"] = last[:, None]  # only (N, 1, V) logits, not (N, L, V)
        out = self.lm(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                      use_cache=False, output_hidden_states=True, **kwargs)
        logits = out.logits[:, 0] if self._per_row_keep else out.logits[rows, last]
        logits = logits[:, : self.action_space.n].float() / self.temperature
        hidden = out.hidden_states[-1][rows, last]
        values = self.value_net(hidden).float() * (last < length - 1).unsqueeze(-1)
        return logits, values

    def _dist(self, logits: torch.Tensor) -> Distribution:
        return self.action_dist.proba_distribution(action_logits=logits)

    def forward(  # type: ignore[override]
        self, obs: dict[str, torch.Tensor], deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(actions (N,), values (N, 1), log_prob (N,))``; deterministic = argmax."""
        logits, values = self.lm_forward(obs)
        dist = self._dist(logits)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values, dist.log_prob(actions)

    def evaluate_actions(  # type: ignore[override]
        self, obs: dict[str, torch.Tensor], actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(values (N, 1), log_prob (N,), entropy (N,))`` of ``actions`` ``(N,)``."""
        logits, values = self.lm_forward(obs)
        dist = self._dist(logits)
        return values, dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs: dict[str, torch.Tensor]) -> Distribution:  # type: ignore[override]
        return self._dist(self.lm_forward(obs)[0])

    def predict_values(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return self.lm_forward(obs)[1]


class LimitsEndEpisodes(gym.Wrapper):
    """Reports a multi-turn episode's truncation (``max_turns``, ``max_new_tokens``,
    ``max_episode_tokens``) as termination, so SB3 does not bootstrap from its last observation.

    SB3 adds ``gamma * V(last observation)`` to the reward of a truncated episode, as if it went
    on; a tokengym episode cut by a limit does not (its return is what it got). Single-turn
    episodes need no wrapper: they are truncated only with a full observation, whose value the
    policy makes 0. :func:`train_sb3` wraps multi-turn envs in it.
    """

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, bool(terminated or truncated), False, info


def _sb3_wrapper(env: gym.Env, kl_kwargs: dict[str, Any] | None = None) -> gym.Env:
    """``make_vec_env``'s ``wrapper_class``: :class:`KLPenaltyWrapper` when ``kl_kwargs``, and
    :class:`LimitsEndEpisodes` for multi-turn envs (their observation has ``agent_mask``)."""
    if kl_kwargs is not None:
        env = KLPenaltyWrapper(env, **kl_kwargs)
    if "agent_mask" in getattr(env.observation_space, "spaces", {}):
        env = LimitsEndEpisodes(env)
    return env


def _find_wrapper(env: gym.Env, cls: type) -> Any:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, cls):
            return env
        env = env.env
    return env if isinstance(env, cls) else None


def _stdout_logger(verbose: int) -> Logger:
    """SB3's logger without a folder: its progress table on stdout when ``verbose``, else nothing.

    Left to itself, ``learn()`` calls SB3's ``configure(None, ...)``, which creates an empty
    ``$TMPDIR/SB3-<date>`` folder (or ``$SB3_LOGDIR``) on every run even when it writes nothing
    there. A custom logger skips that; the run's results go to ``out_dir`` (``metrics.json``).
    """
    return Logger(folder=None, output_formats=[HumanOutputFormat(sys.stdout)] if verbose >= 1 else [])


def train_sb3(
    algo: str, env_id: str, *, model: str | nn.Module = "tiny-llama", total_timesteps: int, seed: int = 0,
    out_dir: str | Path | None = None, env_kwargs: dict[str, Any] | None = None, beta: float = 0.0,
    kl_estimator: str = "k1", n_envs: int = 1, temperature: float = 1.0,
    policy_kwargs: dict[str, Any] | None = None, verbose: int = 0, **algo_kwargs: Any,
) -> tuple[PPO | A2C, dict[str, Any]]:
    """Train SB3's ``PPO`` or ``A2C`` with :class:`LMActorCriticPolicy` on a tokengym env.

    Args:
        algo: ``"ppo"`` or ``"a2c"``.
        env_id: a registered env id (``"tokengym/Sentiment-v0"``, ``"tokengym/TextGen-v0"``).
        model: the policy LM (name or module); the env's tokenizer defaults to it when a name.
        total_timesteps: SB3's budget, in tokens (one step = one token).
        seed: seeds SB3 (torch, numpy, action space) and the envs (sub-env i gets ``seed + i``).
        out_dir: when given, saves ``sb3_<algo>.zip`` (SB3 format) and ``metrics.json`` there.
        env_kwargs: keywords for ``gymnasium.make(env_id, ...)``.
        beta: KL coefficient; > 0 wraps each env in ``KLPenaltyWrapper`` with a frozen copy of the
            starting model as reference and the trained LM as policy.
        kl_estimator: ``"k1"`` or ``"k3"`` (with ``beta > 0``).
        n_envs: number of envs in SB3's ``DummyVecEnv``.
        temperature: sampling temperature of the policy (and of the KL's distributions).
        policy_kwargs: more ``LMActorCriticPolicy``/SB3 policy keywords.
        **algo_kwargs: SB3 algorithm keywords (``n_steps``, ``batch_size``, ``learning_rate``...).

    Returns:
        ``(sb3_model, metrics)``; metrics: ``episode_rewards`` (env scores, unshaped, in the order
        the episodes ended), ``episode_lengths``, ``mean_episode_reward``, ``episode_kls`` (summed
        per episode, with ``beta > 0``), ``seconds``, ``steps_per_second``.
    """
    algos = {"ppo": PPO, "a2c": A2C}
    if algo not in algos:
        raise ValueError(f"algo={algo!r}; accepted: {SB3_ALGOS}")
    if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int) or total_timesteps < 1:
        raise ValueError(f"total_timesteps must be a positive integer, got {total_timesteps!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")
    kwargs = dict(env_kwargs or {})
    if isinstance(model, str):
        kwargs.setdefault("tokenizer", model)
    wrapper_kwargs = None
    if beta > 0:
        if isinstance(model, str):
            reference = load_causal_lm(model, device="cpu")
        elif isinstance(model, nn.Module):
            reference = copy.deepcopy(model).requires_grad_(False).eval()
        else:
            raise TypeError(_MODEL_TYPE_ERROR.format(type(model).__name__))
        wrapper_kwargs = {"reference": reference, "beta": float(beta), "kl_estimator": kl_estimator,
                          "temperature": temperature}
    vec_env = make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=kwargs,
                           wrapper_kwargs={"kl_kwargs": wrapper_kwargs}, wrapper_class=_sb3_wrapper)
    pkw = {"model": model, "temperature": temperature, **dict(policy_kwargs or {})}
    sb3_model = algos[algo](LMActorCriticPolicy, vec_env, policy_kwargs=pkw, seed=seed, verbose=verbose,
                            **algo_kwargs)
    sb3_model.set_logger(_stdout_logger(verbose))
    wrappers = [_find_wrapper(e, KLPenaltyWrapper) for e in vec_env.envs] if beta > 0 else []
    for w in wrappers:
        # The KL needs log pi under the weights being trained: share them with the wrapper.
        w.set_policy(sb3_model.policy.lm)
        w.reference.to(sb3_model.device)
    start = time.perf_counter()
    sb3_model.learn(total_timesteps=total_timesteps)
    seconds = time.perf_counter() - start
    monitors = [_find_wrapper(e, Monitor) for e in vec_env.envs]
    # (end time, score, length) of every episode of every env, in the order they finished.
    episodes = sorted((t, float(r), int(n)) for m in monitors for t, r, n in
                      zip(m.get_episode_times(), m.get_episode_rewards(), m.get_episode_lengths()))
    rewards = [r for _, r, _ in episodes]
    metrics: dict[str, Any] = {
        "algo": algo, "env_id": env_id, "total_timesteps": int(sb3_model.num_timesteps),
        "episode_rewards": rewards, "episode_lengths": [n for _, _, n in episodes],
        "mean_episode_reward": float(np.mean(rewards)) if rewards else float("nan"),
        "episode_kls": [float(k) for w in wrappers for k in w.episode_kls],
        "seconds": seconds, "steps_per_second": sb3_model.num_timesteps / max(seconds, 1e-9),
    }
    if out_dir is not None:
        path = Path(out_dir)
        path.mkdir(parents=True, exist_ok=True)
        sb3_model.save(path / f"sb3_{algo}.zip")
        atomic_write_json(path / "metrics.json", metrics, indent=2)
    return sb3_model, metrics

