"""``TextGenVectorEnv``: N text-generation episodes stepped together, natively batched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from tokengym.envs.episodes import EpisodeBatch, EpisodeSizes
from tokengym.envs.prompts import PromptRecord
from tokengym.envs.text_gen_env import make_spaces, resolve_tokenizer
from tokengym.models import DEFAULT_MODEL


def _autoreset_mode(mode: Any) -> AutoresetMode:
    if isinstance(mode, AutoresetMode):
        return mode
    try:
        return AutoresetMode(mode)
    except ValueError:
        accepted = ", ".join(m.value for m in AutoresetMode)
        raise ValueError(f"autoreset_mode {mode!r} is not one of: {accepted}") from None


class TextGenVectorEnv(EpisodeSizes, VectorEnv):
    """``num_envs`` independent :class:`TextGenEnv` episodes, stepped as one batch.

    Same arguments, spaces, rewards and infos as :class:`TextGenEnv` (multi-turn ones too: rows
    insert different numbers of tokens at different steps; each row's ``info["inserted_ids"]``
    says what it inserted), plus ``num_envs`` and ``autoreset_mode``. Bookkeeping is vectorised
    numpy, and finished episodes of one step are scored in a single reward-model call. With the
    same seeds and actions, it returns exactly what
    ``gymnasium.vector.SyncVectorEnv([TextGenEnv(...)] * num_envs)`` returns, in every autoreset
    mode:

    - ``NEXT_STEP`` (default): a sub-env that ended is reset by the next ``step``, which ignores
      its action and returns its first observation, reward 0 and no termination.
    - ``SAME_STEP``: a sub-env that ended is reset in the same step; its last observation and info
      are in ``info["final_obs"]`` and ``info["final_info"]``.
    - ``DISABLED``: ended sub-envs must be reset with ``reset(options={"reset_mask": mask})``;
      stepping one raises ``ValueError``.

    ``reset(seed=s)`` seeds sub-env i with ``s + i``; ``options={"prompt": ...}`` forces the same
    prompt in every sub-env being reset (the way to get k samples of one prompt).

    Agents read the env through ``max_prompt_tokens``, ``max_new_tokens``, ``max_episode_tokens``,
    ``num_actions`` and ``prompt_records()`` (the
    :class:`~tokengym.envs.protocol.TextVectorEnvLike` protocol), never through ``episodes``,
    which is the env's internal state.
    """

    metadata = {"render_modes": ["ansi", "human"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        prompts: Any,
        reward_model: Any = None,
        tokenizer: Any = DEFAULT_MODEL,
        max_prompt_tokens: int = 64,
        max_new_tokens: int = 32,
        stop_tokens: Sequence[int | str] | None = None,
        stop_strings: Sequence[str] | None = None,
        chat_template: bool = False,
        reward_model_kwargs: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        responder: Any = None,
        responder_kwargs: Mapping[str, Any] | None = None,
        max_turns: int | None = None,
        max_turn_tokens: int | None = None,
        max_insert_tokens: int | None = None,
        max_episode_tokens: int | None = None,
        agent_mask: bool | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            # TypeError, not ValueError: wrappers such as SB3's make_vec_env try render_mode=
            # "rgb_array" first and fall back to no rendering on TypeError.
            raise TypeError(f"render_mode {render_mode!r} is not supported; use 'ansi', 'human' or None")
        self.render_mode = render_mode
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.tokenizer = resolve_tokenizer(tokenizer)
        self.episodes = EpisodeBatch(
            num_envs,
            prompts=prompts,
            reward_model=reward_model,
            tokenizer=self.tokenizer,
            max_prompt_tokens=max_prompt_tokens,
            max_new_tokens=max_new_tokens,
            stop_tokens=stop_tokens,
            stop_strings=stop_strings,
            chat_template=chat_template,
            reward_model_kwargs=reward_model_kwargs,
            responder=responder,
            responder_kwargs=responder_kwargs,
            max_turns=max_turns,
            max_turn_tokens=max_turn_tokens,
            max_insert_tokens=max_insert_tokens,
            max_episode_tokens=max_episode_tokens,
            agent_mask=agent_mask,
        )
        self.num_envs = self.episodes.num_slots
        self.reward_model = self.episodes.reward_model
        self.responder = self.episodes.responder
        self.single_action_space, self.single_observation_space = make_spaces(
            self.episodes.vocab_size, self.episodes.seq_len, self.episodes.observe_agent_mask
        )
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._needs_autoreset = np.zeros(self.num_envs, dtype=bool)

    # -- what agents may rely on (tokengym.envs.protocol.TextVectorEnvLike) ---------------------
    def prompt_records(self) -> list[PromptRecord]:
        """The prompt of each row's current episode, ``num_envs`` records in row order.

        Raises:
            ValueError: some row has not been reset yet (it has no prompt).
        """
        records = list(self.episodes.records)
        missing = [i for i, r in enumerate(records) if r is None]
        if missing:
            raise ValueError(f"row(s) {missing} have no prompt yet; call reset() first")
        return records

    # -- helpers --------------------------------------------------------------------------------
    def _observations(self) -> dict[str, np.ndarray]:
        return self.episodes.observations()

    def _reset_one(self, i: int, seed: int | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
        # Mirrors gymnasium.Env.reset's seeding so sub-env i matches a TextGenEnv seeded alike.
        if seed is not None or self._rngs[i] is None:
            self._rngs[i], _ = seeding.np_random(seed)
            self.episodes.restart_order(i)
        return self.episodes.reset_slot(i, self._rngs[i], options)

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(self.num_envs)]
        if isinstance(seed, (str, bytes)) or not isinstance(seed, (Sequence, np.ndarray)):
            raise TypeError(
                f"seed must be an int, None or a list of {self.num_envs} ints/None, got "
                f"{type(seed).__name__} {seed!r}"
            )
        seeds = [int(s) if isinstance(s, np.integer) else s for s in seed]
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed list has {len(seeds)} entries for num_envs={self.num_envs}")
        return seeds

    # -- the VectorEnv API ----------------------------------------------------------------------
    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        seeds = self._seeds(seed)
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(
                "options must be a dict (accepted keys: 'reset_mask', 'prompt') or None, got "
                f"{type(options).__name__} {options!r}"
            )
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        elif not (isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == (self.num_envs,)):
            raise TypeError(
                f"options['reset_mask'] must be a numpy bool array of shape ({self.num_envs},), got "
                f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {getattr(mask, 'shape', '')}"
            )
        elif not mask.any():
            raise ValueError("options['reset_mask'] selects no sub-environment")
        infos: dict[str, Any] = {}
        for i in np.flatnonzero(mask):
            infos = self._add_info(infos, self._reset_one(int(i), seeds[i], options), int(i))
        self._needs_autoreset[mask] = False
        return self._observations(), infos

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        episodes = self.episodes
        tokens = episodes.check_actions(actions)
        if not episodes.started.all():
            raise ValueError("call reset() before step()")
        n = self.num_envs
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        infos: dict[str, Any] = {}

        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            autoreset = self._needs_autoreset.copy()
            for i in np.flatnonzero(autoreset):
                infos = self._add_info(infos, self._reset_one(int(i), None, None), int(i))
            stepping = np.flatnonzero(~autoreset)
        else:
            if self.autoreset_mode == AutoresetMode.DISABLED and episodes.ended.any():
                ended = np.flatnonzero(episodes.ended).tolist()
                raise ValueError(
                    f"sub-environment(s) {ended} have ended and autoreset is DISABLED; reset them "
                    "with reset(options={'reset_mask': mask}) before stepping"
                )
            stepping = np.arange(n)
        stale = stepping[episodes.ended[stepping]]
        if stale.size:
            raise ValueError(
                f"sub-environment(s) {stale.tolist()} ended without being reset (after an error?); "
                "call reset() before step()"
            )

        if stepping.size:
            r, term, trunc, step_infos = episodes.step_slots(stepping, tokens[stepping])
            rewards[stepping], terminated[stepping], truncated[stepping] = r, term, trunc
            final_obs = None
            if self.autoreset_mode == AutoresetMode.SAME_STEP and (term | trunc).any():
                final_obs = self._observations()
            for k, i in enumerate(stepping.tolist()):
                info = step_infos[k]
                if final_obs is not None and (term[k] or trunc[k]):
                    infos = self._add_info(
                        infos,
                        {"final_obs": {key: v[i] for key, v in final_obs.items()}, "final_info": info},
                        i,
                    )
                    info = self._reset_one(i, None, None)
                infos = self._add_info(infos, info, i)

        self._needs_autoreset = terminated | truncated
        if self.render_mode == "human":
            self.render()
        return self._observations(), rewards, terminated, truncated, infos

    def render(self) -> tuple[str, ...] | None:
        texts = tuple(self.episodes.render_text(i) for i in range(self.num_envs))
        if self.render_mode == "ansi":
            return texts
        if self.render_mode == "human":
            print("\n---\n".join(texts))
        return None

