"""tokengym: text generation as a Gymnasium environment.

``import tokengym`` registers the env ids ``tokengym/TextGen-v0`` and ``tokengym/Sentiment-v0``.
"""

from tokengym.envs import TextGenEnv, TextGenVectorEnv
from tokengym.models import load_causal_lm, load_tokenizer

__version__ = "0.1.0"

__all__ = ["TextGenEnv", "TextGenVectorEnv", "__version__", "load_causal_lm", "load_tokenizer"]
