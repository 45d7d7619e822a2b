"""The rollout on multi-turn envs (issue 14): what it records is what the env wrote, the KV cache's
prefill of inserted tokens gives the teacher-forced forward's log-probs and values, native ==
SyncVectorEnv, one warning where compiling was asked for, and the inference agents and the held-out
evaluation read the agent's tokens only."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from multiturn_helpers import FinalObservations, P, multiturn_envs

from tokengym.agents.batch import agent_columns
from tokengym.agents.episode_columns import inserted_ids
from tokengym.agents.policy import completion_logits, token_logprobs
from tokengym.agents.registry import make_agent
from tokengym.agents.rollout import collect_rollout, row_info
from tokengym.benchmarks.evaluate import exact_token_kl, rollout_kl
from tokengym.models import load_causal_lm

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lm() -> torch.nn.Module:
    return load_causal_lm("tiny-llama", device="cpu")


def teacher_forced(model, rollout, temperature=1.0, num_actions=49152, head=None):
    """Log-probs (and values) of the rollout's tokens from ONE forward over its sequences."""
    ids, am = rollout.sequences()
    cols = agent_columns(rollout.sequence_agent_mask(), rollout.tokens.shape[1])
    with torch.no_grad():
        logits, hidden = completion_logits(model, ids, am, rollout.tokens.shape[1],
                                           hidden=head is not None, columns=cols)
        logp = token_logprobs(logits, rollout.tokens, temperature, num_actions)[0]
        return logp, None if head is None else head(hidden).squeeze(-1)


def test_rollout_records_exactly_what_the_env_wrote(tokenizer, lm) -> None:
    envs = FinalObservations(multiturn_envs(tokenizer, 8))
    r = collect_rollout(envs, lm, seed=3, generator=torch.Generator().manual_seed(0))
    ids, am = r.sequences()
    width = ids.shape[1]
    inserted = am.sum(1) - r.prompt_mask.sum(1) - r.lengths
    assert len(set(inserted.tolist())) > 2 and len(set(r.lengths.tolist())) > 1  # rows differ
    assert sorted(envs.final) == list(range(8))
    for i, final in envs.final.items():
        assert final["input_ids"][:width].tolist() == ids[i].tolist()
        assert final["attention_mask"][:width].tolist() == am[i].tolist()
        assert final["attention_mask"][width:].sum() == 0
        assert final["agent_mask"][P:width].tolist() == r.agent_mask[i].long().tolist()
        agent_tokens = final["input_ids"][final["agent_mask"] == 1]
        assert r.tokens[i, : r.lengths[i]].tolist() == agent_tokens.tolist()  # the actions
    # Every step's reward is recorded at its step (a turn's reward where the turn ended), and
    # what the rollout prefilled is what each step's info says the row inserted.
    last = r.lengths - 1
    for t, info in enumerate(envs.infos):
        ins = inserted_ids(info, 8)
        for i in np.flatnonzero(r.mask[:, t].numpy()):
            row = row_info(info, int(i))
            if t < last[i]:
                assert float(r.step_rewards[i, t]) == pytest.approx(row.get("turn_reward", 0.0))
            assert ins[i] == tuple(row.get("inserted_ids", ()))
    torch.testing.assert_close(r.step_rewards.sum(-1), r.rewards)
    assert (r.step_rewards[~r.mask] == 0).all()


def test_cached_prefill_equals_the_teacher_forced_forward(tokenizer, lm) -> None:
    """Log-probs and values sampled through the KV cache (inserted tokens prefilled per row)
    equal those of one teacher-forced forward over the final sequences, read at agent tokens."""
    head = torch.nn.Linear(lm.config.hidden_size, 1)

    def value_fn(hidden: torch.Tensor) -> torch.Tensor:
        return head(hidden).squeeze(-1)

    envs = multiturn_envs(tokenizer, 6)
    r = collect_rollout(envs, lm, seed=5, temperature=0.8, value_fn=value_fn,
                        generator=torch.Generator().manual_seed(2))
    logp, values = teacher_forced(lm, r, 0.8, envs.single_action_space.n, head)
    m = r.mask
    torch.testing.assert_close(logp[m], r.logprobs[m], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(values[m], r.values[m], atol=1e-4, rtol=1e-4)
    assert (r.logprobs[~m] == 0).all() and (r.values[~m] == 0).all()


def test_native_and_sync_vector_envs_give_the_same_multiturn_rollout(tokenizer, lm) -> None:
    a = collect_rollout(multiturn_envs(tokenizer, 5), lm, seed=1,
                        generator=torch.Generator().manual_seed(0))
    b = collect_rollout(multiturn_envs(tokenizer, 5, sync=True), lm, seed=1,
                        generator=torch.Generator().manual_seed(0))
    for field in ("prompt_ids", "tokens", "mask", "logprobs", "rewards", "terminated",
                  "step_rewards", "episode_ids", "episode_mask", "agent_mask"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field))


def test_single_turn_rollouts_keep_their_layout(tokenizer, lm) -> None:
    envs = multiturn_envs(tokenizer, 3, responder=None, max_turns=None, max_insert_tokens=None)
    r = collect_rollout(envs, lm, seed=0, generator=torch.Generator().manual_seed(0))
    assert r.step_rewards is r.episode_ids is r.agent_mask is r.sequence_agent_mask() is None
    assert r.sequences()[0].shape == (3, P + envs.max_new_tokens)


def test_compiling_a_multiturn_rollout_warns_once_and_decodes_eagerly(tokenizer) -> None:
    model = load_causal_lm("tiny-llama", device="cpu")  # its own decoder slot
    eager = collect_rollout(multiturn_envs(tokenizer, 4), model, seed=2, compile=False,
                            generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = [collect_rollout(multiturn_envs(tokenizer, 4), model, seed=2, compile=True,
                                generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    notes = [w for w in caught if "multi-turn" in str(w.message)]
    assert len(notes) == 1 and issubclass(notes[0].category, RuntimeWarning)
    for run in runs:
        assert torch.equal(run.tokens, eager.tokens) and torch.equal(run.logprobs, eager.logprobs)


def test_inference_agents_roll_out_multiturn_episodes(tokenizer, lm) -> None:
    envs = multiturn_envs(tokenizer, 8)
    sample = make_agent("sample", envs, lm, {"seed": 0})
    rollout, metrics = sample.evaluate(envs, seed=4)
    assert rollout.agent_mask is not None
    assert metrics["reward_mean"] == pytest.approx(float(rollout.rewards.mean()))
    # greedy: KL(point mass || ref) = -sum of ref log-probs at the agent's tokens, temperature 1.
    greedy = make_agent("greedy", envs, lm, {"seed": 0})
    rollout, metrics = greedy.evaluate(envs, seed=4)
    logp, _ = teacher_forced(lm, rollout, 1.0, envs.single_action_space.n)
    expected = -(logp * rollout.mask).sum(-1).mean()
    assert metrics["kl_mean"] == pytest.approx(float(expected), rel=1e-4)
    # best-of-n keeps the best row of each group with every multi-turn field.
    best = make_agent("best-of-n", envs, lm, {"seed": 0, "samples_per_prompt": 4})
    chosen, metrics = best.evaluate(envs, seed=4)
    assert chosen.tokens.shape[0] == chosen.episode_ids.shape[0] == chosen.step_rewards.shape[0] == 2
    assert metrics["reward_mean"] == pytest.approx(float(chosen.rewards.mean()))


def test_evaluate_exact_kl_reads_only_the_agents_tokens(tokenizer, lm) -> None:
    policy = copy.deepcopy(lm)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    envs = multiturn_envs(tokenizer, 4)
    r = collect_rollout(envs, policy, seed=7, generator=torch.Generator().manual_seed(0))
    kl = rollout_kl(policy, lm, r, 1.0, envs.single_action_space.n, chunk_elements=1)
    ids, am = r.sequences()
    for i in range(4):  # one row at a time, every position of the full forward
        with torch.no_grad():
            pol = policy(input_ids=ids[i:i + 1], attention_mask=am[i:i + 1]).logits[0]
            ref = lm(input_ids=ids[i:i + 1], attention_mask=am[i:i + 1]).logits[0]
        agent_cols = P + torch.nonzero(r.agent_mask[i]).squeeze(-1)
        want = exact_token_kl(pol[agent_cols - 1], ref[agent_cols - 1], 1.0,
                              envs.single_action_space.n)
        n = int(r.lengths[i])
        torch.testing.assert_close(kl.exact[i, :n], want, atol=1e-4, rtol=1e-4)
