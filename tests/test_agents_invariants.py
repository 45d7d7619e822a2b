"""Invariants of every trainable agent (PPO, REINFORCE, RLOO, GRPO, A2C) that catch the classic
RL-for-LMs bugs (project issue 12, item 5):

1. the first minibatch of the first epoch sees ratio == 1 and approx_kl == 0 through the REAL loss
   (rollout and update compute the same log-probs);
2. the rollout's KV-cache values and log-probs equal teacher-forced ones;
3. PPO's loss against hand-computed numbers (clipping of ratio and value, entropy's sign,
   gradients);
4. a position-dependent reward (only the FIRST token counts) that every agent must learn;
5. the critic explains the returns (explained variance > 0);
6. terminated and truncated episodes in one batch: masks, where the score goes, GAE outside the
   mask, the no-stop penalty;
7. no NaN from padded positions with extreme log-probs, for every agent.

Everything runs on the random ``tiny-llama``; see :mod:`tokengym.agents.toy_task` for why the
sampling temperature is low (0.1).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch

from tokengym.agents.advantages import gae, last_step_index, shaped_rewards
from tokengym.agents.base import TrainableAgent
from tokengym.agents.batch import Batch, trim_columns
from tokengym.agents.grpo import GRPOAgent, GRPOConfig
from tokengym.agents.policy import token_logprobs
from tokengym.agents.ppo import PPOAgent, clipped_surrogate
from tokengym.agents.ppo_config import PPOConfig
from tokengym.agents.registry import make_agent
from tokengym.agents.rollout import Rollout
from tokengym.agents.toy_task import TOY_PROMPTS, TargetFractionReward, embedding_targets
from tokengym.envs import TextGenVectorEnv
from tokengym.models import load_causal_lm

TRAINABLE = ("ppo", "reinforce", "rloo", "grpo", "a2c")
MAX_NEW = 4
# Every 4th token id ends the episode: ~25% per step, so with 4 steps about a third of the rows
# are truncated and the others stop early on a stop token (the random tiny model's tokens are
# unrelated to id % 4).
STOP_IDS = list(range(0, 49152, 4))  # 49152: tiny-llama's vocabulary

# Tiny-model ops are too small to gain from threads; one thread avoids contention stalls.
pytestmark = pytest.mark.usefixtures("one_thread")


# -- helpers -----------------------------------------------------------------------------------
class PromptReward:
    """``rm(prompts, completions)``: 1.0 for half of the toy prompts, whatever the completion, so
    the return is a function of the state that a working critic can learn exactly."""

    name = "prompt_only"
    GOOD = frozenset(TOY_PROMPTS[::2])

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return [float(p in self.GOOD) for p in prompts]


@pytest.fixture(scope="module")
def base_lm() -> torch.nn.Module:
    """tiny-llama, loaded once; tests train deep copies (``fresh``)."""
    return load_causal_lm("tiny-llama", device="cpu")


def fresh(base_lm: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(base_lm)


def make_envs(tokenizer: Any, reward_model: Any, num_envs: int = 16, *,
              stop_tokens: list[int] | None = None) -> TextGenVectorEnv:
    return TextGenVectorEnv(num_envs, prompts=list(TOY_PROMPTS), reward_model=reward_model,
                            tokenizer=tokenizer, max_prompt_tokens=8, max_new_tokens=MAX_NEW,
                            stop_tokens=stop_tokens)


def first_token_envs(tokenizer: Any, model: torch.nn.Module, num_envs: int = 16, *,
                     stop_tokens: list[int] | None = None) -> TextGenVectorEnv:
    # 25% of the vocabulary (toy_task uses 10%): with one rewarded token per episode, 10% gave
    # too few non-zero rewards per 16-row rollout to learn within 25 iterations at lr <= 3e-3.
    rm = TargetFractionReward(tokenizer, embedding_targets(model, fraction=0.25),
                              first_token_only=True)
    return make_envs(tokenizer, rm, num_envs, stop_tokens=stop_tokens)


def agent_on(name: str, envs: Any, lm: torch.nn.Module, **overrides: Any) -> TrainableAgent:
    return make_agent(name, envs, lm, {"num_envs": envs.num_envs, "seed": 0, "temperature": 0.1,
                                       "beta": 0.0, **overrides})


def record_loss_calls(agent: TrainableAgent) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Wrap ``agent.optimize`` so that each call of the agent's REAL ``loss_fn`` is recorded as
    ``(mask of its rows, its per-token stats)``, in call order."""
    calls: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
    optimize = agent.optimize

    def spy(b: Batch, loss_fn: Callable, *args: Any, **kwargs: Any) -> dict[str, float]:
        def recorded(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            per_token, stats = loss_fn(idx)
            calls.append((b.mask[idx].clone(), {k: v.detach().clone() for k, v in stats.items()}))
            return per_token, stats
        return optimize(b, recorded, *args, **kwargs)

    agent.optimize = spy  # type: ignore[method-assign]
    return calls


def capture_loss_fn(agent: TrainableAgent) -> dict[str, Callable]:
    """Replace ``agent.optimize`` by one that only keeps the ``loss_fn`` that ``update`` built
    (under ``"fn"``), so the test can call the agent's real loss on rows of its choice."""
    captured: dict[str, Callable] = {}

    def keep(b: Batch, loss_fn: Callable, *args: Any, **kwargs: Any) -> dict[str, float]:
        captured["fn"] = loss_fn
        return {}

    agent.optimize = keep  # type: ignore[method-assign]
    return captured


def masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x[mask]


# -- 1. ratio == 1 on the first minibatch ------------------------------------------------------
@pytest.mark.parametrize("name", ["ppo", "grpo"])
def test_first_minibatch_has_ratio_one_through_the_real_loss(tokenizer, base_lm, name: str
                                                             ) -> None:
    """Guards the rollout/update log-prob mismatch (temperature applied in one place only, other
    padding or positions, dropout on, a stale ``logprobs`` tensor): before any optimizer step the
    policy IS the one that sampled, so the loss's ratio must be 1, approx_kl 0 and nothing
    clipped. Later minibatches must move (else the capture proves nothing)."""
    lm = fresh(base_lm)
    agent = agent_on(name, first_token_envs(tokenizer, lm), lm, lr=1e-3, epochs=2,
                     num_minibatches=2)
    calls = record_loss_calls(agent)
    record = agent.train_iteration()
    # 2 epochs x 2 minibatches, one micro-batch each; the steps after the minibatch that
    # triggers PPO's early stop run on the critic's own loss (cached trunk features)
    later_critic_steps = record.get("critic_only_updates", 0) - record.get("early_stop", 0)
    assert len(calls) == 4 - int(later_critic_steps) >= 3
    mask, stats = calls[0]
    assert mask.sum() > 0
    ratio = masked(stats["ratio_mean"], mask)
    assert abs(float(ratio.mean()) - 1) < 1e-5, float(ratio.mean())
    assert float((ratio - 1).abs().max()) < 1e-4  # measured <= 2.4e-6 at temperature 0.1
    assert abs(float(masked(stats["approx_kl"], mask).mean())) < 1e-6
    assert float(masked(stats["clip_fraction"], mask).sum()) == 0.0
    later = max(float(masked(s["approx_kl"], m).mean()) for m, s in calls[2:])
    assert later > 1e-6, "the policy did not move: the ratio check above would be vacuous"


@pytest.mark.parametrize("name", TRAINABLE)
def test_update_logprobs_equal_rollout_logprobs_before_the_first_step(tokenizer, base_lm,
                                                                       name: str) -> None:
    """Every agent's teacher-forced ``policy_forward`` (what its loss differentiates) gives, before
    any step, the log-probs the rollout sampled with (same temperature, same positions)."""
    lm = fresh(base_lm)
    agent = agent_on(name, first_token_envs(tokenizer, lm, stop_tokens=STOP_IDS), lm, lr=1e-3)
    batch, _ = agent.prepare(agent.collect())
    forward = agent.policy_forward
    seen: list[torch.Tensor] = []

    def spy(b: Batch, idx: torch.Tensor) -> Any:
        out = forward(b, idx)
        if not seen:
            seen.append(out[0].detach().clone())
            seen.append(idx.clone())
        return out

    agent.policy_forward = spy  # type: ignore[method-assign]
    agent.update(batch)
    logprobs, idx = seen
    mask = batch.mask[idx]
    diff = (logprobs - batch.logprobs[idx])[mask].abs().max()
    assert float(diff) < 1e-4, float(diff)


# -- 2. rollout values / log-probs == teacher-forced ------------------------------------------
@pytest.mark.parametrize("name", ["ppo", "a2c"])
def test_rollout_values_and_logprobs_equal_teacher_forced(tokenizer, base_lm, name: str) -> None:
    """The values (and log-probs) written during KV-cache sampling are those of the state before
    each token; a teacher-forced forward on the finished sequences must give the same numbers on
    every episode step (rows of different prompt and episode lengths: left padding, early stops).
    Guards off-by-one positions, position ids under left padding, and values read from the wrong
    hidden state. The value head starts at zero, so it is randomised first."""
    lm = fresh(base_lm)
    agent = agent_on(name, first_token_envs(tokenizer, lm, stop_tokens=STOP_IDS), lm)
    with torch.no_grad():
        head = agent.policy.value_head
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(0))
                          * 0.1)
        head.bias.fill_(0.3)
    rollout = agent.collect()
    mask = rollout.mask
    assert len(set(rollout.lengths.tolist())) > 1, "need rows of different lengths"
    g = rollout.tokens.shape[1]
    ids, am = trim_columns(*rollout.sequences(), g)
    with torch.no_grad():
        logits, values = agent.policy.forward_policy(ids, am, g)
        logprobs, _ = token_logprobs(logits, rollout.tokens, agent.config.temperature,
                                     agent.num_actions)
    assert rollout.values is not None
    assert float(values[mask].abs().mean()) > 0.05  # not trivially zero
    torch.testing.assert_close(rollout.values[mask], values[mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(rollout.logprobs[mask], logprobs[mask], atol=1e-4, rtol=0)
    assert rollout.values[~mask].eq(0).all() and rollout.logprobs[~mask].eq(0).all()
    # The same through the prepared batch and the agent's own update forward.
    batch, _ = agent.prepare(rollout)
    with torch.no_grad():
        lp, _, v = agent.policy_forward(batch, torch.arange(len(batch.mask)))
    torch.testing.assert_close(v[batch.mask], batch.values[batch.mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(lp[batch.mask], batch.logprobs[batch.mask], atol=1e-4, rtol=0)


# -- 3. PPO's loss by hand ---------------------------------------------------------------------
# Two episodes of 3 and 2 steps (one padded column). Ratios inside and outside [0.8, 1.2] with
# positive and negative advantages; value moves inside and outside the value clip.
RATIOS = [[0.5, 1.1, 1.5], [0.5, 1.5, 1.0]]
ADV = [[1.0, 2.0, 1.0], [-1.0, -0.5, 0.0]]
OLD_V = [[0.0, 0.0, 1.0], [0.5, 0.0, 0.0]]
NEW_V = [[0.5, 0.5, 0.9], [-0.5, 0.0, 0.0]]
RET = [[1.0, 0.3, 0.0], [-1.0, 2.0, 0.0]]
MASK = [[True, True, True], [True, True, False]]
OLD_LP = [[-1.0, -2.0, -0.5], [-3.0, -1.5, 0.0]]
EPS, VCLIP, VF, ENT = 0.2, 0.2, 0.5, 0.01
# Row 0 predicts from a uniform distribution over 4 actions, row 1 from a peaked one.
PROBS = [[0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]]


def hand_entropy(p: list[float]) -> float:
    return -sum(q * math.log(q) for q in p)


def hand_pg(a: float, r: float) -> float:
    clipped = min(max(r, 1 - EPS), 1 + EPS)
    return max(-a * r, -a * clipped)


def hand_value_loss(v: float, old: float, ret: float) -> float:
    v_clipped = old + min(max(v - old, -VCLIP), VCLIP)
    return max((v - ret) ** 2, (v_clipped - ret) ** 2)


def test_clipped_surrogate_by_hand() -> None:
    """The per-token clipped surrogate and its stats against numbers worked out by hand: a
    positive advantage gains nothing from pushing the ratio above 1 + eps but is not clipped
    below 1 - eps (the pessimistic bound), and the reverse for a negative advantage."""
    # By hand: A=+1, r=0.5 -> max(-0.5, -0.8) = -0.5 (unclipped); A=+2, r=1.1 -> -2.2;
    # A=+1, r=1.5 -> max(-1.5, -1.2) = -1.2 (clipped); A=-1, r=0.5 -> max(0.5, 0.8) = 0.8
    # (clipped); A=-0.5, r=1.5 -> max(0.75, 0.6) = 0.75 (unclipped).
    assert [hand_pg(a, r) for a, r in zip(ADV[0], RATIOS[0])] == pytest.approx([-0.5, -2.2, -1.2])
    assert [hand_pg(a, r) for a, r in zip(ADV[1][:2], RATIOS[1][:2])] == pytest.approx([0.8, 0.75])
    log_ratio = torch.tensor(RATIOS).log().requires_grad_(True)
    loss, stats = clipped_surrogate(torch.tensor(ADV), log_ratio, EPS)
    expected = [[hand_pg(a, r) for a, r in zip(ra, rr)] for ra, rr in zip(ADV, RATIOS)]
    torch.testing.assert_close(loss, torch.tensor(expected))
    torch.testing.assert_close(stats["ratio_mean"], torch.tensor(RATIOS))
    kl = [[(r - 1) - math.log(r) for r in row] for row in RATIOS]
    torch.testing.assert_close(stats["approx_kl"], torch.tensor(kl))
    clip = [[float(abs(r - 1) > EPS) for r in row] for row in RATIOS]
    assert stats["clip_fraction"].tolist() == clip
    # Gradient: zero where the clipped branch is active, -A * r where the unclipped one is.
    loss.sum().backward()
    grad = [[0.0 if c and hand_pg(a, r) != -a * r else -a * r for a, r, c in zip(ra, rr, rc)]
            for ra, rr, rc in zip(ADV, RATIOS, clip)]
    assert grad[0] == pytest.approx([-0.5, -2.2, 0.0]) and grad[1][:2] == pytest.approx([0.0, 0.75])
    torch.testing.assert_close(log_ratio.grad, torch.tensor(grad))


def hand_batch() -> Batch:
    mask = torch.tensor(MASK)
    old_lp = torch.tensor(OLD_LP)
    return Batch(
        input_ids=torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 5,
                                                                                dtype=torch.long),
        tokens=torch.zeros(2, 3, dtype=torch.long), mask=mask, logprobs=old_lp,
        ref_logprobs=old_lp.clone(), kl=torch.zeros(2, 3), scores=torch.zeros(2),
        values=torch.tensor(OLD_V), advantages=torch.tensor(ADV), returns=torch.tensor(RET))


def patch_policy_forward(agent: TrainableAgent, probs: list[list[float]]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Make ``agent.policy_forward`` return chosen log-probs (``OLD_LP + log RATIOS``), values
    ``NEW_V`` and per-row distributions ``probs``; returns the two leaves (for their grads)."""
    new_lp = (torch.tensor(OLD_LP) + torch.tensor(RATIOS).log()).requires_grad_(True)
    new_v = torch.tensor(NEW_V, requires_grad=True)
    logp = torch.tensor(probs).log()[:, None, :].expand(2, 3, 4)

    def forward(b: Batch, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return new_lp[idx], logp[idx], new_v[idx]

    agent.policy_forward = forward  # type: ignore[method-assign]
    return new_lp, new_v


def ppo_agent(base_lm: torch.nn.Module, **changes: Any) -> PPOAgent:
    config = PPOConfig(num_envs=2, epochs=1, num_minibatches=1, clip_range=EPS,
                       value_clip_range=VCLIP, vf_coef=VF, ent_coef=ENT, seed=0, **changes)
    return PPOAgent(None, fresh(base_lm), config)


def test_ppo_loss_fn_by_hand(base_lm) -> None:
    """PPOAgent.update's own loss_fn on a constructed batch (policy_forward patched to return
    chosen log-probs, values and distributions): per-token loss = clipped surrogate +
    vf_coef * 0.5 * clipped value loss - ent_coef * entropy, the metrics are its token means,
    and the gradients reaching log-probs and values are the hand-computed ones."""
    # Value loss by hand: (0,0) V moved +0.5 from 0, clipped to 0.2: max(0.25, 0.64) = 0.64;
    # (0,1) max(0.04, 0.01) = 0.04; (0,2) inside the clip: 0.81; (1,0) V moved -1 from 0.5,
    # clipped to 0.3: max(0.25, 1.69) = 1.69; (1,1) V = old = 0, R = 2: 4.0.
    v_loss = [[hand_value_loss(v, o, r) for v, o, r in zip(*rows)]
              for rows in zip(NEW_V, OLD_V, RET)]
    assert v_loss[0] == pytest.approx([0.64, 0.04, 0.81]) and v_loss[1][:2] == pytest.approx(
        [1.69, 4.0])
    entropy = [hand_entropy(p) for p in PROBS]  # log 4 = 1.386, 0.940
    per_token = [[hand_pg(a, r) + VF * 0.5 * vl - ENT * entropy[i]
                  for a, r, vl in zip(ADV[i], RATIOS[i], v_loss[i])] for i in range(2)]

    agent = ppo_agent(base_lm)
    captured = capture_loss_fn(agent)
    patch_policy_forward(agent, PROBS)
    batch = hand_batch()
    agent.update(batch)
    loss, stats = captured["fn"](torch.arange(2))
    mask = batch.mask
    torch.testing.assert_close(loss[mask], torch.tensor(per_token)[mask])
    torch.testing.assert_close(stats["value_loss"][mask], 0.5 * torch.tensor(v_loss)[mask])

    # The real optimize: metrics are token means over the 5 episode steps, and the gradient of
    # the mean loss reaches the log-probs and values exactly as worked out by hand.
    agent = ppo_agent(base_lm)
    new_lp, new_v = patch_policy_forward(agent, PROBS)
    metrics = agent.update(hand_batch())
    steps = [(i, t) for i in range(2) for t in range(3) if MASK[i][t]]
    n = len(steps)

    def mean(f: Callable[[int, int], float]) -> float:
        return sum(f(i, t) for i, t in steps) / n

    assert metrics["policy_loss"] == pytest.approx(mean(lambda i, t: hand_pg(ADV[i][t],
                                                                               RATIOS[i][t])))
    assert metrics["value_loss"] == pytest.approx(mean(lambda i, t: 0.5 * v_loss[i][t]))
    assert metrics["entropy"] == pytest.approx(mean(lambda i, t: entropy[i]), rel=1e-5)
    assert metrics["clip_fraction"] == pytest.approx(4 / 5)  # all but r = 1.1
    assert metrics["ratio_mean"] == pytest.approx(mean(lambda i, t: RATIOS[i][t]))
    assert metrics["approx_kl"] == pytest.approx(
        mean(lambda i, t: RATIOS[i][t] - 1 - math.log(RATIOS[i][t])), rel=1e-5)
    # d(mean loss)/d logprob = -A * r / n where the unclipped branch is active, else 0.
    lp_grad = [[0.0] * 3 for _ in range(2)]
    lp_grad[0][0], lp_grad[0][1], lp_grad[1][1] = -1.0 * 0.5 / n, -2.0 * 1.1 / n, 0.5 * 1.5 / n
    torch.testing.assert_close(new_lp.grad, torch.tensor(lp_grad))
    # d/dV = vf_coef * (V - R) / n where the unclipped value loss is active, else 0.
    v_grad = [[0.0] * 3 for _ in range(2)]
    v_grad[0][1], v_grad[0][2], v_grad[1][1] = VF * 0.2 / n, VF * 0.9 / n, VF * -2.0 / n
    torch.testing.assert_close(new_v.grad, torch.tensor(v_grad))


def test_ppo_loss_decreases_as_entropy_increases(base_lm) -> None:
    """With ent_coef > 0 the entropy is a bonus: the same tokens scored under a flatter
    distribution have a LOWER loss, by exactly ent_coef * (H_flat - H_peaked) (a sign slip
    would make the policy collapse faster instead of exploring)."""
    losses = []
    for probs in ([[0.7, 0.1, 0.1, 0.1]] * 2, [[0.25] * 4] * 2):
        agent = ppo_agent(base_lm)
        captured = capture_loss_fn(agent)
        patch_policy_forward(agent, probs)
        agent.update(hand_batch())
        losses.append(captured["fn"](torch.arange(2))[0].detach())
    peaked, flat = losses
    gap = ENT * (hand_entropy([0.25] * 4) - hand_entropy([0.7, 0.1, 0.1, 0.1]))
    assert gap > 0
    mask = torch.tensor(MASK)
    torch.testing.assert_close((peaked - flat)[mask], torch.full((5,), gap))


def test_grpo_loss_fn_by_hand(base_lm) -> None:
    """GRPOAgent's loss_fn: clipped surrogate + beta * k3(pi, ref) - ent_coef * entropy, with k3
    = exp(ref - logp) - 1 + (logp - ref) of the CURRENT log-probs, and 0 on padding."""
    beta = 0.1
    config = GRPOConfig(num_envs=2, samples_per_prompt=2, clip_range=EPS, ent_coef=ENT,
                        beta=beta, seed=0)
    agent = GRPOAgent(None, fresh(base_lm), config)
    captured = capture_loss_fn(agent)
    patch_policy_forward(agent, PROBS)
    batch = hand_batch()
    batch.ref_logprobs = torch.tensor([[-1.5, -1.0, -0.7], [-2.0, -2.5, 0.0]])
    agent.update(batch)
    loss, stats = captured["fn"](torch.arange(2))
    expected = torch.zeros(2, 3)
    for i, t in [(i, t) for i in range(2) for t in range(3) if MASK[i][t]]:
        logp = OLD_LP[i][t] + math.log(RATIOS[i][t])
        d = logp - float(batch.ref_logprobs[i, t])
        k3 = math.exp(-d) - 1 + d
        assert float(stats["kl_loss"][i, t]) == pytest.approx(k3, rel=1e-5)
        expected[i, t] = hand_pg(ADV[i][t], RATIOS[i][t]) + beta * k3 - ENT * hand_entropy(
            PROBS[i])
    mask = batch.mask
    torch.testing.assert_close(loss[mask], expected[mask])
    assert float(stats["kl_loss"][~mask].abs().max()) == 0.0


# -- 4. a position-dependent reward every agent learns ----------------------------------------
ITERATIONS = 25
# Per-agent settings (beta = 0 isolates the learning signal; temperature 0.1, 16 rows, 4 tokens,
# seed 0). lr 1e-3 for PPO (2 epochs x 2 minibatches = 4 steps per rollout); the one-step agents
# need 3e-3 (at 1e-3 REINFORCE/RLOO/GRPO/A2C stayed near chance for 25 iterations; at 1e-2 RLOO
# collapsed onto a non-target first token). value_lr 1e-2 for the critics (see test 5).
# Each agent's settings are pinned here (PPO's defaults have a warm-up and an approximate-KL
# early stop tuned for SmolLM2, not for this toy): the thresholds below were measured with them.
LEARN = {
    "ppo": dict(lr=1e-3, epochs=2, num_minibatches=2, value_lr=1e-2, warmup_iterations=0,
                max_approx_kl=None),
    "reinforce": dict(lr=3e-3),
    "rloo": dict(lr=3e-3),
    "grpo": dict(lr=3e-3),
    "a2c": dict(lr=3e-3, value_lr=1e-2),
}


@pytest.fixture(scope="module")
def first_token_runs(tokenizer, base_lm) -> Callable[[str], list[dict]]:
    """``run(name)``: the metrics of ITERATIONS iterations of agent ``name`` on the first-token
    task (computed once per module, shared by tests 4 and 5)."""
    cache: dict[str, list[dict]] = {}

    def run(name: str) -> list[dict]:
        if name not in cache:
            lm = fresh(base_lm)
            agent = agent_on(name, first_token_envs(tokenizer, lm), lm, **LEARN[name])
            cache[name] = [agent.train_iteration() for _ in range(ITERATIONS)]
        return cache[name]

    return run


@pytest.mark.parametrize("name", TRAINABLE)
def test_agent_learns_a_first_token_reward(first_token_runs, name: str) -> None:
    """Only the FIRST generated token decides the score, and the score arrives after the last
    token: the agent must credit the right position (a shaped reward at the wrong step, or
    advantages shifted by one, leave it at chance).

    Measured mean reward of the first 5 / last 5 iterations, seeds 0, 1, 2:
    ppo 0.38/0.76, 0.30/0.84, 0.31/0.91; reinforce 0.28/0.79, 0.29/0.66, 0.36/0.90;
    rloo 0.28/0.71, 0.20/0.90, 0.21/0.95; grpo 0.31/0.68, 0.34/0.95, 0.26/0.96;
    a2c 0.42/0.81, 0.33/0.88, 0.40/1.00 (chance ~0.2-0.4: 25% of the tokens are targets).
    Smallest gain 0.37, smallest final 0.66: thresholds 0.2 and 0.5.
    """
    rewards = [m["reward_mean"] for m in first_token_runs(name)]
    first, last = float(np.mean(rewards[:5])), float(np.mean(rewards[-5:]))
    curve = [round(r, 2) for r in rewards]
    assert last >= 0.5 and last - first >= 0.2, f"{name}: {first:.2f} -> {last:.2f}, {curve}"


# -- 5. the critic explains the returns --------------------------------------------------------
@pytest.mark.parametrize("name", ["ppo", "a2c"])
def test_critic_explained_variance_rises_above_zero(tokenizer, base_lm, name: str) -> None:
    """With returns that are a function of the state (the score depends only on the prompt), a
    critic that reads the right hidden state and regresses on the right targets must explain
    most of their variance. Values start at 0, so the first iterations have EV <= 0
    (-1.28..-0.99 measured); a critic trained on misaligned values/returns stays there.

    Policy lr 1e-4 (the policy barely moves), value_lr 1e-2. Measured mean EV of iterations 8-12,
    seeds 0, 1, 2: ppo 0.75, 0.72, 0.70; a2c 0.61, 0.65, 0.51. Threshold 0.3.
    """
    lm = fresh(base_lm)
    extra = dict(epochs=2, num_minibatches=2) if name == "ppo" else {}
    agent = agent_on(name, make_envs(tokenizer, PromptReward()), lm, lr=1e-4, value_lr=1e-2,
                     **extra)
    ev = [agent.train_iteration()["explained_variance"] for _ in range(12)]
    assert ev[0] < 0  # values are 0, the returns are not
    assert float(np.mean(ev[-5:])) > 0.3, [round(e, 2) for e in ev]


def test_ppo_critic_explains_the_first_token_task(first_token_runs) -> None:
    """On the first-token task, PPO's explained variance ends above 0 (rollouts where every
    episode scored the same are left out: their returns vary only by the critic's bootstrap
    noise, so EV there is -100 or so whatever the critic).

    Measured median EV of the last 8 iterations, seeds 0, 1, 2: 0.30, 0.17, 0.90 (value_lr 1e-2;
    with the default value_lr = lr = 1e-3: 0.01, -0.18, -0.33). The MEAN is not robust: one
    rollout with 15 of 16 equal scores gave -5.4 (seed 1). A2C's critic, one step per rollout,
    did not reach EV > 0 on this task (medians -0.20, -0.30 over seeds 0, 1; seed 2 scored the
    same on every episode of the last 8 rollouts): not asserted, see the prompt-reward test.
    """
    records = first_token_runs("ppo")[-8:]
    ev = [m["explained_variance"] for m in records if m["reward_std"] > 0]
    assert len(ev) >= 4
    assert float(np.median(ev)) > 0, [round(e, 2) for e in ev]


# -- 6. terminated and truncated episodes in one batch ----------------------------------------
def test_terminated_and_truncated_rows_in_one_batch(tokenizer, base_lm) -> None:
    """Rows that stop on a stop token before max_new_tokens next to rows truncated at it:
    masks are prefixes of each row's length, the score sits on each row's LAST real token, GAE
    leaves nothing outside the mask (and ignores whatever values sit there), and the no-stop
    penalty reaches the truncated rows only."""
    lm = fresh(base_lm)
    envs = first_token_envs(tokenizer, lm, stop_tokens=STOP_IDS)
    agent = agent_on("ppo", envs, lm, beta=0.05, no_stop_penalty=-1.0)
    rollout: Rollout = agent.collect()
    lengths, term = rollout.lengths, rollout.terminated
    assert term.any() and (~term).any(), "need both kinds of rows"
    assert (lengths[term] < MAX_NEW).any(), "need rows stopping before max_new_tokens"
    assert (lengths[~term] == MAX_NEW).all()
    steps = torch.arange(rollout.tokens.shape[1])
    assert torch.equal(rollout.mask, steps[None, :] < lengths[:, None])  # prefixes
    stop = set(STOP_IDS)
    for i, info in enumerate(rollout.infos):
        n = int(lengths[i])
        assert info["completion_tokens"] == n
        assert bool(term[i]) == (info["stop_reason"] == "stop_token")
        row = rollout.tokens[i, :n].tolist()
        if term[i]:
            assert row[-1] in stop and not stop & set(row[:-1])
        else:
            assert not stop & set(row)
    assert rollout.logprobs[~rollout.mask].eq(0).all()
    assert rollout.values is not None and rollout.values[~rollout.mask].eq(0).all()

    batch, metrics = agent.prepare_common(rollout)
    assert metrics["stop_fraction"] == pytest.approx(float(term.float().mean()))
    assert metrics["episode_length_mean"] == pytest.approx(float(lengths.float().mean()))
    # The no-stop penalty: -1 on truncated rows only.
    no_penalty = copy.copy(agent)  # same policy and reference, config without the penalty
    no_penalty.config = dataclasses.replace(agent.config, no_stop_penalty=None)
    plain, _ = no_penalty.prepare_common(rollout)
    torch.testing.assert_close(plain.scores, rollout.rewards)
    torch.testing.assert_close(batch.scores - plain.scores, torch.where(term, 0.0, -1.0))

    # Shaped rewards: -beta * KL everywhere on the mask, plus the score at the last real token.
    beta = 0.05
    rewards, kl = shaped_rewards(batch.scores, batch.logprobs, batch.ref_logprobs, batch.mask,
                                 beta)
    mask = batch.mask
    last = last_step_index(mask)
    assert torch.equal(last, lengths - 1)
    score_part = rewards + beta * kl
    expected = torch.zeros_like(score_part)
    expected[torch.arange(len(last)), last] = batch.scores
    torch.testing.assert_close(score_part, expected)
    assert rewards[~mask].eq(0).all() and kl[~mask].eq(0).all()

    # GAE: zero advantages and returns outside the mask; the last real step bootstraps from 0,
    # so garbage values in the padded columns change nothing.
    values = batch.values.clone()
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    assert adv[~mask].eq(0).all() and ret[~mask].eq(0).all()
    junk = torch.where(mask, values, torch.full_like(values, 7.0))
    adv2, ret2 = gae(rewards, junk, mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv2, adv)
    torch.testing.assert_close(ret2, ret)
    rows = torch.arange(len(last))
    torch.testing.assert_close(adv[rows, last], rewards[rows, last] - values[rows, last])
    # Through the agent (whitening included): still nothing outside the mask.
    agent.advantages(batch)
    assert batch.advantages[~mask].eq(0).all() and batch.returns[~mask].eq(0).all()


# -- 7. no NaN from padded positions ----------------------------------------------------------
@pytest.mark.parametrize("case", ["current", "stored"])
@pytest.mark.parametrize("fill", [-100.0, -1e4])
@pytest.mark.parametrize("name", TRAINABLE)
def test_update_is_finite_with_extreme_logprobs_on_padding(tokenizer, base_lm, name: str,
                                                           fill: float, case: str) -> None:
    """Rows of different lengths at a very low temperature (0.01), with log-probs of ``fill`` at
    the PADDED positions: ``current``: the update's teacher-forced log-probs (what a 0.01
    temperature does to the filler token there); ``stored``: the rollout's and the reference's.
    exp() of such a log-ratio overflows to inf, and inf * 0 = NaN in the backward pass unless the
    log-ratio is masked BEFORE exp (GRPO's k3 once was not). Every parameter and every metric
    must stay finite."""
    lm = fresh(base_lm)
    envs = first_token_envs(tokenizer, lm, stop_tokens=STOP_IDS)
    agent = agent_on(name, envs, lm, lr=1e-3, temperature=0.01, beta=0.1)
    rollout = agent.collect()
    assert len(set(rollout.lengths.tolist())) > 1, "need rows of different lengths"
    pad = ~rollout.mask
    if case == "stored":
        rollout.logprobs = torch.where(pad, fill, rollout.logprobs)
    batch, prep_metrics = agent.prepare(rollout)
    mask = batch.mask
    assert (~mask).any()
    if case == "stored":
        batch.logprobs = torch.where(mask, batch.logprobs, fill)
        batch.ref_logprobs = torch.where(mask, batch.ref_logprobs, fill)
    else:
        forward = agent.policy_forward

        def extreme(b: Batch, idx: torch.Tensor) -> Any:
            logprobs, logp, values = forward(b, idx)
            # Gradients still flow through the padded positions, as in a real forward.
            return logprobs + torch.where(b.mask[idx], 0.0, fill), logp, values

        agent.policy_forward = extreme  # type: ignore[method-assign]
    metrics = agent.update(batch)
    bad = {k: v for k, v in {**prep_metrics, **metrics}.items() if not math.isfinite(v)}
    assert not bad, f"{name}: non-finite metrics {bad}"
    for pname, p in agent.policy.named_parameters():
        if p.requires_grad:
            assert torch.isfinite(p).all(), f"{name}: parameter {pname} is not finite"
