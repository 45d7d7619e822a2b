"""Gymnasium environments for text generation (see :class:`TextGenEnv`)."""

from tokengym.envs.episodes import EpisodeBatch
from tokengym.envs.prompts import PromptRecord, PromptSource
from tokengym.envs.protocol import TextEnvLike, TextVectorEnvLike, text_env_view
from tokengym.envs.registration import register_envs, sentiment_prompts
from tokengym.envs.responder_registry import make_responder, register_responder
from tokengym.envs.responders import Reply, ResponderError, Transcript, Turn
from tokengym.envs.text_gen_env import TextGenEnv
from tokengym.envs.turn_wrapper import TurnLevelWrapper
from tokengym.envs.vector_env import TextGenVectorEnv

register_envs()

__all__ = [
    "EpisodeBatch",
    "PromptRecord",
    "PromptSource",
    "Reply",
    "ResponderError",
    "TextEnvLike",
    "TextGenEnv",
    "TextGenVectorEnv",
    "TextVectorEnvLike",
    "Transcript",
    "Turn",
    "TurnLevelWrapper",
    "make_responder",
    "register_envs",
    "register_responder",
    "sentiment_prompts",
    "text_env_view",
]
