"""PPOConfig validation: bad values raise ValueError naming the value and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tokengym.agents.loop import RunConfig
from tokengym.agents.ppo_config import PPOConfig


def test_defaults_are_valid() -> None:
    assert PPOConfig().validate() == PPOConfig()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"num_envs": 6, "num_minibatches": 4}, "not divisible by num_minibatches=4"),
        ({"num_envs": 8, "num_minibatches": 2, "grad_accum_steps": 3}, "grad_accum_steps=3"),
        ({"num_envs": 0}, "num_envs must be a positive integer"),
        ({"temperature": 0.0}, "temperature must be >= 0.01"),
        ({"kl_estimator": "k2"}, "kl_estimator='k2'"),
        ({"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
        ({"lr": -1e-5}, r"lr must be in \(0, 1\]"),
        ({"beta": -0.1}, "beta must be >= 0"),
        ({"adaptive_kl": True, "beta": 0.0}, "start from beta > 0"),
        ({"adaptive_kl": True, "adaptive_kl_target": 0.0}, "adaptive_kl_target > 0"),
        ({"value_model": "tied"}, "value_model='tied'"),
        ({"lora": True, "value_model": "separate"}, "not supported"),
        ({"dtype": "int8"}, "dtype='int8'"),
        ({"vf_coef": 0.0, "lam": 0.95}, "set vf_coef > 0 or lam = 1"),
    ],
)
def test_invalid_values_raise(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PPOConfig(**changes).validate()


def test_value_model_auto_is_a_separate_trunk_unless_lora() -> None:
    # PPO's default critic: its own trunk with full fine-tuning, the shared one with LoRA (no
    # error for `--lora` alone); an explicit choice is kept.
    assert PPOConfig().value_model == "auto"
    assert PPOConfig().validate().critic_trunk() == "separate"
    assert PPOConfig(lora=True).validate().critic_trunk() == "shared"
    assert PPOConfig(value_model="shared").validate().critic_trunk() == "shared"
    assert PPOConfig(value_model="separate").validate().critic_trunk() == "separate"


def test_from_dict_rejects_unknown_fields_and_lists_accepted_ones() -> None:
    with pytest.raises(ValueError, match="kl_coef") as info:
        PPOConfig.from_dict({"kl_coef": 0.1})
    assert "beta" in str(info.value)
    assert PPOConfig.from_dict({"beta": 0.2}).beta == 0.2
    assert PPOConfig.from_dict(PPOConfig(lr=3e-4).to_dict()) == PPOConfig(lr=3e-4)


def _documented_fields(heading: str) -> list[str]:
    """The first-column names of the table under ``heading`` in docs/ppo.md."""
    text = (Path(__file__).parents[1] / "docs" / "ppo.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", section, flags=re.M)


def test_docs_tables_list_every_config_field() -> None:
    assert sorted(_documented_fields("PPOConfig fields")) == sorted(PPOConfig.field_names())
    assert _documented_fields("RunConfig fields") == RunConfig.field_names()
