"""``composite`` (weighted sum, components in the env info) and ``normalized`` (fixed, running)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.reward_models import RewardModelError, make, score

PROMPTS = ["Write about the weather."] * 5
TEXTS = [
    "What a lovely sunny day, I am so happy.",
    "Grey, cold and miserable rain again.",
    "rain rain rain rain rain",
    "The weather is fine.",
    "Storms destroyed the town and everyone was sad.",
]


def test_composite_is_the_weighted_sum_of_its_components() -> None:
    rm = make(
        "composite",
        components={
            "sentiment": "vader",
            "length": {"model": "length", "target": 5, "weight": 0.5},
            "repetition": make("repetition"),
        },
        weights={"repetition": 2.0},
    )
    total, parts = score(rm, PROMPTS, TEXTS)
    vader = make("vader")(PROMPTS, TEXTS)
    length = make("length", target=5)(PROMPTS, TEXTS)
    rep = make("repetition")(PROMPTS, TEXTS)
    np.testing.assert_allclose(total, vader + 0.5 * length + 2.0 * rep, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(parts["sentiment"], vader)
    np.testing.assert_allclose(parts["length"], length)
    np.testing.assert_allclose(parts["composite"], total)
    assert set(parts) == {"sentiment", "length", "repetition", "composite"}


def test_composite_passes_fields_to_the_components_that_want_them() -> None:
    rm = make(
        "composite", components={"math": "arithmetic", "len": {"model": "length", "target": 2}}
    )
    total, parts = score(rm, ["q", "q"], ["It is 4", "5"], {"answer": [4, 4]})
    assert parts["math"].tolist() == [1.0, 0.0]
    np.testing.assert_allclose(total, parts["math"] + parts["len"])


def test_composite_components_reach_the_env_info() -> None:
    env = gym.make(
        "tokengym/TextGen-v0",
        prompts=["The weather today is"],
        tokenizer="tiny-llama",
        reward_model="composite",
        max_new_tokens=16,
        reward_model_kwargs={
            "components": {"sentiment": "vader", "length": {"model": "length", "target": 3}}
        },
    )
    env.reset(seed=0)
    tok = env.unwrapped.tokenizer
    for action in tok(" lovely and sunny", add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id
    ]:
        _, reward, terminated, _, info = env.step(action)
    assert terminated
    comps = info["reward_components"]
    assert set(comps) == {"sentiment", "length", "composite"}
    assert comps["length"] == 1.0 and comps["sentiment"] > 0.5
    assert reward == pytest.approx(comps["sentiment"] + comps["length"])


def test_composite_component_fault_names_the_component() -> None:
    def broken(prompts, completions):
        return [float("nan")] * len(completions)

    rm = make("composite", components={"ok": "vader", "bad": broken})
    with pytest.raises(RewardModelError, match="broken") as info:
        score(rm, PROMPTS, TEXTS)
    assert info.value.model_name == "broken" and info.value.index == 0


def test_composite_rejects_bad_specs() -> None:
    with pytest.raises(ValueError, match="non-empty mapping"):
        make("composite", components={})
    with pytest.raises(ValueError, match="weight"):
        make("composite", components={"a": {"model": "vader", "weight": "heavy"}})
    with pytest.raises(ValueError, match="unknown component"):
        make("composite", components={"a": "vader"}, weights={"b": 1.0})
    with pytest.raises(ValueError, match="Did you mean 'vader'"):
        make("composite", components={"a": "vadr"})


def test_normalized_fixed_calibration_gives_mean_0_std_1() -> None:
    rm = make("normalized", base="vader", calibration={"prompts": PROMPTS, "completions": TEXTS})
    assert rm.name == "normalized(vader)"
    r = rm(PROMPTS, TEXTS)
    assert r.mean() == pytest.approx(0.0, abs=1e-6) and r.std() == pytest.approx(1.0, abs=1e-5)
    # Fixed means fixed: the same text scores the same, whatever else is in the batch.
    np.testing.assert_array_equal(rm(PROMPTS[:1], TEXTS[:1]), r[:1])
    assert make("normalized", base="vader", mean=0.5, std=0.25)(PROMPTS[:1], ["neutral"])[
        0
    ] == pytest.approx(-2.0)


def test_normalized_fixed_without_calibration_is_an_error() -> None:
    rm = make("normalized", base="vader")
    with pytest.raises(RewardModelError, match="not calibrated"):
        score(rm, PROMPTS, TEXTS)
    rm.calibrate(PROMPTS, TEXTS)
    assert np.isfinite(score(rm, PROMPTS, TEXTS)[0]).all()


def test_normalized_running_statistics_match_numpy() -> None:
    rm = make("normalized", base="vader", mode="running")
    raw = make("vader")(PROMPTS, TEXTS).astype(np.float64)
    rm(PROMPTS[:2], TEXTS[:2])
    out = rm(PROMPTS[2:], TEXTS[2:])
    assert rm.count == 5
    assert rm.mean == pytest.approx(raw.mean()) and rm.std == pytest.approx(raw.std())
    np.testing.assert_allclose(out, (raw[2:] - raw.mean()) / raw.std(), rtol=1e-5)
    rm.freeze()
    rm(PROMPTS, TEXTS)
    assert rm.count == 5
