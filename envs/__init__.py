"""Gymnasium environments for text generation (see :class:`TextGenEnv`)."""

from tokengym.envs.episodes import EpisodeBatch
from tokengym.envs.prompts import PromptRecord, PromptSource
from tokengym.envs.protocol import TextEnvLike, TextVectorEnvLike, text_env_view
from tokengym.envs.registration import register_envs, sentiment_prompts
from tokengym.envs.text_gen_env import TextGenEnv
from tokengym.envs.vector_env import TextGenVectorEnv

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
