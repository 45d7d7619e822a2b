"""Reward models: the contract (:mod:`.base`), the registry (:func:`make`), and the built-ins.

Built-ins (``make(name, **kwargs)``): ``vader``, ``keywords``, ``length``, ``regex``,
``repetition``, ``arithmetic``, ``hf-classifier``, ``embedding-similarity``, ``llm-judge``,
``composite``, ``normalized``, ``preference`` (a trained model: ``make(DIR)`` or
``make("preference", path=DIR)``). See ``docs/reward_models.md``.
"""

from tokengym.reward_models.base import RewardFn, RewardModelError, reward_model_name, score
from tokengym.reward_models.keywords import KeywordsReward
from tokengym.reward_models.registry import ENTRY_POINT_GROUP, available, make, register
from tokengym.reward_models.vader import VaderReward

register("vader", VaderReward)
register("keywords", KeywordsReward)

# Imported after `register`/`make` exist: composite and normalized build their parts with make().
from tokengym.reward_models.composite import CompositeReward  # noqa: E402
from tokengym.reward_models.embedding import EmbeddingSimilarityReward  # noqa: E402
from tokengym.reward_models.hf_classifier import HFClassifierReward  # noqa: E402
from tokengym.reward_models.llm_judge import LLMJudgeReward  # noqa: E402
from tokengym.reward_models.normalized import NormalizedReward  # noqa: E402
from tokengym.reward_models.preference import PreferenceRewardModel, load_saved  # noqa: E402
from tokengym.reward_models.preference_training import train_preference_model  # noqa: E402
from tokengym.reward_models.rules import (  # noqa: E402
    ArithmeticReward,
    LengthReward,
    RegexReward,
    RepetitionReward,
)

register("length", LengthReward)
register("regex", RegexReward)
register("repetition", RepetitionReward)
register("arithmetic", ArithmeticReward)
register("hf-classifier", HFClassifierReward)
register("embedding-similarity", EmbeddingSimilarityReward)
register("llm-judge", LLMJudgeReward)
register("composite", CompositeReward)
register("normalized", NormalizedReward)
register("preference", load_saved)

__all__ = [
    "ENTRY_POINT_GROUP",
    "ArithmeticReward",
    "CompositeReward",
    "EmbeddingSimilarityReward",
    "HFClassifierReward",
    "KeywordsReward",
    "LLMJudgeReward",
    "LengthReward",
    "NormalizedReward",
    "PreferenceRewardModel",
    "RegexReward",
    "RepetitionReward",
    "RewardFn",
    "RewardModelError",
    "VaderReward",
    "available",
    "load_saved",
    "make",
    "register",
    "reward_model_name",
    "score",
    "train_preference_model",
]
