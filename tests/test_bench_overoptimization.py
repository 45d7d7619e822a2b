"""``tokengym/Overoptimization-v0``: the proxy is built once, cached atomically, and the env
rewards the proxy while reporting both proxy and gold."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import tokengym.benchmarks.overoptimization as oo
from tokengym.reward_models import make

PROXY = {"num_prompts": 10, "k": 4, "epochs": 2, "max_new_tokens": 6}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A private proxy cache shared by this module's tests (the first test builds the proxy)."""
    path = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(oo, "tokengym_home", lambda: path)
        yield path


def _make(num_envs=3, **kwargs):
    return gym.make_vec("tokengym/Overoptimization-v0", num_envs=num_envs,
                        vectorization_mode="vector_entry_point", tokenizer="tiny-llama",
                        max_new_tokens=5, proxy=PROXY, **kwargs)


def test_env_builds_and_caches_its_proxy_and_reports_gold_and_proxy(home, monkeypatch):
    envs = _make(split="eval")
    (cache,) = (home / "proxy_rm").iterdir()
    assert cache.name.startswith("tiny-llama-")
    settings = json.loads((cache / "settings.json").read_text())
    assert settings["policy_model"] == "tiny-llama" and settings["gold"] == "vader"
    assert settings["num_pairs"] >= 2 and (cache / "pairs.jsonl").is_file()
    assert not [p for p in (home / "proxy_rm").iterdir() if p.name.startswith(".")]  # no temp left

    envs.reset(seed=0)
    done = np.zeros(3, dtype=bool)
    rewards, comps = np.zeros(3), {}
    for _ in range(5):
        _, r, term, trunc, info = envs.step(np.full(3, 1000))
        end = (term | trunc) & ~done
        if not end.any():
            continue
        rewards[end] = r[end]
        for key in ("proxy", "gold"):
            comps.setdefault(key, np.zeros(3))[end] = info["reward_components"][key][end]
        done |= end
    assert done.all()
    np.testing.assert_allclose(rewards, comps["proxy"], atol=1e-6)  # the env's reward is the proxy
    assert np.isfinite(comps["gold"]).all() and (np.abs(comps["gold"]) <= 1).all()
    assert callable(make(str(cache / "model")))  # a saved reward model directory

    # Second build: same settings, same cache entry, no new labelling.
    def fail(*args, **kwargs):
        raise AssertionError("the cached proxy should have been reused")

    monkeypatch.setattr(oo, "label_pairs", fail)
    _make(num_envs=2)
    assert len(list((home / "proxy_rm").iterdir())) == 1


def test_gold_is_vader_on_the_completion(home):
    env = gym.make("tokengym/Overoptimization-v0", tokenizer="tiny-llama", max_new_tokens=3,
                   proxy=PROXY).unwrapped
    env.reset(seed=1)
    info = {}
    for _ in range(3):
        _, reward, term, trunc, info = env.step(1000)
        if term or trunc:
            break
    vader = make("vader")
    gold = float(vader([info["prompt"]], [info["completion"]])[0])
    assert info["reward_components"]["gold"] == pytest.approx(gold, abs=1e-6)
    assert reward == pytest.approx(info["reward_components"]["proxy"], abs=1e-6)


def test_bad_proxy_settings_are_rejected(home):
    with pytest.raises(ValueError, match="unknown proxy setting"):
        oo.proxy_settings({"pairs": 3}, "tiny-llama")
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        oo.proxy_settings({"k": 1}, "tiny-llama")
    with pytest.raises(ValueError, match="policy_model"):
        oo.proxy_settings({}, object())
    assert oo.proxy_dir(oo.proxy_settings({}, "tiny-llama")) != oo.proxy_dir(
        oo.proxy_settings({"epochs": 3}, "tiny-llama"))
