"""The multi-turn part of :class:`~tokengym.envs.episodes.EpisodeBatch`: turns, replies, inserts.

One step of a multi-turn episode appends the agent's token (as in a single-turn one); when that
token ends the agent's turn (a stop token, a stop string, ``max_turn_tokens``), the responder is
asked for the next env message, whose tokens (from :class:`~tokengym.envs.turns.Inserter`) are
appended after it in the same step. Rewards: the responder's per-turn reward is paid at the step
that ends the turn; at the episode's last step the reward model's score of the whole transcript is
added to it (so an episode's return is ``sum(per-turn rewards) + score``).

Step ``info`` keys (on top of the single-turn ones at the last step):

- at a step that ends an agent turn: ``turn`` (its index, 0-based), ``turn_end`` (why it ended),
  ``turn_reward`` (float, 0.0 when the responder gave none), ``inserted_text`` (the reply's text
  as inserted, ``""`` when nothing was), ``inserted_ids`` (a tuple of ``k >= 0`` ints: the tokens
  appended after the agent's token in this step; a tuple, not an array, because rows insert
  different amounts and gymnasium's vector infos stack arrays of one shape only), and
  ``dropped_text`` when a reply did not fit;
- at the last step: ``turns`` (agent turns played), ``turn_rewards`` (list of floats, one per
  answered turn) and ``score`` (the reward model's score, 0.0 without one); ``completion`` is the
  transcript's text, ``completion_tokens`` the agent's tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tokengym.envs.actions import MAX_NEW_TOKENS, STOP_TOKEN
from tokengym.envs.prompts import PromptRecord
from tokengym.envs.responders import (
    AGENT,
    ENV,
    Reply,
    Responder,
    ResponderError,
    Transcript,
    Turn,
    ask,
    excerpt,
    responder_name,
)
from tokengym.envs.turns import (
    CHARS_PER_TOKEN_BOUND,
    MAX_EPISODE_TOKENS,
    MAX_TURN_TOKENS,
    MAX_TURNS,
    RESPONDER_DONE,
    Inserter,
    TurnLimits,
)

if TYPE_CHECKING:
    from tokengym.envs.episodes import EpisodeBatch

TRANSCRIPT_FIELD = "transcript"
"""The field through which a reward model naming it receives each episode's :class:`Transcript`."""


class Conversations:
    """Per-slot turns of a multi-turn :class:`EpisodeBatch` and the responder that answers them."""

    def __init__(self, num_slots: int, responder: Responder, limits: TurnLimits,
                 inserter: Inserter) -> None:
        self.responder = responder
        self.name = responder_name(responder)
        self.limits = limits
        self.inserter = inserter
        self.separator = "\n" if inserter.chat_template else ""
        self.turns: list[list[Turn]] = [[] for _ in range(num_slots)]
        self.turn_rewards: list[list[float]] = [[] for _ in range(num_slots)]
        self.prompt_ids: list[tuple[int, ...]] = [() for _ in range(num_slots)]

    def reset_slot(self, i: int, record: PromptRecord, prompt_ids: np.ndarray) -> None:
        if TRANSCRIPT_FIELD in record.fields:
            raise ValueError(
                f"prompt record field {TRANSCRIPT_FIELD!r} is reserved in multi-turn envs (reward "
                "models naming it receive the episode's transcript); rename the field"
            )
        self.turns[i] = []
        self.turn_rewards[i] = []
        self.prompt_ids[i] = tuple(int(t) for t in prompt_ids)

    def transcript(self, eb: EpisodeBatch, i: int) -> Transcript:
        record = eb.records[i]
        if record is None:
            raise ValueError(f"slot {i} has no episode; call reset() first")
        return Transcript(record=record, prompt_ids=self.prompt_ids[i], turns=tuple(self.turns[i]))

    def _agent_turn(self, eb: EpisodeBatch, i: int, end: str | None) -> Turn:
        ids = eb.input_ids[i, eb.turn_start[i]: eb.prompt_len + eb.num_tokens[i]]
        shown = ids[:-1] if end == STOP_TOKEN else ids
        text = eb.tokenizer.decode(shown, skip_special_tokens=True)
        return Turn(role=AGENT, text=text, token_ids=tuple(int(t) for t in ids), end=end)

    def _replies(self, eb: EpisodeBatch, slots: np.ndarray, ends: dict[int, str]
                 ) -> dict[int, tuple[Reply, np.ndarray]]:
        """Ask the responder about every ended turn, and tokenize its replies (nothing applied)."""
        out: dict[int, tuple[Reply, np.ndarray]] = {}
        max_chars = self.limits.max_insert_tokens * CHARS_PER_TOKEN_BOUND
        for k, end in ends.items():
            i = int(slots[k])
            transcript = self.transcript(eb, i)
            try:
                reply = ask(self.responder, transcript, max_chars=max_chars)
                ended_on = int(eb.input_ids[i, eb.prompt_len + eb.num_tokens[i] - 1])
                ids = self.inserter.encode(reply.text or "", ended_on if end == STOP_TOKEN else None)
                if ids.size > self.limits.max_insert_tokens:
                    raise ResponderError(
                        f"responder {self.name!r} returned a reply of {ids.size} tokens at turn "
                        f"{transcript.turn}, more than max_insert_tokens={self.limits.max_insert_tokens} "
                        f"(reply: {excerpt(reply.text or '')!r}); shorten its replies or raise "
                        "max_insert_tokens", responder_name=self.name, turn=transcript.turn,
                        excerpt=excerpt(transcript.last.text))
            except ResponderError as exc:
                ended = [int(slots[kk]) for kk in ends]
                eb.ended[ended] = True  # their step is incomplete: only reset() can continue
                raise ResponderError(f"{exc} (env slot {i}); the episode(s) ended, call reset() to "
                                     "continue", responder_name=exc.responder_name, turn=exc.turn,
                                     excerpt=exc.excerpt) from exc
            out[k] = (reply, ids)
        return out

    def step(self, eb: EpisodeBatch, slots: np.ndarray, stopped: np.ndarray,
             stop_reason: dict[int, str]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Finish one step of ``slots`` after their agent tokens were appended (see module doc).

        Args:
            eb: the episode batch (its arrays are updated in place).
            slots: ``(k,)`` int, the stepped slots.
            stopped: ``(k,)`` bool, the token ended the turn by a stop token or string.
            stop_reason: ``k -> "stop_token" | "stop_string"`` for the stopped ones.

        Returns:
            ``(rewards, terminated, truncated, infos)`` as in ``EpisodeBatch.step_slots``.
        """
        lim, P = self.limits, eb.prompt_len
        k_total = slots.size
        rewards = np.zeros(k_total, dtype=np.float64)
        terminated = np.zeros(k_total, dtype=bool)
        truncated = np.zeros(k_total, dtype=bool)
        infos: list[dict[str, Any]] = [{} for _ in range(k_total)]
        turn_len = P + eb.num_tokens[slots] - eb.turn_start[slots]
        ends = {k: (stop_reason[k] if stopped[k] else MAX_TURN_TOKENS)
                for k in range(k_total) if stopped[k] or turn_len[k] >= lim.max_turn_tokens}
        for k, end in ends.items():
            i = int(slots[k])
            self.turns[i].append(self._agent_turn(eb, i, end))
        replies = self._replies(eb, slots, ends)
        finish: dict[int, str] = {}
        for k in range(k_total):
            i = int(slots[k])
            if k not in ends:
                if eb.num_generated[i] >= eb.max_new_tokens:
                    finish[k] = MAX_NEW_TOKENS
                elif eb.num_tokens[i] >= lim.max_episode_tokens:
                    finish[k] = MAX_EPISODE_TOKENS
                if k in finish:  # cut inside a turn: it joins the transcript unfinished
                    self.turns[i].append(self._agent_turn(eb, i, None))
                continue
            reply, ids = replies[k]
            reward = 0.0 if reply.reward is None else reply.reward
            rewards[k] += reward
            self.turn_rewards[i].append(reward)
            fits = eb.num_tokens[i] + ids.size <= lim.max_episode_tokens
            info: dict[str, Any] = {
                "turn": len(self.turn_rewards[i]) - 1, "turn_end": ends[k], "turn_reward": reward,
                "inserted_text": (reply.text or "") if fits and ids.size else "",
                "inserted_ids": tuple(int(t) for t in ids) if fits else (),
            }
            if fits and ids.size:
                start = P + eb.num_tokens[i]
                eb.input_ids[i, start: start + ids.size] = ids
                eb.attention_mask[i, start: start + ids.size] = 1
                eb.num_tokens[i] += ids.size
                self.turns[i].append(Turn(role=ENV, text=reply.text or "",
                                          token_ids=tuple(int(t) for t in ids)))
            elif not fits:
                info["dropped_text"] = reply.text or ""
            eb.turn_start[i] = P + eb.num_tokens[i]
            infos[k] = info
            if reply.done:
                finish[k] = RESPONDER_DONE
            elif len(self.turn_rewards[i]) >= lim.max_turns:
                finish[k] = MAX_TURNS
            elif not fits or eb.num_tokens[i] >= lim.max_episode_tokens:
                finish[k] = MAX_EPISODE_TOKENS
            elif eb.num_generated[i] >= eb.max_new_tokens:
                finish[k] = MAX_NEW_TOKENS
        for k, why in finish.items():
            terminated[k] = why == RESPONDER_DONE
            truncated[k] = not terminated[k]
        done = np.array(sorted(finish), dtype=np.int64)
        if done.size:
            eb.ended[slots[done]] = True
            transcripts = [self.transcript(eb, int(slots[k])) for k in done]
            eb.score_finished(slots, done, finish, rewards, infos,
                              texts=[t.text(self.separator) for t in transcripts],
                              extra_fields={TRANSCRIPT_FIELD: transcripts})
            for k, t in zip(done.tolist(), transcripts):
                i = int(slots[k])
                infos[k]["turns"] = len(t.agent_turns)
                infos[k]["turn_rewards"] = list(self.turn_rewards[i])
        return rewards, terminated, truncated, infos
