"""Collecting episodes from a text-generation vector env with a causal-LM policy and a KV cache.

Every agent gets its experience here, through the env's ``reset()``/``step()`` only. The model
sees each token once: one forward over the prompt columns at reset (the "prefill"), then one
single-token forward per ``step``, reusing the KV cache, which is what ``model.generate`` does.

Works with the native :class:`~tokengym.envs.TextGenVectorEnv` and with
``gymnasium.vector.SyncVectorEnv`` over :class:`~tokengym.envs.TextGenEnv` (slower, same
results), in the ``NEXT_STEP`` autoreset mode: a row that finished is fed a filler token until all
rows have finished; whatever the env does with those rows afterwards is ignored. Beyond
``reset``/``step``, the env is read only through :func:`tokengym.envs.text_env_view` (prompt
width, generation budget, episode width, action count).

Multi-turn envs (their observation carries ``agent_mask``; :mod:`tokengym.envs.protocol`): after
each step, the tokens a row inserted (``info["inserted_ids"]``) are fed through the cache after
its token, before it samples again (:class:`~tokengym.agents.multiturn_decode.MultiTurnDecoder`);
the rollout keeps each step's reward (per-turn rewards at the steps that ended turns) and the
columns the env wrote after the prompt (:class:`~tokengym.agents.episode_columns.EpisodeColumns`),
so the update's teacher-forced forwards see exactly the observation and read the agent's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from tokengym.agents.decode import (
    DecoderSlot,
    StaticCacheDecoder,
    forward_kwarg_names,
    static_decoder,
    use_compile,
)
from tokengym.agents.episode_columns import EpisodeColumns, inserted_ids
from tokengym.agents.multiturn_decode import MultiTurnDecoder
from tokengym.checks import finite_reward
from tokengym.envs.protocol import text_env_view


def check_next_step_autoreset(envs: Any) -> None:
    mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode != AutoresetMode.NEXT_STEP:
        raise ValueError(
            f"this agent needs a vector env in NEXT_STEP autoreset mode, got {mode}; build it with "
            "autoreset_mode='NextStep' (the default)"
        )


def row_info(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s info dict out of a vector env's batched infos (``key``/``_key`` arrays)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict):
            out[key] = row_info(value, i)
        elif infos.get(f"_{key}", None) is None or infos[f"_{key}"][i]:
            item = value[i]
            out[key] = item.item() if isinstance(item, np.generic) else item
    return out


@dataclass
class Rollout:
    """One finished episode per env row, as tensors (N rows, P prompt columns, G steps).

    Every per-step tensor is indexed by step = agent token (action): in a multi-turn episode
    step ``t``'s token sits at the ``t``-th True column of :meth:`sequence_agent_mask`
    (:func:`tokengym.agents.batch.agent_columns`), not at ``P + t``.

    Attributes:
        prompt_ids: ``(N, P)`` int64, left-padded prompt tokens (the env's layout).
        prompt_mask: ``(N, P)`` int64, 1 on prompt tokens.
        tokens: ``(N, G)`` int64, the actions taken; filler after the episode's end.
        mask: ``(N, G)`` bool, True where the token was a step of the episode.
        logprobs: ``(N, G)`` float32, log-probability of each action under the sampling
            distribution (temperature applied); 0 where ``mask`` is False.
        values: ``(N, G)`` float32 value estimates from the rollout forward, or None.
        rewards: ``(N,)`` float32, each episode's return: the env's reward at its last step
            (single-turn), the sum of its step rewards (multi-turn).
        terminated: ``(N,)`` bool, the episode ended on a stop token/string or its responder
            said done (else truncated).
        infos: each row's final-step info (prompt, completion, reward components...).
        step_rewards: multi-turn only (else None): ``(N, G)`` float32, the env's reward at each
            step (per-turn rewards at the steps that ended turns, the score added at the last).
        episode_ids: multi-turn only: ``(N, E')`` int64, the columns after the prompt exactly as
            the env's final observation holds them (agent and inserted tokens, then padding);
            ``E'`` the most any row used.
        episode_mask: multi-turn only: ``(N, E')`` int64, 1 on those tokens.
        agent_mask: multi-turn only: ``(N, E')`` bool, True exactly on the agent's tokens.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    values: torch.Tensor | None = None
    infos: list[dict[str, Any]] = field(default_factory=list)
    step_rewards: torch.Tensor | None = None
    episode_ids: torch.Tensor | None = None
    episode_mask: torch.Tensor | None = None
    agent_mask: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.Tensor:
        """``(N,)`` number of steps (agent tokens) in each episode."""
        return self.mask.sum(-1)

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``: prompt then completion, ``(N, P + G)``; multi-turn,
        prompt then the episode's columns (agent and inserted tokens), ``(N, P + E')``."""
        if self.episode_ids is not None:
            return (torch.cat([self.prompt_ids, self.episode_ids], dim=1),
                    torch.cat([self.prompt_mask, self.episode_mask], dim=1))
        return (
            torch.cat([self.prompt_ids, self.tokens], dim=1),
            torch.cat([self.prompt_mask, self.mask.long()], dim=1),
        )

    def sequence_agent_mask(self) -> torch.Tensor | None:
        """``(N, P + E')`` bool over :meth:`sequences`' columns, True on the agent's tokens;
        None for a single-turn rollout (its agent tokens are the last G columns)."""
        if self.agent_mask is None:
            return None
        return torch.cat([torch.zeros_like(self.prompt_mask, dtype=torch.bool),
                          self.agent_mask], dim=1)


class KVCacheDecoder:
    """Runs a causal LM over a growing batch of sequences, one new token per call.

    ``value_fn``, when given, maps the last layer's hidden states ``(N, T, H)`` to values
    ``(N, T)``; the decoder then returns a value estimate with each step's logits.
    """

    def __init__(self, model: torch.nn.Module, value_fn: Any = None) -> None:
        self.model = model
        self.value_fn = value_fn
        self.device = next(model.parameters()).device
        self._cache_kwarg, self._keep_kwarg = forward_kwarg_names(model)
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._positions: torch.Tensor | None = None

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor):
        kwargs = {self._cache_kwarg: self._cache}
        if self._keep_kwarg:  # only the last position's logits are needed (saves (N, P, V) floats)
            kwargs[self._keep_kwarg] = 1
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            output_hidden_states=self.value_fn is not None,
            **kwargs,
        )
        self._cache = out.get(self._cache_kwarg)
        logits = out.logits[:, -1].float()
        values = None
        if self.value_fn is not None:
            values = self.value_fn(out.hidden_states[-1][:, -1:]).squeeze(-1).float()
        return logits, values

    @torch.no_grad()
    def start(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
        """Prefill left-padded prompts ``(N, P)``; returns next logits ``(N, V)`` (and values)."""
        from transformers import DynamicCache

        self._cache = DynamicCache()
        self._mask = prompt_mask.to(self.device)
        positions = (self._mask.cumsum(-1) - 1).clamp(min=0)
        self._positions = positions[:, -1:]
        return self._forward(prompt_ids.to(self.device), self._mask, positions)

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor):
        """Feed ``(N,)`` new tokens; returns the next logits ``(N, V)`` (and values)."""
        ones = torch.ones_like(self._mask[:, :1])
        self._mask = torch.cat([self._mask, ones], dim=1)
        self._positions = self._positions + 1
        return self._forward(tokens.to(self.device).view(-1, 1), self._mask, self._positions)


def start_decoder(model: torch.nn.Module, value_fn: Any, prompt_ids: torch.Tensor,
                  prompt_mask: torch.Tensor, length: int, compile: bool | None,
                  multi_turn: bool = False
                  ) -> tuple[KVCacheDecoder | StaticCacheDecoder | MultiTurnDecoder, torch.Tensor,
                             torch.Tensor | None]:
    """The rollout's decoder, started on the prompts ``(N, P)``: ``(decoder, logits (N, V),
    values (N,) or None)``. ``multi_turn``: the :class:`MultiTurnDecoder` (eager; asked to
    compile, it says so once per model). Else the compiled static-cache decoder
    (:mod:`tokengym.agents.decode`) where ``compile`` (None: on CUDA only) asks for it and it
    works, or the eager :class:`KVCacheDecoder`; a failure switches the model to the eager path
    with one warning."""
    compiled = use_compile(compile, next(model.parameters()).device)
    if multi_turn:
        if compiled:
            DecoderSlot.of(model).note_multi_turn()
        decoder = MultiTurnDecoder(model, value_fn, length)
        return decoder, *decoder.start(prompt_ids, prompt_mask)
    if compiled:
        decoder = static_decoder(model, value_fn, prompt_ids.shape[0], length)
        if decoder is not None:
            try:
                return decoder, *decoder.start(prompt_ids, prompt_mask)
            except Exception as exc:  # noqa: BLE001 - the eager path below re-raises real errors
                DecoderSlot.of(model).disable(f"the static-cache prefill failed ({exc})")
    decoder = KVCacheDecoder(model, value_fn)
    return decoder, *decoder.start(prompt_ids, prompt_mask)


def sample_tokens(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample from ``softmax(logits / temperature)``; ``temperature == 0`` means greedy.

    Returns ``(tokens (N,), logprobs (N,))`` with log-probs of the tempered distribution
    (0 for greedy).
    """
    if temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, torch.zeros_like(tokens, dtype=torch.float32)
    logp = torch.log_softmax(logits / temperature, dim=-1)
    # Inverse-CDF sampling: one uniform per row and a binary search. Same distribution as
    # torch.multinomial, several times faster on CPU for 50k-token vocabularies.
    cdf = logp.exp().cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device) * cdf[:, -1:]
    tokens = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def collect_rollout(
    envs: Any,
    model: torch.nn.Module,
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    value_fn: Any = None,
    compile: bool | None = None,
) -> Rollout:
    """Reset ``envs`` and play one episode in every row with ``model`` as the policy.

    Args:
        envs: a tokengym vector env (native or ``SyncVectorEnv`` of ``TextGenEnv``), NEXT_STEP;
            single-turn or multi-turn (see the module docstring).
        model: a causal LM whose vocabulary covers the env's action space.
        seed: passed to ``envs.reset`` (row i gets ``seed + i``), fixing the prompts.
        options: passed to ``envs.reset`` (e.g. ``{"prompt": ...}``).
        temperature: sampling temperature; 0 for greedy decoding.
        generator: torch RNG for sampling (on the model's device), for reproducible rollouts.
        value_fn: optional value head, see :class:`KVCacheDecoder`.
        compile: decode with the compiled static-cache step (:mod:`tokengym.agents.decode`);
            None: on CUDA only. Same tokens for the same seed, up to the rounding of the kernels.
            Multi-turn envs decode eagerly (one warning per model when asked to compile).
    """
    check_next_step_autoreset(envs)
    view = text_env_view(envs)
    prompt_len, max_new, num_actions = view.max_prompt_tokens, view.max_new_tokens, view.num_actions
    obs, _ = envs.reset(seed=seed, options=options)
    n = obs["input_ids"].shape[0]
    multi_turn = "agent_mask" in obs  # multi-turn observations always carry it
    width = int(getattr(view, "max_episode_tokens", max_new)) if multi_turn else max_new
    prompt_ids = torch.from_numpy(obs["input_ids"][:, :prompt_len].copy())
    prompt_mask = torch.from_numpy(obs["attention_mask"][:, :prompt_len].copy())
    decoder, logits, values = start_decoder(model, value_fn, prompt_ids, prompt_mask,
                                            prompt_len + width, compile, multi_turn)
    device = logits.device
    # Multi-turn: what the env writes after each prompt, and every step's reward.
    columns = EpisodeColumns(n, width, int(obs["input_ids"][0, -1])) if multi_turn else None
    step_rewards = torch.zeros(n, max_new) if multi_turn else None
    returns = np.zeros(n, dtype=np.float64)

    # Log-probs and values stay on the model's device until the episode ends: the sampled
    # tokens are the only per-step device -> host copy (env.step needs them), which matters on
    # a GPU, where every copy waits for the queued kernels.
    tokens = torch.zeros(n, max_new, dtype=torch.long)
    mask = torch.zeros(n, max_new, dtype=torch.bool)
    logprobs = torch.zeros(n, max_new, device=device)
    value_buf = torch.zeros(n, max_new, device=device) if value_fn is not None else None
    rewards = torch.zeros(n)
    terminated = torch.zeros(n, dtype=torch.bool)
    infos: list[dict[str, Any]] = [{} for _ in range(n)]
    running = np.ones(n, dtype=bool)
    running_dev = torch.ones(n, dtype=torch.bool, device=device)
    all_running = True

    for t in range(max_new):
        # The model's vocabulary may be padded beyond the tokenizer's; those ids are not actions.
        step_tokens, step_logp = sample_tokens(logits[:, :num_actions], temperature, generator)
        if all_running:
            logprobs[:, t] = step_logp
            if value_buf is not None:
                value_buf[:, t] = values
        else:  # finished rows feed token 0 (masked out) and record nothing
            step_tokens = torch.where(running_dev, step_tokens, 0)
            logprobs[:, t] = torch.where(running_dev, step_logp, 0.0)
            if value_buf is not None:
                value_buf[:, t] = torch.where(running_dev, values, 0.0)
        cpu_tokens = step_tokens.cpu()
        tokens[:, t] = cpu_tokens
        mask[:, t] = torch.from_numpy(running)
        _, reward, term, trunc, info = envs.step(cpu_tokens.numpy())
        inserted: list[tuple[int, ...]] = []
        if columns is not None:
            stepped = np.flatnonzero(running)
            inserted = inserted_ids(info, n)
            columns.append(cpu_tokens, stepped, inserted)
            for i in stepped.tolist():
                r = finite_reward(reward[i], f"env row {i}'s step {t}")
                step_rewards[i, t] = r
                returns[i] += r
        ended = running & (term | trunc)
        if ended.any():
            for i in np.flatnonzero(ended):
                rewards[i] = returns[i] if columns is not None else finite_reward(
                    reward[i], f"env row {i}'s episode")
                terminated[i] = bool(term[i])
                infos[i] = row_info(info, int(i))
            running &= ~ended
            if not running.any():
                break
            running_dev = torch.from_numpy(running).to(device)
            all_running = False
        if columns is None:
            logits, values = decoder.advance(step_tokens)
        else:  # each running row: its token, then what it inserted, before it samples again
            logits, values = decoder.advance(cpu_tokens, torch.from_numpy(running), inserted)
    episode = columns.tensors() if columns is not None else (None, None, None)
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        tokens=tokens,
        mask=mask,
        logprobs=logprobs.cpu(),
        rewards=rewards,
        terminated=terminated,
        values=value_buf.cpu() if value_buf is not None else None,
        infos=infos,
        step_rewards=step_rewards,
        episode_ids=episode[0],
        episode_mask=episode[1],
        agent_mask=episode[2],
    )
