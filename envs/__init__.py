"""Gymnasium environments for text generation (see :class:`TextGenEnv`)."""

from .episodes import EpisodeBatch
from .prompts import PromptRecord, PromptSource
from .protocol import TextEnvLike, TextVectorEnvLike, text_env_view
from .registration import register_envs, sentiment_prompts
from .text_gen_env import TextGenEnv
from .vector_env import TextGenVectorEnv

register_envs()

__all__ = [
    "EpisodeBatch",
    "PromptRecord",
    "PromptSource",
    "TextEnvLike",
    "TextGenEnv",
    "TextGenVectorEnv",
    "TextVectorEnvLike",
    "register_envs",
    "sentiment_prompts",
    "text_env_view",
]
