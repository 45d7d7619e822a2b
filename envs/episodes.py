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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tokengym.checks import boolean, keyword_arguments, positive_int
from tokengym.envs.prompts import FORCED_PROMPT_ID, PromptRecord, PromptSource, to_record
from tokengym.reward_models import RewardModelError, make, reward_model_name, score
from tokengym.reward_models.base import RewardFn

STOP_TOKEN = "stop_token"
STOP_STRING = "stop_string"
MAX_NEW_TOKENS = "max_new_tokens"

MAX_TOKENS = 2**20
"""Largest ``max_prompt_tokens`` and ``max_new_tokens`` (1,048,576: beyond any model's context)."""
MAX_CELLS = 2**27
"""Largest ``num_envs * (max_prompt_tokens + max_new_tokens)``: the two int64 observation
buffers then take 2 GiB."""


def _buffer_cells(num_slots: int, seq_len: int) -> None:
    cells = num_slots * seq_len
    if cells > MAX_CELLS:
        raise ValueError(
            f"num_envs * (max_prompt_tokens + max_new_tokens) = {num_slots} * {seq_len} = {cells} "
            f"token cells is more than {MAX_CELLS} (the observation buffers would take "
            f"{cells * 16 / 2**30:.1f} GiB); lower num_envs, max_prompt_tokens or max_new_tokens"
        )


def _stop_strings(stop_strings: Any) -> list[str]:
    if stop_strings is None:
        return []
    if isinstance(stop_strings, (str, bytes, Mapping)) or not isinstance(stop_strings, Iterable):
        raise TypeError(f"stop_strings must be a list of non-empty strings, got {stop_strings!r}")
    strings = list(stop_strings)
    if not all(isinstance(s, str) and s for s in strings):
        raise TypeError(f"stop_strings must be a list of non-empty strings, got {stop_strings!r}")
    return strings


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
    ) -> None:
        self.num_slots = positive_int("num_envs", num_slots)
        self.prompt_len = positive_int("max_prompt_tokens", max_prompt_tokens, MAX_TOKENS)
        self.max_new_tokens = positive_int("max_new_tokens", max_new_tokens, MAX_TOKENS)
        self.seq_len = self.prompt_len + self.max_new_tokens
        _buffer_cells(self.num_slots, self.seq_len)
        self.chat_template = boolean("chat_template", chat_template)
        self.source = PromptSource(prompts)
        rm_kwargs = keyword_arguments("reward_model_kwargs", reward_model_kwargs)
        self.reward_model: RewardFn = make(reward_model, **rm_kwargs)
        self.reward_name = reward_model_name(self.reward_model)
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token to pad with")
        self.stop_ids = self._stop_ids(stop_tokens)
        self.stop_strings = _stop_strings(stop_strings)
        # Enough trailing tokens to contain the longest stop string (each token decodes to >= 1
        # character except rare empty ones, hence the margin).
        self._stop_tail = max((len(s) for s in self.stop_strings), default=0) + 2
        if self.chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat_template=True but the tokenizer has no chat template")

        n, length = self.num_slots, self.seq_len
        self.input_ids = np.full((n, length), self.pad_id, dtype=np.int64)
        self.attention_mask = np.zeros((n, length), dtype=np.int64)
        self.num_generated = np.zeros(n, dtype=np.int64)
        self.started = np.zeros(n, dtype=bool)  # reset at least once
        self.ended = np.zeros(n, dtype=bool)  # episode over: only reset is allowed
        self.records: list[PromptRecord | None] = [None] * n
        self.prompt_truncated = np.zeros(n, dtype=bool)
        self.orders: list[dict[str, Any]] = [{} for _ in range(n)]
        self._token_cache: dict[int, tuple[np.ndarray, bool]] = {}

    # -- set-up helpers -------------------------------------------------------------------------
    def _stop_ids(self, stop_tokens: Sequence[int | str] | None) -> np.ndarray:
        if stop_tokens is None:
            if self.tokenizer.eos_token_id is None:
                return np.zeros(0, dtype=np.int64)
            return np.array([self.tokenizer.eos_token_id], dtype=np.int64)
        if isinstance(stop_tokens, (str, int, np.integer)):
            stop_tokens = [stop_tokens]
        elif isinstance(stop_tokens, (bytes, bytearray, Mapping)) or not isinstance(
            stop_tokens, Iterable
        ):
            raise TypeError(
                "stop_tokens must be a token id, a token string or a list of them, got "
                f"{type(stop_tokens).__name__} {stop_tokens!r}"
            )
        ids = []
        for tok in stop_tokens:
            if isinstance(tok, str):
                tid = self.tokenizer.convert_tokens_to_ids(tok)
                if tid is None or tid == self.tokenizer.unk_token_id:
                    raise ValueError(f"stop token {tok!r} is not a single token of this tokenizer")
                ids.append(tid)
            elif (isinstance(tok, (int, np.integer)) and not isinstance(tok, bool)
                  and 0 <= tok < self.vocab_size):
                ids.append(int(tok))
            else:
                raise ValueError(
                    f"stop token {tok!r} must be a token string or an id in [0, {self.vocab_size})"
                )
        return np.array(sorted(set(ids)), dtype=np.int64)

    def _encode(self, record: PromptRecord) -> tuple[np.ndarray, bool]:
        if record.id != FORCED_PROMPT_ID and record.id in self._token_cache:
            return self._token_cache[record.id]
        if self.chat_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": record.text}], add_generation_prompt=True, tokenize=False
            )
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(record.text)["input_ids"]
        ids = np.asarray(ids, dtype=np.int64)
        truncated = ids.size > self.prompt_len
        if truncated:
            ids = ids[-self.prompt_len:]  # keep the end: it is what the completion continues
        if ids.size == 0:
            raise ValueError(f"prompt {record.text!r} tokenizes to nothing")
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
        self.input_ids[i] = self.pad_id
        self.attention_mask[i] = 0
        self.input_ids[i, self.prompt_len - ids.size: self.prompt_len] = ids
        self.attention_mask[i, self.prompt_len - ids.size: self.prompt_len] = 1
        self.num_generated[i] = 0
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
        if isinstance(action, np.ndarray) and action.shape == ():
            action = action[()]
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise TypeError(
                f"action must be an integer token id in [0, {self.vocab_size}), got "
                f"{type(action).__name__} {action!r}"
            )
        if not 0 <= action < self.vocab_size:
            raise ValueError(f"action {int(action)} is out of range: token ids are in [0, {self.vocab_size})")
        return int(action)

    def check_actions(self, actions: Any) -> np.ndarray:
        """Validate a batch of actions, shape ``(N,)`` integer token ids."""
        try:
            arr = np.asarray(actions)
        except (TypeError, ValueError) as exc:  # ragged nesting: numpy cannot make an array
            raise ValueError(
                f"actions must be a sequence of {self.num_slots} integer token ids (shape "
                f"({self.num_slots},)), got {type(actions).__name__} {actions!r:.80} ({exc})"
            ) from None
        if arr.shape != (self.num_slots,):
            raise ValueError(f"actions must have shape ({self.num_slots},), got {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"actions must be integer token ids, got dtype {arr.dtype}")
        bad = np.flatnonzero((arr < 0) | (arr >= self.vocab_size))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"actions[{i}] = {int(arr[i])} is out of range: token ids are in [0, {self.vocab_size})"
            )
        return arr.astype(np.int64, copy=False)

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
        """
        pos = self.prompt_len + self.num_generated[slots]
        self.input_ids[slots, pos] = tokens
        self.attention_mask[slots, pos] = 1
        self.num_generated[slots] += 1
        terminated = np.isin(tokens, self.stop_ids)
        stop_reason: dict[int, str] = {int(k): STOP_TOKEN for k in np.flatnonzero(terminated)}
        if self.stop_strings:
            for k in np.flatnonzero(~terminated):
                if self._hits_stop_string(int(slots[k])):
                    terminated[k] = True
                    stop_reason[int(k)] = STOP_STRING
        truncated = (self.num_generated[slots] >= self.max_new_tokens) & ~terminated
        for k in np.flatnonzero(truncated):
            stop_reason[int(k)] = MAX_NEW_TOKENS
        rewards = np.zeros(slots.size, dtype=np.float64)
        infos: list[dict[str, Any]] = [{} for _ in range(slots.size)]
        finished = np.flatnonzero(terminated | truncated)
        if finished.size:
            self.ended[slots[finished]] = True
            self._score(slots, finished, stop_reason, rewards, infos)
        return rewards, terminated, truncated, infos

    def _hits_stop_string(self, i: int) -> bool:
        start = self.prompt_len + max(0, int(self.num_generated[i]) - self._stop_tail)
        tail = self.tokenizer.decode(self.input_ids[i, start: self.prompt_len + self.num_generated[i]])
        return any(s in tail for s in self.stop_strings)

    def completion_tokens(self, i: int, stop_reason: str | None = None) -> np.ndarray:
        """Generated token ids of slot ``i`` (the final stop token excluded when it ended on one)."""
        n = int(self.num_generated[i])
        if stop_reason == STOP_TOKEN:
            n -= 1
        return self.input_ids[i, self.prompt_len: self.prompt_len + n]

    def completion_text(self, i: int, stop_reason: str | None = None) -> str:
        text = self.tokenizer.decode(self.completion_tokens(i, stop_reason), skip_special_tokens=True)
        if stop_reason == STOP_STRING:
            cut = min((text.find(s) for s in self.stop_strings if s in text), default=len(text))
            text = text[:cut]
        return text

    def _score(
        self,
        slots: np.ndarray,
        finished: np.ndarray,
        stop_reason: dict[int, str],
        rewards: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        idx = [int(slots[k]) for k in finished]
        records = [self.records[i] for i in idx]
        completions = [self.completion_text(i, stop_reason[int(k)]) for i, k in zip(idx, finished)]
        prompts = [r.text for r in records]
        field_names = sorted({name for r in records for name in r.fields})
        fields = {name: [r.fields.get(name) for r in records] for name in field_names}
        try:
            values, components = score(self.reward_model, prompts, completions, fields)
        except RewardModelError as exc:
            slot_note = f" (env slot {idx[exc.index]})" if exc.index is not None else ""
            raise RewardModelError(
                f"{exc}{slot_note}; the episode(s) ended, call reset() to continue",
                model_name=exc.model_name, index=exc.index, excerpt=exc.excerpt,
            ) from exc
        for j, (k, i) in enumerate(zip(finished, idx)):
            rewards[k] = float(values[j])
            infos[k] = {
                "prompt": prompts[j],
                "prompt_id": records[j].id,
                "completion": completions[j],
                "completion_tokens": int(self.num_generated[i]),
                "stop_reason": stop_reason[int(k)],
                "reward_components": {name: float(v[j]) for name, v in components.items()},
            }

    def observation(self, i: int) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids[i].copy(), "attention_mask": self.attention_mask[i].copy()}

    def render_text(self, i: int) -> str:
        record = self.records[i]
        if record is None:
            return ""
        return record.text + self.tokenizer.decode(self.completion_tokens(i), skip_special_tokens=False)


class EpisodeSizes:
    """The sizes every tokengym env reports to agents (:mod:`tokengym.envs.protocol`), read from
    its :class:`EpisodeBatch` ``episodes``; shared by ``TextGenEnv`` and ``TextGenVectorEnv``."""

    episodes: EpisodeBatch

    @property
    def max_prompt_tokens(self) -> int:
        """``P``, the prompt columns ``[0, P)`` of every observation (row), in tokens."""
        return self.episodes.prompt_len

    @property
    def max_new_tokens(self) -> int:
        """``G``, the generation budget in tokens (steps) per episode; columns ``[P, P + G)``."""
        return self.episodes.max_new_tokens

    @property
    def num_actions(self) -> int:
        """``V``, the number of actions (token ids ``0 .. V-1``): the action space's ``n``."""
        return self.episodes.vocab_size
