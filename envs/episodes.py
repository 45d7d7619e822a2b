"""The text-generation episode logic, for a batch of independent episodes.

:class:`EpisodeBatch` holds N episode slots as numpy arrays and is the single implementation
behind both :class:`~tokengym.envs.TextGenEnv` (N = 1) and the native
:class:`~tokengym.envs.TextGenVectorEnv`, which is what makes the two agree exactly.

Observation layout (both envs), for ``L = max_prompt_tokens + max_new_tokens``::

    input_ids       [pad ... pad | prompt tokens | generated tokens | pad ... pad]
    attention_mask  [ 0  ...  0  |  1  ...   1   |  1   ...    1   |  0  ...  0 ]
                     <---- max_prompt_tokens ---> <------- max_new_tokens ------>

The prompt is left-padded so that it always ends at column ``max_prompt_tokens - 1`` and the
t-th generated token (0-based) always sits at column ``max_prompt_tokens + t``. This is the
layout batched generation uses, so a batch of observations feeds a model directly (position ids
are ``attention_mask.cumsum(-1) - 1``). Pad columns hold the tokenizer's pad id.

Multi-turn episodes (a ``responder``, see :mod:`tokengym.envs.conversations`) use the same layout
with ``L = max_prompt_tokens + max_episode_tokens``: after the prompt come the agent's tokens and
the env's inserted tokens, in the order they happened, then right padding. ``agent_mask`` (in the
observation of multi-turn envs, and of single-turn ones built with ``agent_mask=True``) is 1
exactly on the agent's tokens; in a single-turn episode those are columns ``P .. P + t - 1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tokengym.checks import boolean, keyword_arguments, positive_int
from tokengym.envs.actions import (
    MAX_NEW_TOKENS,
    STOP_STRING,
    STOP_TOKEN,
    check_action,
    check_actions,
)
from tokengym.envs.actions import stop_ids as parse_stop_ids
from tokengym.envs.actions import stop_strings as parse_stop_strings
from tokengym.envs.conversations import Conversations
from tokengym.envs.prompts import (
    FORCED_PROMPT_ID,
    PromptRecord,
    PromptSource,
    encode_prompt,
    to_record,
)
from tokengym.envs.responder_registry import make_responder
from tokengym.envs.sizes import EpisodeSizes
from tokengym.envs.turns import Inserter, turn_limits
from tokengym.reward_models import RewardModelError, make, reward_model_name, score
from tokengym.reward_models.base import RewardFn

__all__ = ["MAX_NEW_TOKENS", "STOP_STRING", "STOP_TOKEN", "EpisodeBatch", "EpisodeSizes"]

MAX_TOKENS = 2**20
"""Largest ``max_prompt_tokens`` and ``max_new_tokens`` (1,048,576: beyond any model's context)."""
MAX_CELLS = 2**27
"""Largest ``num_envs * (max_prompt_tokens + max_new_tokens)``: the two int64 observation
buffers then take 2 GiB."""


def _buffer_cells(num_slots: int, seq_len: int, multi_turn: bool) -> None:
    cells = num_slots * seq_len
    if cells > MAX_CELLS:
        width = "max_episode_tokens" if multi_turn else "max_new_tokens"
        raise ValueError(
            f"num_envs * (max_prompt_tokens + {width}) = {num_slots} * {seq_len} = {cells} "
            f"token cells is more than {MAX_CELLS} (the observation buffers would take "
            f"{cells * 16 / 2**30:.1f} GiB); lower num_envs, max_prompt_tokens or {width}"
        )


def _reward_model(reward_model: Any, kwargs: Mapping[str, Any] | None, multi_turn: bool) -> RewardFn | None:
    rm_kwargs = keyword_arguments("reward_model_kwargs", kwargs)
    if reward_model is None and multi_turn and not rm_kwargs:
        return None  # the responder's per-turn rewards are the whole reward
    if reward_model is None:
        raise TypeError(
            "reward_model must be a name, an import string 'package.module:attribute', or a callable "
            "rm(prompts, completions) -> floats; got NoneType (None is accepted only with a "
            "responder=, whose per-turn rewards are then the whole reward)"
        )
    return make(reward_model, **rm_kwargs)


class EpisodeBatch:
    """N independent text-generation episodes over shared prompts, tokenizer and reward model.

    Args:
        num_slots: N, the number of episodes held at once.
        prompts: a prompt source (see :mod:`tokengym.envs.prompts`).
        reward_model: a name, import string, or callable (see :mod:`tokengym.reward_models`).
        tokenizer: a Hugging Face tokenizer object.
        max_prompt_tokens: P, prompt budget in tokens; longer prompts lose their left part.
        max_new_tokens: G, generation budget; the episode is truncated after G tokens.
        stop_tokens: token ids (or token strings) that end the episode; default: the EOS token.
        stop_strings: strings that end the episode as soon as the completion contains one; the
            completion text is cut before it.
        chat_template: wrap each prompt as a user turn with the tokenizer's chat template.
        reward_model_kwargs: arguments for building ``reward_model`` from a name.
        responder: makes episodes multi-turn (see :mod:`tokengym.envs.conversations`): a name,
            import string, object or function (see :mod:`tokengym.envs.responder_registry`).
        responder_kwargs: arguments for building ``responder`` from a name.
        max_turns, max_turn_tokens, max_insert_tokens, max_episode_tokens: the multi-turn limits
            (see :mod:`tokengym.envs.turns`); only with a responder.
        agent_mask: put ``agent_mask`` in the observation (None: only in multi-turn envs, which
            always have it).
    """

    def __init__(
        self,
        num_slots: int,
        *,
        prompts: Any,
        reward_model: Any,
        tokenizer: Any,
        max_prompt_tokens: int,
        max_new_tokens: int,
        stop_tokens: Sequence[int | str] | None = None,
        stop_strings: Sequence[str] | None = None,
        chat_template: bool = False,
        reward_model_kwargs: Mapping[str, Any] | None = None,
        responder: Any = None,
        responder_kwargs: Mapping[str, Any] | None = None,
        max_turns: int | None = None,
        max_turn_tokens: int | None = None,
        max_insert_tokens: int | None = None,
        max_episode_tokens: int | None = None,
        agent_mask: bool | None = None,
    ) -> None:
        self.num_slots = positive_int("num_envs", num_slots)
        self.prompt_len = positive_int("max_prompt_tokens", max_prompt_tokens, MAX_TOKENS)
        self.max_new_tokens = positive_int("max_new_tokens", max_new_tokens, MAX_TOKENS)
        multi_turn = responder is not None
        limits = turn_limits(multi_turn, self.max_new_tokens, {
            "max_turns": max_turns, "max_turn_tokens": max_turn_tokens,
            "max_insert_tokens": max_insert_tokens, "max_episode_tokens": max_episode_tokens})
        if responder is None and responder_kwargs is not None:
            raise ValueError("responder_kwargs given without a responder; pass responder=NAME too")
        self.max_episode_tokens = limits.max_episode_tokens if limits else self.max_new_tokens
        self.seq_len = self.prompt_len + self.max_episode_tokens
        _buffer_cells(self.num_slots, self.seq_len, multi_turn)
        self.chat_template = boolean("chat_template", chat_template)
        if agent_mask is not None:
            boolean("agent_mask", agent_mask)
            if multi_turn and not agent_mask:
                raise ValueError("agent_mask=False with a responder: a multi-turn observation always "
                                 "carries agent_mask (inserted tokens are not the agent's)")
        self.observe_agent_mask = multi_turn or bool(agent_mask)
        self.source = PromptSource(prompts)
        self.reward_model: RewardFn | None = _reward_model(reward_model, reward_model_kwargs, multi_turn)
        self.reward_name = reward_model_name(self.reward_model) if self.reward_model else None
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token to pad with")
        self.stop_ids = parse_stop_ids(tokenizer, self.vocab_size, stop_tokens)
        self.stop_strings = parse_stop_strings(stop_strings)
        # Enough trailing tokens to contain the longest stop string (each token decodes to >= 1
        # character except rare empty ones, hence the margin).
        self._stop_tail = max((len(s) for s in self.stop_strings), default=0) + 2
        if self.chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat_template=True but the tokenizer has no chat template")
        self.turns: Conversations | None = None
        if limits is not None:
            built = make_responder(responder, **keyword_arguments("responder_kwargs", responder_kwargs))
            self.turns = Conversations(self.num_slots, built, limits,
                                       Inserter(tokenizer, self.chat_template, self.stop_ids))
        self.responder = self.turns.responder if self.turns else None

        n, length = self.num_slots, self.seq_len
        self.input_ids = np.full((n, length), self.pad_id, dtype=np.int64)
        self.attention_mask = np.zeros((n, length), dtype=np.int64)
        self.agent_mask = np.zeros((n, length), dtype=np.int64)
        self.num_generated = np.zeros(n, dtype=np.int64)  # agent tokens (= steps) this episode
        self.num_tokens = np.zeros(n, dtype=np.int64)  # columns used after the prompt
        self.turn_start = np.full(n, self.prompt_len, dtype=np.int64)  # column of the turn's start
        self.started = np.zeros(n, dtype=bool)  # reset at least once
        self.ended = np.zeros(n, dtype=bool)  # episode over: only reset is allowed
        self.records: list[PromptRecord | None] = [None] * n
        self.prompt_truncated = np.zeros(n, dtype=bool)
        self.orders: list[dict[str, Any]] = [{} for _ in range(n)]
        self._token_cache: dict[int, tuple[np.ndarray, bool]] = {}

    # -- set-up helpers -------------------------------------------------------------------------
    def _encode(self, record: PromptRecord) -> tuple[np.ndarray, bool]:
        if record.id != FORCED_PROMPT_ID and record.id in self._token_cache:
            return self._token_cache[record.id]
        ids, truncated = encode_prompt(self.tokenizer, record.text, self.chat_template, self.prompt_len)
        if record.id != FORCED_PROMPT_ID:
            self._token_cache[record.id] = (ids, truncated)
        return ids, truncated

    # -- episode operations ---------------------------------------------------------------------
    def reset_slot(
        self, i: int, rng: np.random.Generator, options: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Start a new episode in slot ``i``; returns its reset ``info``.

        ``options={"prompt": str | record}`` forces the prompt; otherwise the next prompt in the
        slot's seeded order is drawn with ``rng``.
        """
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(
                "options must be a dict (accepted key: 'prompt') or None, got "
                f"{type(options).__name__} {options!r}"
            )
        options = options or {}
        unknown = set(options) - {"prompt"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; accepted: 'prompt'")
        if "prompt" in options:
            record = to_record(options["prompt"], FORCED_PROMPT_ID, "options['prompt']")
        else:
            record = self.source.draw(rng, self.orders[i])
        ids, truncated = self._encode(record)
        if self.turns is not None:
            self.turns.reset_slot(i, record, ids)
        self.input_ids[i] = self.pad_id
        self.attention_mask[i] = 0
        self.agent_mask[i] = 0
        self.input_ids[i, self.prompt_len - ids.size: self.prompt_len] = ids
        self.attention_mask[i, self.prompt_len - ids.size: self.prompt_len] = 1
        self.num_generated[i] = 0
        self.num_tokens[i] = 0
        self.turn_start[i] = self.prompt_len
        self.records[i] = record
        self.prompt_truncated[i] = truncated
        self.started[i] = True
        self.ended[i] = False
        return {
            "prompt": record.text,
            "prompt_id": record.id,
            "prompt_tokens": int(ids.size),
            "prompt_truncated": bool(truncated),
        }

    def restart_order(self, i: int) -> None:
        """Forget slot ``i``'s position in the prompt order (called when it is re-seeded)."""
        self.orders[i] = {}

    def check_action(self, action: Any) -> int:
        """Validate one action (a token id) and return it as an int."""
        return check_action(action, self.vocab_size)

    def check_actions(self, actions: Any) -> np.ndarray:
        """Validate a batch of actions, shape ``(N,)`` integer token ids."""
        return check_actions(actions, self.num_slots, self.vocab_size)

    def step_slots(
        self, slots: np.ndarray, tokens: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Append ``tokens[k]`` to the episode in ``slots[k]``, then score finished episodes.

        Args:
            slots: ``(k,)`` int, slot indices (each started and not ended).
            tokens: ``(k,)`` int64, validated token ids.

        Returns:
            ``(rewards, terminated, truncated, infos)``, arrays of shape ``(k,)`` (float64, bool,
            bool) and one info dict per slot. All finished episodes are scored in one reward-model
            call.

        Raises:
            RewardModelError: the reward model failed; the finished slots are marked ended (they
                can be reset) and the others keep their state.
            ResponderError: the responder failed (multi-turn); the slots whose turn ended in this
                step are marked ended.
        """
        pos = self.prompt_len + self.num_tokens[slots]
        self.input_ids[slots, pos] = tokens
        self.attention_mask[slots, pos] = 1
        self.agent_mask[slots, pos] = 1
        self.num_generated[slots] += 1
        self.num_tokens[slots] += 1
        terminated = np.isin(tokens, self.stop_ids)
        stop_reason: dict[int, str] = {int(k): STOP_TOKEN for k in np.flatnonzero(terminated)}
        if self.stop_strings:
            for k in np.flatnonzero(~terminated):
                if self._hits_stop_string(int(slots[k])):
                    terminated[k] = True
                    stop_reason[int(k)] = STOP_STRING
        if self.turns is not None:  # the token ended a turn, not the episode: ask the responder
            return self.turns.step(self, slots, terminated, stop_reason)
        truncated = (self.num_generated[slots] >= self.max_new_tokens) & ~terminated
        for k in np.flatnonzero(truncated):
            stop_reason[int(k)] = MAX_NEW_TOKENS
        rewards = np.zeros(slots.size, dtype=np.float64)
        infos: list[dict[str, Any]] = [{} for _ in range(slots.size)]
        finished = np.flatnonzero(terminated | truncated)
        if finished.size:
            self.ended[slots[finished]] = True
            self.score_finished(slots, finished, stop_reason, rewards, infos)
        return rewards, terminated, truncated, infos

    def _hits_stop_string(self, i: int) -> bool:
        # Only the current agent turn's tokens: a stop string in inserted text ends nothing.
        end = self.prompt_len + int(self.num_tokens[i])
        start = max(int(self.turn_start[i]), end - self._stop_tail)
        tail = self.tokenizer.decode(self.input_ids[i, start: end])
        return any(s in tail for s in self.stop_strings)

    def completion_tokens(self, i: int, stop_reason: str | None = None) -> np.ndarray:
        """Token ids after slot ``i``'s prompt (the final stop token excluded when it ended on one);
        in a multi-turn episode, inserted tokens included."""
        n = int(self.num_tokens[i])
        if stop_reason == STOP_TOKEN:
            n -= 1
        return self.input_ids[i, self.prompt_len: self.prompt_len + n]

    def completion_text(self, i: int, stop_reason: str | None = None) -> str:
        text = self.tokenizer.decode(self.completion_tokens(i, stop_reason), skip_special_tokens=True)
        if stop_reason == STOP_STRING:
            cut = min((text.find(s) for s in self.stop_strings if s in text), default=len(text))
            text = text[:cut]
        return text

    def score_finished(
        self,
        slots: np.ndarray,
        finished: np.ndarray,
        stop_reason: dict[int, str],
        rewards: np.ndarray,
        infos: list[dict[str, Any]],
        texts: list[str] | None = None,
        extra_fields: dict[str, list[Any]] | None = None,
    ) -> None:
        """Score the episodes of ``slots[finished]`` in one reward-model call; add each score to
        ``rewards[k]`` and the end-of-episode keys to ``infos[k]``.

        ``texts`` (multi-turn: the transcripts' texts) replaces the completions, and
        ``extra_fields`` joins the record fields (e.g. ``transcript``); without a reward model
        (multi-turn only) every score is 0.0.
        """
        idx = [int(slots[k]) for k in finished]
        records = [self.records[i] for i in idx]
        completions = texts if texts is not None else [
            self.completion_text(i, stop_reason[int(k)]) for i, k in zip(idx, finished)]
        prompts = [r.text for r in records]
        field_names = sorted({name for r in records for name in r.fields})
        fields = {name: [r.fields.get(name) for r in records] for name in field_names}
        fields.update(extra_fields or {})
        if self.reward_model is None:
            values, components = np.zeros(len(idx), dtype=np.float32), {}
        else:
            values, components = self._call_reward_model(idx, prompts, completions, fields)
        for j, (k, i) in enumerate(zip(finished, idx)):
            rewards[k] += float(values[j])
            infos[k] = {
                **infos[k],
                "prompt": prompts[j],
                "prompt_id": records[j].id,
                "completion": completions[j],
                "completion_tokens": int(self.num_generated[i]),
                "stop_reason": stop_reason[int(k)],
                "reward_components": {name: float(v[j]) for name, v in components.items()},
            }
            if texts is not None:
                infos[k]["score"] = float(values[j])

    def _call_reward_model(self, idx: list[int], prompts: list[str], completions: list[str],
                           fields: dict[str, list[Any]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        try:
            return score(self.reward_model, prompts, completions, fields)
        except RewardModelError as exc:
            slot_note = f" (env slot {idx[exc.index]})" if exc.index is not None else ""
            raise RewardModelError(
                f"{exc}{slot_note}; the episode(s) ended, call reset() to continue",
                model_name=exc.model_name, index=exc.index, excerpt=exc.excerpt,
            ) from exc

    def observation(self, i: int) -> dict[str, np.ndarray]:
        """Slot ``i``'s observation: ``input_ids``, ``attention_mask`` (and ``agent_mask``), each
        ``(L,)`` int64, copies."""
        obs = {"input_ids": self.input_ids[i].copy(), "attention_mask": self.attention_mask[i].copy()}
        if self.observe_agent_mask:
            obs["agent_mask"] = self.agent_mask[i].copy()
        return obs

    def observations(self) -> dict[str, np.ndarray]:
        """Every slot's observation, each array ``(N, L)`` int64, copies."""
        obs = {"input_ids": self.input_ids.copy(), "attention_mask": self.attention_mask.copy()}
        if self.observe_agent_mask:
            obs["agent_mask"] = self.agent_mask.copy()
        return obs

    def render_text(self, i: int) -> str:
        record = self.records[i]
        if record is None:
            return ""
        return record.text + self.tokenizer.decode(self.completion_tokens(i), skip_special_tokens=False)
