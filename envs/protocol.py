"""What agents may rely on from a tokengym env: two small protocols and :func:`text_env_view`.

Agents (``tokengym.agents``) and benchmark code read a text-generation env only through these
members, never through its internal ``episodes`` state. Every tokengym vector env offers them:

- the native :class:`~tokengym.envs.TextGenVectorEnv` implements :class:`TextVectorEnvLike`
  itself;
- a gymnasium vector wrapper around it, and ``gymnasium.vector.SyncVectorEnv`` /
  ``AsyncVectorEnv`` of :class:`~tokengym.envs.TextGenEnv` (wrapped or not), are adapted by
  :func:`text_env_view`, which is the one way agents get a :class:`TextVectorEnvLike`.

Members of :class:`TextVectorEnvLike` (``N`` rows, ``P`` prompt columns, ``G`` generation
columns, ``V`` actions):

``num_envs`` (int)
    ``N``, the rows of every batched observation, reward and mask.
``max_prompt_tokens`` (int)
    ``P``, in tokens: observation columns ``[0, P)`` hold the prompt, left-padded so that it ends
    at column ``P - 1`` (longer prompts lose their beginning). Agents slice
    ``obs["input_ids"][:, :P]`` to get the prompts.
``max_new_tokens`` (int)
    ``G``, the generation budget in tokens = steps: an episode is truncated after ``G`` steps, and
    (single-turn) generated token ``t`` sits at column ``P + t``. Single-turn observations have
    ``L = P + G`` columns.
``max_episode_tokens`` (int; views of envs without it report ``G``)
    ``E``, the columns after the prompt: ``G`` in single-turn envs, and in multi-turn envs (a
    ``responder``) the room for agent and inserted tokens together. Observations have
    ``L = P + E`` columns.
``num_actions`` (int)
    ``V``, the action count (``single_action_space.n``): actions are token ids ``0 .. V-1``, the
    tokenizer's vocabulary. A model's logits may be padded beyond ``V``; those ids are not actions.
``prompt_records()`` -> ``list[PromptRecord]``
    ``N`` records in row order, the prompt of each row's current episode:
    :class:`~tokengym.envs.PromptRecord` ``(text, id, fields)``, ``id`` the index in the prompt
    source (``-1`` when forced or generated), ``fields`` the record's extra keys (an expected
    answer, keywords...), which reach the reward model as keywords. Raises ``ValueError`` before
    a row's first reset. ``{"prompt": r.text, **r.fields}`` is what ``reset`` takes to force ``r``.
``reset(*, seed=None, options=None)`` -> ``(obs, infos)``
    gymnasium's vector reset. ``seed=s`` seeds row ``i`` with ``s + i`` (fixing its prompt order).
    ``options`` may hold ``"reset_mask"``: a numpy bool array of shape ``(N,)``, resetting only
    those rows (the others keep their episode), and ``"prompt"``: a string or a mapping
    ``{"prompt": text, **fields}`` forced as the prompt of every row being reset. Together they
    are the grouped reset with which :class:`~tokengym.agents.groups.PromptGroups` gives ``k``
    rows one prompt.

A single :class:`~tokengym.envs.TextGenEnv` offers the same scalars plus the current episode's
``prompt_record`` (``PromptRecord | None``, None before the first reset):
:class:`TextEnvLike`, what :class:`~tokengym.agents.kl_wrapper.KLPenaltyWrapper` reads from
``env.unwrapped``.

Multi-turn envs: what a rollout must do
---------------------------------------
In a multi-turn env a step appends more than one token to a row when the agent's token ends a
turn: the agent's token, then the env's inserted tokens, in the same step. For every row the
step's ``info`` then holds ``inserted_ids`` (a tuple of ``k >= 0`` token ids, in order) with
``turn``, ``turn_end``, ``turn_reward`` and ``inserted_text`` (see
:mod:`tokengym.envs.conversations`); rows that did not end a turn have no such key (their
``_inserted_ids`` mask entry is False). Rows insert different amounts at different steps. So a
KV-cache rollout, after feeding the sampled token of every row, must also feed (prefill) each
row's ``inserted_ids`` before sampling that row's next token; those tokens are not actions: no
log-probability, value, loss, entropy or KL belongs to them. The observation's ``agent_mask``
(``(N, L)`` int64, present in every multi-turn observation) is 1 exactly on agent tokens, so
``obs["input_ids"][i][obs["agent_mask"][i] == 1]`` are row ``i``'s actions so far and
``obs["attention_mask"][i].sum()`` its length; per-turn rewards arrive as the step reward of the
step that ended the turn (the turn's last agent token), the reward model's score at the last step.
A single-turn env inserts nothing (no ``inserted_ids`` key ever) and its observation has no
``agent_mask`` unless built with ``agent_mask=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from gymnasium.vector import AsyncVectorEnv, SyncVectorEnv

from tokengym.envs.prompts import PromptRecord

Obs = dict[str, np.ndarray]
"""A batched observation: ``input_ids``, ``attention_mask`` (and, multi-turn, ``agent_mask``),
each ``(N, P + E)`` int64."""

_SCALARS = ("max_prompt_tokens", "max_new_tokens", "num_actions")


class _Sizes(Protocol):
    """The sizes both protocols share."""

    @property
    def max_prompt_tokens(self) -> int:
        """``P``, prompt columns of every observation (row), in tokens."""
        ...

    @property
    def max_new_tokens(self) -> int:
        """``G``, the generation budget, in tokens (= steps) per episode."""
        ...

    @property
    def num_actions(self) -> int:
        """``V``, the number of actions (token ids ``0 .. V-1``)."""
        ...


@runtime_checkable
class TextEnvLike(_Sizes, Protocol):
    """One text-generation episode: what agents may read from a ``TextGenEnv`` (see module doc)."""

    @property
    def prompt_record(self) -> PromptRecord | None:
        """The current episode's prompt; None before the first reset."""
        ...


@runtime_checkable
class TextVectorEnvLike(_Sizes, Protocol):
    """``N`` text-generation rows: what agents may rely on from a vector env (see module doc)."""

    @property
    def num_envs(self) -> int:
        """``N``, the number of rows."""
        ...

    def prompt_records(self) -> list[PromptRecord]:
        """``N`` records, the prompt of each row's current episode; ValueError before a reset."""
        ...

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Obs, dict[str, Any]]:
        """Vector reset; ``options``: ``reset_mask`` ``(N,)`` bool, ``prompt`` str | mapping."""
        ...


class _WrappedView:
    """A :class:`TextVectorEnvLike` seen through gymnasium vector wrappers.

    Queries go to the unwrapped env; ``reset`` goes through the wrappers, so their state (e.g.
    :class:`~tokengym.agents.groups.PromptGroups`' grouping) stays consistent.
    """

    def __init__(self, envs: Any, base: TextVectorEnvLike) -> None:
        self._envs = envs
        self._base = base

    @property
    def num_envs(self) -> int:
        return self._base.num_envs

    @property
    def max_prompt_tokens(self) -> int:
        return self._base.max_prompt_tokens

    @property
    def max_new_tokens(self) -> int:
        return self._base.max_new_tokens

    @property
    def num_actions(self) -> int:
        return self._base.num_actions

    @property
    def max_episode_tokens(self) -> int:
        return int(getattr(self._base, "max_episode_tokens", self._base.max_new_tokens))

    def prompt_records(self) -> list[PromptRecord]:
        return self._base.prompt_records()

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Obs, dict[str, Any]]:
        return self._envs.reset(seed=seed, options=options)


class _SubEnvView:
    """A gymnasium ``SyncVectorEnv``/``AsyncVectorEnv`` of :class:`TextEnvLike` sub-envs.

    Reads each sub-env's members with ``get_attr`` (one round trip per worker for ``Async``); the
    three sizes are read once, here, since an env's budgets never change.
    """

    def __init__(self, envs: Any, base: SyncVectorEnv | AsyncVectorEnv) -> None:
        self._envs = envs
        self._base = base
        sizes: dict[str, int] = {}
        for name in _SCALARS:
            values = {int(v) for v in base.get_attr(name)}
            if len(values) != 1:
                # Rows of one batch must share the observation layout and the action set.
                raise ValueError(
                    f"the sub-envs of {type(base).__name__} disagree on {name}: {sorted(values)}"
                )
            sizes[name] = values.pop()
        if all(base.call("has_wrapper_attr", "max_episode_tokens")):
            widths = {int(v) for v in base.get_attr("max_episode_tokens")}
            if len(widths) != 1:
                raise ValueError(f"the sub-envs of {type(base).__name__} disagree on "
                                 f"max_episode_tokens: {sorted(widths)}")
            sizes["max_episode_tokens"] = widths.pop()
        self._sizes = sizes

    @property
    def num_envs(self) -> int:
        return int(self._base.num_envs)

    @property
    def max_prompt_tokens(self) -> int:
        return self._sizes["max_prompt_tokens"]

    @property
    def max_new_tokens(self) -> int:
        return self._sizes["max_new_tokens"]

    @property
    def num_actions(self) -> int:
        return self._sizes["num_actions"]

    @property
    def max_episode_tokens(self) -> int:
        return self._sizes.get("max_episode_tokens", self._sizes["max_new_tokens"])

    def prompt_records(self) -> list[PromptRecord]:
        records = list(self._base.get_attr("prompt_record"))
        missing = [i for i, r in enumerate(records) if r is None]
        if missing:
            raise ValueError(f"row(s) {missing} have no prompt yet; call reset() first")
        return records

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Obs, dict[str, Any]]:
        return self._envs.reset(seed=seed, options=options)


def _offers_text_env(base: SyncVectorEnv | AsyncVectorEnv) -> bool:
    # has_wrapper_attr answers False for a missing member; get_attr would raise instead, which in
    # an AsyncVectorEnv also shuts the worker down.
    return all(all(base.call("has_wrapper_attr", name)) for name in (*_SCALARS, "prompt_record"))


def text_env_view(envs: Any) -> TextVectorEnvLike:
    """``envs`` as a :class:`TextVectorEnvLike`: what agents may rely on (see the module doc).

    Args:
        envs: a tokengym :class:`~tokengym.envs.TextGenVectorEnv` (or any vector env implementing
            :class:`TextVectorEnvLike`), possibly inside gymnasium vector wrappers (found through
            ``.unwrapped``), or a gymnasium ``SyncVectorEnv``/``AsyncVectorEnv`` whose sub-envs
            are (possibly wrapped) :class:`~tokengym.envs.TextGenEnv` instances.

    Returns:
        ``envs`` itself when it implements the protocol, else a light view over it whose
        ``reset`` is ``envs.reset`` (through any wrappers).

    Raises:
        TypeError: ``envs`` is none of the above.
        ValueError: the sub-envs of a ``SyncVectorEnv``/``AsyncVectorEnv`` have different budgets
            or vocabularies.
    """
    base = getattr(envs, "unwrapped", envs)
    if isinstance(base, TextVectorEnvLike):
        return base if base is envs else _WrappedView(envs, base)
    if isinstance(base, (SyncVectorEnv, AsyncVectorEnv)) and _offers_text_env(base):
        return _SubEnvView(envs, base)
    raise TypeError(
        f"{type(envs).__name__} is not a tokengym text-generation vector env; text_env_view accepts "
        "tokengym.envs.TextGenVectorEnv (or a gymnasium vector wrapper around it), a gymnasium "
        "SyncVectorEnv/AsyncVectorEnv of tokengym.envs.TextGenEnv, or a vector env implementing "
        "tokengym.envs.protocol.TextVectorEnvLike"
    )
