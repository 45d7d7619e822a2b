"""Gymnasium environments for text generation (see :class:`TextGenEnv`)."""

from .episodes import EpisodeBatch
from .prompts import PromptRecord, PromptSource
from .registration import register_envs, sentiment_prompts
from .text_gen_env import TextGenEnv
from .vector_env import TextGenVectorEnv

register_envs()

__all__ = [
    "EpisodeBatch",
    "PromptRecord",
    "PromptSource",
    "TextGenEnv",
    "TextGenVectorEnv",
    "register_envs",
    "sentiment_prompts",
]
