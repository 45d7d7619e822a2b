"""``lm-user``: a causal language model plays the other side of the conversation.

The model (SmolLM2-135M-Instruct by default, any tokengym model name, hub id or directory) sees a
system message (its persona, with the episode's opening prompt) and the conversation with roles
swapped: the agent's turns are its *user* messages and its own earlier replies are its
*assistant* messages. It answers greedily (deterministic) with at most ``max_reply_tokens``
tokens, and ends the episode after ``max_turns`` agent turns. Models load once per process and
device (:func:`tokengym.models.load_causal_lm`), however many envs use them.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

from tokengym.checks import boolean, positive_int
from tokengym.envs.responders import AGENT, Reply, Transcript
from tokengym.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer

DEFAULT_PERSONA = ("You are a customer talking to a support agent. Your complaint: {prompt}\n"
                   "Reply as the customer, in one or two short sentences.")


@functools.lru_cache(maxsize=4)
def _load(model: str, device: str | None, dtype: str | None) -> tuple[Any, Any]:
    return load_tokenizer(model), load_causal_lm(model, device=device, dtype=dtype)


class LMResponder:
    """A language model that replies to the agent (a simulated user, a judge that answers).

    Args:
        model: a tokengym model name (``"smollm2-135m"``, ``"tiny-llama"``), hub id or directory.
        persona: the system message; ``{prompt}`` is replaced by the episode's prompt text. A
            record field ``persona`` overrides it per prompt.
        max_reply_tokens: the longest reply, in the model's tokens.
        max_turns: the agent turns after which the reply ends the episode (``done``).
        chat_template: format the conversation with the model tokenizer's chat template;
            ``False``: plain ``"User: ...\\nAssistant: ..."`` lines.
        device, dtype: where and how the model runs (CUDA when available; float32).
    """

    name = "lm-user"

    def __init__(self, model: str | os.PathLike[str] = DEFAULT_MODEL, persona: str = DEFAULT_PERSONA,
                 max_reply_tokens: int = 48, max_turns: int = 3, chat_template: bool = True,
                 device: str | None = None, dtype: str | None = None) -> None:
        if not isinstance(persona, str):
            raise TypeError(f"persona must be a string, got {type(persona).__name__}")
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"model must be a model name or path, got {type(model).__name__}")
        self.model_name = os.fspath(model)
        self.persona = persona
        self.max_reply_tokens = positive_int("max_reply_tokens", max_reply_tokens, 4096)
        self.max_turns = positive_int("max_turns", max_turns)
        self.chat_template = boolean("chat_template", chat_template)
        self.device = device
        self.dtype = dtype

    def messages(self, transcript: Transcript) -> list[dict[str, str]]:
        """The conversation as the model sees it (roles swapped, persona first)."""
        persona = transcript.record.fields.get("persona", self.persona)
        system = str(persona).replace("{prompt}", transcript.record.text)
        out = [{"role": "system", "content": system}]
        for turn in transcript.turns:
            out.append({"role": "user" if turn.role == AGENT else "assistant", "content": turn.text})
        return out

    def _context(self, tokenizer: Any, messages: list[dict[str, str]]) -> str:
        if self.chat_template and getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        lines = [messages[0]["content"]]
        for m in messages[1:]:
            lines.append(f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}")
        return "\n".join(lines) + "\nAssistant:"

    @torch.no_grad()
    def __call__(self, transcript: Transcript) -> Reply:
        tokenizer, model = _load(self.model_name, self.device, self.dtype)
        context = self._context(tokenizer, self.messages(transcript))
        ids = tokenizer(context, add_special_tokens=False, return_tensors="pt")["input_ids"]
        device = next(model.parameters()).device
        out = model.generate(
            ids.to(device), attention_mask=torch.ones_like(ids).to(device), do_sample=False,
            max_new_tokens=self.max_reply_tokens, pad_token_id=tokenizer.pad_token_id,
        )
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        return Reply(text=text, done=transcript.turn + 1 >= self.max_turns)
