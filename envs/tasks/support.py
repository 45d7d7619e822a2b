"""``tokengym/Support-v0``: calm an upset customer simulated by a language model.

The prompt is a customer's complaint; the agent answers as the support agent; the ``lm-user``
responder (SmolLM2-135M-Instruct by default; ``responder_kwargs={"model": "tiny-llama"}`` in
tests) replies as the customer, and the episode ends after ``max_turns`` (2) agent turns. The
reward model ``customer_mood`` scores the customer's last reply with VADER, in [-1, 1]: the agent
is rewarded for leaving the customer in a better mood.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tokengym.envs.responders import Transcript
from tokengym.reward_models.vader import VaderReward

PRODUCTS = ["blender", "laptop", "phone case", "coffee machine", "desk lamp", "backpack",
            "headphones", "winter jacket", "vacuum cleaner", "smart watch", "kettle", "office chair",
            "bike helmet", "toaster", "printer", "router"]
PROBLEMS = ["arrived broken", "stopped working after two days", "never arrived",
            "came with missing parts", "was the wrong colour", "was charged twice",
            "arrived a week late", "does not match the description"]
OPENINGS = ["This is unacceptable.", "I am really upset.", "I am so disappointed.",
            "I have had enough."]

_vader: VaderReward | None = None


def customer_mood(prompts: Sequence[str], completions: Sequence[str],
                  transcript: Sequence[Any] | None = None) -> np.ndarray:
    """VADER compound sentiment of the customer's (env's) last reply; 0.0 when there is none.

    Without ``transcript`` (a single-turn env) the completion is scored instead.
    """
    global _vader
    if _vader is None:
        _vader = VaderReward()
    texts = []
    for i, completion in enumerate(completions):
        t = transcript[i] if transcript is not None else None
        if isinstance(t, Transcript):
            replies = t.env_turns
            texts.append(replies[-1].text if replies else "")
        else:
            texts.append(completion)
    scores = _vader(prompts, texts)
    return np.where([bool(t.strip()) for t in texts], scores, 0.0).astype(np.float32)


customer_mood.name = "customer-mood"  # type: ignore[attr-defined]


def make_complaint(product: str, problem: str, opening: str) -> dict[str, Any]:
    """One prompt record (the shipped files hold every product x problem, split by product)."""
    return {"prompt": f"{opening} My {product} {problem}, and nobody has answered my emails. "
                      "What are you going to do about it?"}
