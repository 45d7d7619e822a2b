"""The sizes every tokengym env reports to agents (:mod:`tokengym.envs.protocol`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokengym.envs.episodes import EpisodeBatch


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
    def max_episode_tokens(self) -> int:
        """``E``, the observation's columns after the prompt: ``G`` in single-turn envs; in
        multi-turn ones the room for agent and inserted tokens together (``L = P + E``)."""
        return self.episodes.max_episode_tokens

    @property
    def num_actions(self) -> int:
        """``V``, the number of actions (token ids ``0 .. V-1``): the action space's ``n``."""
        return self.episodes.vocab_size
