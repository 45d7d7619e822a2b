"""``llm-judge``: a causal LM answers a yes/no rubric question; reward = P(yes), in [0, 1]."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Sequence

import numpy as np
import torch

from tokengym.checks import positive_int
from tokengym.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer
from tokengym.reward_models.batching import length_sorted_chunks

# Question first, then the text: SmolLM2-135M separates positive from negative text far better
# this way than with the text first (see docs/reward_models.md for its limits).
DEFAULT_RUBRIC = "Is the following text positive? Answer Yes or No.\n\n{prompt}{completion}"
YES_WORDS = ("Yes", "yes", " Yes", " yes", "YES")
NO_WORDS = ("No", "no", " No", " no", "NO")
_PLACEHOLDER = re.compile(r"\{(prompt|completion)\}")


def answer_token_ids(tokenizer: object, words: Sequence[str]) -> list[int]:
    """Ids of the words in ``words`` that are a single token (their first-token probability is
    then exactly the probability of answering with that word)."""
    ids = set()
    for word in words:
        encoded = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.add(int(encoded[0]))
    return sorted(ids)


class LLMJudgeReward:
    """Reward = P(yes) / (P(yes) + P(no)) for a rubric question, from one forward, no sampling.

    The rubric is filled with the prompt and the completion, wrapped as a user turn with the
    tokenizer's chat template, and the model's next-token distribution at the start of its answer
    is read: P(yes) sums the probabilities of the single-token spellings of "yes" (``Yes``,
    `` yes``, ...), P(no) those of "no". The ratio is computed as
    ``sigmoid(logsumexp(logits[yes]) - logsumexp(logits[no]))`` for numerical stability.

    Args:
        model: a tokengym causal-LM name (default ``"smollm2-135m"``), hub id or directory.
        rubric: template with ``{completion}`` and optionally ``{prompt}`` placeholders.
        system: optional system message for the chat template.
        chat_template: use the tokenizer's chat template (when it has one); otherwise the filled
            rubric is followed by ``"\\nAnswer:"``.
        yes_words / no_words: spellings counted as yes / no (single tokens only).
        device: CUDA when available when ``None``.
        dtype: parameter dtype (float32 when ``None``).
        batch_size: texts per forward; larger calls are chunked.
        max_length: tokens kept per judged text (the start is dropped, keeping the question).
        trust_remote_code: forwarded to transformers; off unless you ask.
    """

    name = "llm-judge"

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        rubric: str = DEFAULT_RUBRIC,
        system: str | None = None,
        chat_template: bool = True,
        yes_words: Sequence[str] = YES_WORDS,
        no_words: Sequence[str] = NO_WORDS,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 16,
        max_length: int = 1024,
        trust_remote_code: bool = False,
    ) -> None:
        if not isinstance(rubric, str) or "{completion}" not in rubric:
            raise ValueError("rubric must be a string containing the placeholder '{completion}'")
        self.rubric = rubric
        self.system = system
        self.batch_size = positive_int("batch_size", batch_size)
        self.max_length = positive_int("max_length", max_length)
        self.tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"  # the answer slot is then the last column of every row
        self.tokenizer.truncation_side = "left"
        self.chat_template = bool(chat_template and getattr(self.tokenizer, "chat_template", None))
        self.model = load_causal_lm(
            model, dtype=dtype, device=device, trust_remote_code=trust_remote_code
        )
        self.yes_ids = answer_token_ids(self.tokenizer, yes_words)
        self.no_ids = answer_token_ids(self.tokenizer, no_words)
        if not self.yes_ids or not self.no_ids:
            raise ValueError(
                f"none of yes_words={list(yes_words)} or no_words={list(no_words)} is a single "
                "token of this tokenizer; pass spellings that are"
            )
        params = inspect.signature(self.model.forward).parameters
        self._keep = next(
            (k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None
        )

    def render(self, prompt: str, completion: str) -> str:
        """The exact text the judge model reads for one sample (chat template applied)."""
        values = {"prompt": prompt, "completion": completion}
        # One pass, so that braces inside the prompt or completion are never substituted.
        question = _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.rubric)
        if not self.chat_template:
            return question + "\nAnswer:"
        messages = [{"role": "user", "content": question}]
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system})
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        texts = [self.render(p, c) for p, c in zip(prompts, completions)]
        out = np.empty(len(texts), dtype=np.float32)
        device = next(self.model.parameters()).device
        yes = torch.tensor(self.yes_ids, device=device)
        no = torch.tensor(self.no_ids, device=device)
        for chunk in length_sorted_chunks(texts, self.batch_size):
            enc = self.tokenizer(
                [texts[i] for i in chunk],
                add_special_tokens=False,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            mask = enc["attention_mask"]
            # Positions count real tokens only, so a left-padded row scores as it would alone.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs = {self._keep: 1} if self._keep else {}
            logits = (
                self.model(
                    input_ids=enc["input_ids"],
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=False,
                    **kwargs,
                )
                .logits[:, -1]
                .float()
            )
            margin = torch.logsumexp(logits[:, yes], -1) - torch.logsumexp(logits[:, no], -1)
            out[chunk] = torch.sigmoid(margin).cpu().numpy()
        return out
