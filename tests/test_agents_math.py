"""Baseline agents' arithmetic and plumbing: RLOO/GRPO advantages against hand-computed values,
prompt groups through the env, best-of-N's analytic KL, the registry and config validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tokengym.agents.groups import PromptGroups, group_normalized_advantages, leave_one_out_advantages
from tokengym.agents.inference import best_of_n_kl
from tokengym.agents.registry import AGENTS, AgentSpec, make_config
from tokengym.agents.toy_task import make_toy_envs
from tokengym.models import load_causal_lm


def test_rloo_advantages_by_hand() -> None:
    # Group 1: [1, 2, 3, 6] -> each minus the mean of the other three:
    # 1 - 11/3, 2 - 10/3, 3 - 9/3, 6 - 6/3. Group 2: [0, 0, 4, 0] -> 0 - 4/3 (x3), 4 - 0.
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 4.0, 0.0])
    expected = torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0, -4 / 3, -4 / 3, 4.0, -4 / 3])
    torch.testing.assert_close(leave_one_out_advantages(rewards, 4), expected)
    # k = 2: each sample is compared with the other one.
    torch.testing.assert_close(leave_one_out_advantages(torch.tensor([1.0, 3.0]), 2),
                               torch.tensor([-2.0, 2.0]))
    with pytest.raises(ValueError):
        leave_one_out_advantages(rewards, 1)
    with pytest.raises(ValueError):
        leave_one_out_advantages(rewards, 3)  # 8 samples are not groups of 3


def test_grpo_advantages_by_hand() -> None:
    # Group [1, 2, 3, 6]: mean 3, unbiased std sqrt((4 + 1 + 0 + 9) / 3) = sqrt(14/3).
    # Group [5, 5, 5, 5]: all equal -> 0 (no signal), not NaN.
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0])
    std = math.sqrt(14 / 3)
    expected = torch.tensor([-2 / std, -1 / std, 0.0, 3 / std, 0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(group_normalized_advantages(rewards, 4, eps=0.0)[:4], expected[:4])
    torch.testing.assert_close(group_normalized_advantages(rewards, 4), expected, atol=1e-4,
                               rtol=1e-4)
    centred = group_normalized_advantages(rewards, 4, scale=False)
    torch.testing.assert_close(centred, torch.tensor([-2.0, -1.0, 0.0, 3.0, 0, 0, 0, 0]))


def test_best_of_n_kl_formula() -> None:
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75)
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)


def test_prompt_groups_share_prompts_through_the_env(tokenizer) -> None:
    model = load_causal_lm("tiny-llama", device="cpu")
    envs = PromptGroups(make_toy_envs(tokenizer, model, 8), 4)
    _, infos = envs.reset(seed=3)
    records = envs.unwrapped.episodes.records
    texts = [r.text for r in records]
    assert texts[:4] == [texts[0]] * 4 and texts[4:] == [texts[4]] * 4
    ids = envs.unwrapped.episodes.input_ids
    assert np.array_equal(ids[0], ids[3]) and np.array_equal(ids[4], ids[7])
    # The leaders drew their prompts as an ungrouped env would.
    plain = make_toy_envs(tokenizer, model, 8)
    plain.reset(seed=3)
    assert [plain.unwrapped.episodes.records[i].text for i in (0, 4)] == [texts[0], texts[4]]
    with pytest.raises(ValueError, match="multiple"):
        PromptGroups(make_toy_envs(tokenizer, model, 6), 4)


def test_registry_lists_every_agent_with_a_valid_default_config() -> None:
    assert list(AGENTS) == ["ppo", "reinforce", "rloo", "grpo", "a2c", "best-of-n", "sample",
                            "greedy", "sb3-ppo", "sb3-a2c"]
    assert all(isinstance(s, AgentSpec) and s.name == n for n, s in AGENTS.items())
    for name in AGENTS:
        config = make_config(name)
        assert config.num_envs >= 1 and hasattr(config, "seed") and hasattr(config, "temperature")
    assert AGENTS["a2c"].uses_value_head and not AGENTS["grpo"].uses_value_head
    assert not AGENTS["best-of-n"].trainable and AGENTS["rloo"].uses_reference
    # The "Agents" tables of the README and docs/agents.md are these specs, row by row (the
    # reference column may add a note after yes/no, as the SB3 rows do).
    root = Path(__file__).resolve().parents[1]
    for doc in (root / "README.md", root / "docs" / "agents.md"):
        section = doc.read_text(encoding="utf-8").rsplit("# Agents\n", 1)[1].split("\n#", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        assert len(rows) == len(AGENTS), doc
        for row, s in zip(rows, AGENTS.values()):
            yes = {True: "yes", False: "no"}
            expected = (f"| `{s.name}` | {s.family} | {s.samples_per_prompt} | "
                        f"{yes[s.uses_value_head]} | {yes[s.uses_reference]}")
            assert row.startswith(expected), (doc.name, row, expected)


@pytest.mark.parametrize("name, overrides, match", [
    ("rloo", {"samples_per_prompt": 1}, "samples_per_prompt"),
    ("rloo", {"num_envs": 6, "samples_per_prompt": 4}, "multiple"),
    ("grpo", {"num_minibatches": 3}, "num_minibatches"),
    ("grpo", {"clip_range": 0.0}, "clip_range"),
    ("reinforce", {"baseline_decay": 1.0}, "baseline_decay"),
    ("a2c", {"gamma": 1.5}, "gamma"),
    ("greedy", {"temperature": 0.7}, "temperature"),
    ("best-of-n", {"num_envs": 10, "samples_per_prompt": 4}, "multiple"),
    ("reinforce", {"temperature": 0.0}, "temperature"),
    ("rloo", {"not_a_field": 1}, "unknown"),
])
def test_bad_configs_raise_value_error(name: str, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_config(name, overrides)


def test_greedy_reports_its_kl_to_the_reference(tokenizer):
    """Greedy decoding is a point mass on one completion y: KL(greedy || ref) = -log ref(y) > 0."""
    from tokengym.agents.registry import make_agent
    from tokengym.envs import TextGenVectorEnv

    envs = TextGenVectorEnv(2, prompts=["Hello there", "Once upon"], reward_model="vader",
                            tokenizer=tokenizer, max_prompt_tokens=8, max_new_tokens=4)
    lm = load_causal_lm("tiny-llama", device="cpu")
    rollout, metrics = make_agent("greedy", envs, lm).evaluate(envs, seed=0)
    ids, mask = rollout.sequences()
    with torch.no_grad():
        logits = lm(input_ids=ids, attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, 7:-1]
    logp = torch.log_softmax(logits, -1).gather(-1, rollout.tokens[..., None]).squeeze(-1)
    expected = -(logp * rollout.mask).sum(-1).mean()
    assert metrics["kl_mean"] == pytest.approx(float(expected), rel=1e-4)
    assert metrics["kl_mean"] > 1.0  # a random model is far from a point mass
    assert make_agent("sample", envs, lm).evaluate(envs, seed=0)[1]["kl_mean"] == 0.0
