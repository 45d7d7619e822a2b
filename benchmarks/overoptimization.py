"""``tokengym/Overoptimization-v0``: reward-model over-optimisation (Gao et al. 2022).

The env is Sentiment-v0's prompts with a *proxy* reward: a Bradley–Terry preference reward model
trained on pairs of the policy's own completions ranked by a *gold* reward model (VADER by
default). Agents optimise the proxy; ``info["reward_components"]`` carries both ``proxy`` (the
env's reward) and ``gold`` for every finished episode, so an evaluation can plot gold and proxy
reward against sqrt(KL) and show the gold reward peaking while the proxy keeps rising.

The proxy is built once per (policy model, settings) and cached under
``$TOKENGYM_HOME/proxy_rm/<policy>-<hash>/`` (``pairs.jsonl``, ``model/``, ``settings.json``); the
directory appears atomically, so concurrent or interrupted builds never leave a half-written one.

Settings (the ``proxy`` keyword, a dict; :data:`PROXY_DEFAULTS`): ``policy_model`` (the model that
writes the pairs; defaults to ``tokenizer`` when that is a name), ``backbone`` (the proxy's
backbone; defaults to ``policy_model``), ``gold``, ``num_prompts`` (training prompts labelled),
``k`` (samples per prompt, best vs worst paired), ``epochs``, ``max_prompt_tokens``,
``max_new_tokens``, ``temperature``, ``seed``.

The env id is registered by :mod:`tokengym.envs.registration` with import-string entry points
naming this module, so ``import tokengym.envs`` never imports it (nor the labelling pipeline and
agents it builds on): it loads on the first ``gym.make("tokengym/Overoptimization-v0")``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from tokengym.checks import int_at_least
from tokengym.envs import TextGenEnv, TextGenVectorEnv, sentiment_prompts
from tokengym.fileio import atomic_directory
from tokengym.labeling import label_pairs
from tokengym.models import DEFAULT_MODEL, tokengym_home
from tokengym.reward_models.preference_training import train_preference_model

GOLD_REWARD_MODEL = "vader"
PROXY_DEFAULTS: dict[str, Any] = {
    "policy_model": None,
    "backbone": None,
    "gold": GOLD_REWARD_MODEL,
    "num_prompts": 64,
    "k": 4,
    "epochs": 10,
    "max_prompt_tokens": 32,
    "max_new_tokens": 24,
    "temperature": 1.0,
    "seed": 0,
}
ENV_DEFAULTS: dict[str, Any] = {"max_prompt_tokens": 32, "max_new_tokens": 24}


def proxy_settings(proxy: dict[str, Any] | None, tokenizer: Any = DEFAULT_MODEL) -> dict[str, Any]:
    """The full proxy settings: :data:`PROXY_DEFAULTS` < ``proxy``; model names resolved."""
    proxy = dict(proxy or {})
    unknown = sorted(set(proxy) - set(PROXY_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown proxy setting(s) {unknown}; accepted: {sorted(PROXY_DEFAULTS)}")
    settings = {**PROXY_DEFAULTS, **proxy}
    if settings["policy_model"] is None:
        if not isinstance(tokenizer, (str, os.PathLike)):
            raise ValueError(
                "the proxy's pairs are sampled by the policy model; with a tokenizer object pass "
                "proxy={'policy_model': NAME} (the model name the tokenizer belongs to)"
            )
        settings["policy_model"] = os.fspath(tokenizer)
    if settings["backbone"] is None:
        settings["backbone"] = settings["policy_model"]
    for key in ("num_prompts", "k", "epochs"):
        # k >= 2: a best-vs-worst pair needs two samples of a prompt. Stored as a plain int so
        # that a numpy integer hashes into the same cache directory (proxy_dir) as the int.
        minimum = 2 if key == "k" else 1
        settings[key] = int_at_least(f"proxy setting {key}", settings[key], minimum)
    return settings


def proxy_dir(settings: dict[str, Any]) -> Path:
    """Cache directory of the proxy built with ``settings`` (from :func:`proxy_settings`)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(settings["policy_model"]))[-40:]
    return tokengym_home() / "proxy_rm" / f"{slug}-{digest[:12]}"


def build_proxy(settings: dict[str, Any], progress: bool = False) -> Path:
    """The proxy reward model's directory for ``settings``, built and cached on first use.

    Labels ``num_prompts`` Sentiment training prompts with ``k`` policy samples each scored by
    the gold model (best vs worst), then trains a Bradley–Terry head on the frozen backbone.
    Returns the saved model directory (``make(path)`` loads it).
    """
    target = proxy_dir(settings)
    if (target / "settings.json").is_file():
        return target / "model"
    # replace=False: when another process finished the same build first, use theirs.
    with atomic_directory(target, replace=False) as tmp:
        pairs = label_pairs(
            settings["policy_model"], sentiment_prompts("train"), settings["gold"],
            tmp / "pairs.jsonl", k=settings["k"], num_prompts=settings["num_prompts"],
            max_prompt_tokens=settings["max_prompt_tokens"],
            max_new_tokens=settings["max_new_tokens"], temperature=settings["temperature"],
            seed=settings["seed"], progress=progress,
        )
        if len(pairs) < 2:
            raise ValueError(
                f"only {len(pairs)} preference pair(s) had distinct gold scores; raise proxy "
                f"num_prompts (now {settings['num_prompts']}) or k (now {settings['k']})"
            )
        report = train_preference_model(
            pairs, tmp / "model", backbone=settings["backbone"], epochs=settings["epochs"],
            seed=settings["seed"], progress=progress,
        )
        info = {**settings, "num_pairs": len(pairs), "val_accuracy": report.val_accuracy}
        (tmp / "settings.json").write_text(json.dumps(info, indent=1, default=str), "utf-8")
    if not (target / "settings.json").is_file():
        # It was there before us without settings.json (not written by this code, which renames
        # only whole directories): refuse it rather than use a proxy of unknown settings.
        raise ValueError(f"{target} is an incomplete proxy cache entry; delete it and retry")
    return target / "model"


def _env_kwargs(split: str, proxy: dict[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    settings = proxy_settings(proxy, kwargs.get("tokenizer", DEFAULT_MODEL))
    path = build_proxy(settings, progress=True)  # minutes on a CPU the first time: show it
    reward = {"components": {"proxy": {"model": str(path), "weight": 1.0},
                             "gold": {"model": settings["gold"], "weight": 0.0}}}
    out = {**ENV_DEFAULTS, "prompts": sentiment_prompts(split), "reward_model": "composite",
           "reward_model_kwargs": reward, **kwargs}
    out.setdefault("tokenizer", settings["policy_model"])
    return out


def make_overoptimization(split: str = "train", proxy: dict[str, Any] | None = None,
                          **kwargs: Any) -> TextGenEnv:
    """A :class:`TextGenEnv` whose reward is the proxy (``info`` also carries the gold score)."""
    return TextGenEnv(**_env_kwargs(split, proxy, kwargs))


def make_overoptimization_vector(num_envs: int = 1, split: str = "train",
                                 proxy: dict[str, Any] | None = None,
                                 **kwargs: Any) -> TextGenVectorEnv:
    """The vector version of :func:`make_overoptimization`."""
    return TextGenVectorEnv(num_envs, **_env_kwargs(split, proxy, kwargs))
