"""Reward models: the contract (:mod:`.base`), the registry (:func:`make`), and the built-ins."""

from .base import RewardFn, RewardModelError, reward_model_name, score
from .keywords import KeywordsReward
from .registry import ENTRY_POINT_GROUP, available, make, register
from .vader import VaderReward

register("vader", VaderReward)
register("keywords", KeywordsReward)

__all__ = [
    "ENTRY_POINT_GROUP",
    "KeywordsReward",
    "RewardFn",
    "RewardModelError",
    "VaderReward",
    "available",
    "make",
    "register",
    "reward_model_name",
    "score",
]
