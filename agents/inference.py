"""Inference-time baselines that do not train: ``sample``, ``greedy`` and ``best-of-n``.

- ``sample``: the untrained policy sampled at ``temperature`` (the "zero-shot" row);
- ``greedy``: the untrained policy decoded greedily (temperature 0);
- ``best-of-n``: N samples of each prompt through the env (rows grouped by
  :class:`~tokengym.agents.groups.PromptGroups`), the best by reward kept.

What each reports as its KL to the reference (the untrained policy), in nats per episode:

- ``sample`` IS the reference (at its temperature): ``kl_mean = 0`` by construction, exactly
  (as are ``kl_token_mean`` and ``kl_k1_mean``).
- ``greedy`` is a deterministic policy, a point mass on one completion y per prompt, so its
  exact KL to the reference as a distribution over completions is the sequence-level
  KL(delta_y || ref) = -log ref(y): the summed negative reference log-probability of its tokens,
  at temperature 1 (the reference's own distribution). The per-token KL of a point mass is not
  what "exact" means here; this sequence-level value is. ``kl_k1_mean`` equals it (the log-ratio
  of a point mass at its only outcome is exact).
- ``best-of-n`` reports two numbers (Beirami et al. 2024, "Theoretical guarantees on the
  best-of-n alignment policy", arXiv:2401.01879):

  - ``kl_bound``: ``log N - (N - 1) / N`` (Stiennon et al. 2020), which Beirami et al. show is
    an upper bound on KL(best-of-n || ref), exact only when no outcome has positive probability
    (no ties among the N samples);
  - ``kl_mean``: their estimator (Section 4, "Proposed Estimator for KL Divergence"), the mean
    over prompts of d_N(eps), eps = ref(y*|x), the reference probability (at the sampling
    temperature) of the chosen completion y*, from the sampled log-probs (no extra forward):

        d_N(eps) = (1 - eps)^N [log N + (N - 1) log(1 - eps) - (N - 1)/N]
                   + (1 - (1 - eps)^N) log((1 - (1 - eps)^N) / eps)

    d_N(eps) is the exact KL(best-of-N || ref) of a prompt whose best outcome has reference
    probability eps and whose other outcomes have no atoms (distinct rewards): the atom is chosen
    with probability 1 - (1 - eps)^N, the rest has density N F^(N-1) with F its reward CDF. It is
    <= ``kl_bound``, tends to it as eps -> 0 (long, diverse completions) and to 0 as eps -> 1
    (the same completion every time). It does not count ties between different completions of
    equal reward.

``train_iteration`` raises ``TypeError``: these agents only ``evaluate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from tokengym.agents.agent_config import DTYPES, ConfigMixin
from tokengym.agents.batch import agent_columns
from tokengym.agents.groups import PromptGroups, group_view, select_rows
from tokengym.agents.policy import ActorCritic
from tokengym.agents.rollout import Rollout, collect_rollout


@dataclass
class SampleConfig(ConfigMixin):
    """Settings of :class:`SampleAgent` (names as in :class:`PPOConfig`)."""

    # Seeds the sampling generator.
    seed: int = 0
    # Rows of the vector env = episodes per evaluation.
    num_envs: int = 16
    # Sampling temperature (0 = greedy).
    temperature: float = 1.0
    # Parameter dtype and device ("auto": CUDA when available).
    dtype: str = "float32"
    device: str = "auto"
    # The compiled static-cache decode path (PGConfig.compile); None = on CUDA only.
    compile: bool | None = None

    def validate(self) -> Any:
        self.check_types()
        self._check_positive_ints("num_envs")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; accepted: {DTYPES}")
        return self


@dataclass
class GreedyConfig(SampleConfig):
    """Settings of :class:`GreedyAgent`: temperature is fixed at 0 (argmax decoding)."""

    temperature: float = 0.0

    def validate(self) -> GreedyConfig:
        super().validate()
        if self.temperature != 0:
            raise ValueError(f"greedy decodes at temperature 0, got {self.temperature}; "
                             "use --agent sample for a temperature > 0")
        return self


@dataclass
class BestOfNConfig(SampleConfig):
    """Settings of :class:`BestOfNAgent`."""

    # N: samples of each prompt; num_envs = prompts x N (one best sample kept per prompt).
    samples_per_prompt: int = 4

    def validate(self) -> BestOfNConfig:
        super().validate()
        self._check_groups("samples_per_prompt", 1)
        if self.temperature == 0 and self.samples_per_prompt > 1:
            raise ValueError("best-of-n at temperature 0 draws N identical samples; use > 0")
        return self


def best_of_n_kl(n: int) -> float:
    """The analytic ``log N - (N - 1) / N`` (nats): an upper bound on KL(best-of-n || policy)."""
    return math.log(n) - (n - 1) / n


def best_of_n_kl_estimate(n: int, log_eps: float) -> float:
    """Beirami et al.'s estimate d_N(eps) of KL(best-of-n || policy) for one prompt (nats).

    ``log_eps``: log ref(y*|x) of the chosen completion (module docstring). Computed in log space
    (``log1p``/``expm1``): completions' probabilities are often far below float precision, where
    d_N(eps) is the bound itself. Always in ``[0, best_of_n_kl(n)]``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    bound = best_of_n_kl(n)
    log_eps = min(float(log_eps), 0.0)
    eps = math.exp(log_eps)
    if n == 1 or eps >= 1.0:
        return 0.0
    if eps < 1e-300:  # (1 - eps)^N == 1 in floating point: the eps -> 0 limit
        return bound
    log_keep = n * math.log1p(-eps)  # log (1 - eps)^N: y* is not among the N samples
    keep, chosen = math.exp(log_keep), -math.expm1(log_keep)
    rest = keep * (math.log(n) + (n - 1) * math.log1p(-eps) - (n - 1) / n) if keep > 0 else 0.0
    return min(max(rest + chosen * (math.log(chosen) - log_eps), 0.0), bound)


class SampleAgent:
    """The untrained policy, evaluated only (see the module docstring)."""

    group_size = 1

    def __init__(self, envs: Any, lm: ActorCritic | torch.nn.Module, config: Any) -> None:
        self.config = config.validate()
        if envs is not None and envs.num_envs != config.num_envs:
            raise ValueError(f"the env has num_envs={envs.num_envs} but config.num_envs="
                             f"{config.num_envs}")
        self.envs = envs
        self.policy = lm if isinstance(lm, ActorCritic) else ActorCritic(lm, seed=config.seed)
        self.sample_generator = torch.Generator(device=self.policy.device).manual_seed(config.seed)
        self.iteration = 0

    def train_iteration(self) -> dict[str, Any]:
        raise TypeError(f"{type(self).__name__} does not train (an inference-time baseline); "
                        "call evaluate(envs, seed) instead")

    def _rollout(self, envs: Any, seed: int) -> Rollout:
        if self.group_size > 1 and not isinstance(envs, PromptGroups):
            envs = PromptGroups(envs, self.group_size)
        saved = self.sample_generator.get_state()
        self.sample_generator.manual_seed(seed)
        try:
            return collect_rollout(envs, self.policy.lm, seed=seed,
                                   temperature=self.config.temperature,
                                   generator=self.sample_generator,
                                   compile=self.config.compile)
        finally:
            self.sample_generator.set_state(saved)

    @torch.no_grad()
    def evaluate(self, envs: Any = None, seed: int = 12345) -> tuple[Rollout, dict[str, float]]:
        """``(rollout, {"reward_mean", "kl_mean", "kl_token_mean", ...})`` of one rollout."""
        rollout = self._rollout(self.envs if envs is None else envs, seed)
        tokens = int(rollout.lengths.sum())
        # The sampled policy is the reference: every KL is 0 by construction.
        return rollout, {"reward_mean": float(rollout.rewards.mean()), "kl_mean": 0.0,
                         "kl_token_mean": 0.0, "kl_k1_mean": 0.0, "tokens": tokens,
                         "episode_length_mean": float(rollout.lengths.float().mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration,
                "sample_generator": self.sample_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.sample_generator.set_state(state["sample_generator"])


class GreedyAgent(SampleAgent):
    """The untrained policy, greedy decoding; KL per episode = -log ref(completion)."""

    @torch.no_grad()
    def evaluate(self, envs: Any = None, seed: int = 12345) -> tuple[Rollout, dict[str, float]]:
        envs = self.envs if envs is None else envs
        rollout, metrics = super().evaluate(envs, seed)
        ids, mask = rollout.sequences()
        device = self.policy.device
        agent = rollout.sequence_agent_mask()  # multi-turn: the agent's tokens only
        columns = None if agent is None else agent_columns(agent, rollout.tokens.shape[1])
        # Temperature 1: the reference's own distribution, which greedy decoding departs from.
        ref_logp = self.policy.reference_logprobs(
            ids.to(device), mask.to(device), rollout.tokens.to(device), 1.0,
            int(envs.single_action_space.n), None if columns is None else columns.to(device),
        ).cpu()
        kl = -(ref_logp * rollout.mask).sum(-1)  # (N,) KL(point mass || ref) per episode
        metrics["kl_mean"] = metrics["kl_k1_mean"] = float(kl.mean())
        metrics["kl_token_mean"] = float(kl.sum() / rollout.mask.sum().clamp(min=1))
        return rollout, metrics


class BestOfNAgent(SampleAgent):
    """Best-of-N sampling: N samples per prompt through the env, the best by reward kept."""

    def __init__(self, envs: Any, lm: ActorCritic | torch.nn.Module, config: Any) -> None:
        super().__init__(envs, lm, config)
        self.group_size = config.samples_per_prompt

    @torch.no_grad()
    def evaluate(self, envs: Any = None, seed: int = 12345) -> tuple[Rollout, dict[str, float]]:
        """The rollout holds the chosen (best) sample of each prompt: ``num_envs / N`` rows.

        ``kl_mean`` is Beirami et al.'s estimate, ``kl_bound`` the analytic upper bound (module
        docstring); ``kl_token_mean`` is ``kl_mean`` over the chosen completions' mean length.
        """
        n = self.group_size
        rollout = self._rollout(self.envs if envs is None else envs, seed)
        rewards = group_view(rollout.rewards, n)  # (prompts, N)
        best = rewards.argmax(-1) + torch.arange(rewards.shape[0]) * n  # first best on ties
        chosen = select_rows(rollout, best)
        # log ref(y*|x) of each chosen completion: its sampled log-probs (the policy is the ref).
        log_eps = (chosen.logprobs * chosen.mask).sum(-1)
        kl = sum(best_of_n_kl_estimate(n, float(e)) for e in log_eps) / max(len(log_eps), 1)
        length = float(chosen.lengths.float().mean())
        return chosen, {
            "reward_mean": float(chosen.rewards.mean()),
            "reward_mean_all_samples": float(rollout.rewards.mean()),
            "kl_mean": kl, "kl_bound": best_of_n_kl(n), "kl_token_mean": kl / max(length, 1.0),
            "samples_per_prompt": float(n), "tokens": int(rollout.lengths.sum()),
            "episode_length_mean": length,
        }
