"""KLPenaltyWrapper: env-side -beta * KL_t to a frozen reference, for third-party agents."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import PROMPTS, length_reward

from tokengym.agents.agent_config import TokengymDeprecationWarning
from tokengym.agents.kl import kl_per_token
from tokengym.agents.kl_wrapper import KLPenaltyWrapper
from tokengym.envs import TextGenEnv
from tokengym.models import load_causal_lm

P, G = 16, 6


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    return load_causal_lm("tiny-llama", device="cpu")


@pytest.fixture(scope="module")
def policy(reference: torch.nn.Module) -> torch.nn.Module:
    """The reference with perturbed weights: a policy some way into training."""
    lm = copy.deepcopy(reference)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return lm


def _env() -> TextGenEnv:
    return TextGenEnv(prompts=PROMPTS, reward_model=length_reward, tokenizer="tiny-llama",
                      max_prompt_tokens=P, max_new_tokens=G)


def _actions(seed: int, eos: int, n: int = G) -> list[int]:
    rng = np.random.default_rng(seed)
    return [eos if rng.random() < 0.1 else int(rng.integers(300, 5000)) for _ in range(n)]


def _play(env: gym.Env, actions: list[int], **reset_kwargs):
    """Reset, play ``actions`` until the episode ends; returns (reset obs, [(reward, info)...], last obs)."""
    obs0, _ = env.reset(**reset_kwargs)
    steps, obs = [], obs0
    for a in actions:
        obs, reward, term, trunc, info = env.step(a)
        steps.append((reward, info))
        if term or trunc:
            break
    return obs0, steps, obs


def _direct_logprobs(model: torch.nn.Module, obs: dict[str, np.ndarray], n_gen: int,
                     temperature: float, num_actions: int) -> torch.Tensor:
    """``(n_gen,)`` log-probs of the generated tokens from ONE full forward over the final obs."""
    ids = torch.from_numpy(obs["input_ids"])[None]
    mask = torch.from_numpy(obs["attention_mask"])[None]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask,
                       position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[0]
    logp = torch.log_softmax(logits[P - 1: P - 1 + n_gen, :num_actions] / temperature, dim=-1)
    return logp.gather(-1, ids[0, P: P + n_gen, None]).squeeze(-1)


def test_kl_is_exactly_zero_when_policy_is_reference(reference, tokenizer):
    env = KLPenaltyWrapper(_env(), reference, beta=0.5, policy=copy.deepcopy(reference), kl_estimator="k3")
    raw = _env()
    for episode in range(3):
        actions = _actions(episode, tokenizer.eos_token_id)
        _, steps, _ = _play(env, actions, seed=episode)
        _, raw_steps, _ = _play(raw, actions, seed=episode)
        assert len(steps) == len(raw_steps)
        for (reward, info), (raw_reward, _) in zip(steps, raw_steps):
            assert info["kl"] == 0.0 and info["kl_penalty"] == 0.0
            assert reward == raw_reward == info["env_reward"]
        assert steps[-1][1]["episode_kl"] == 0.0
    assert env.episode_kls == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_penalty_matches_kl_per_token_from_a_direct_forward(reference, policy, tokenizer, estimator):
    beta, temperature = 0.3, 0.8
    env = KLPenaltyWrapper(_env(), reference, beta=beta, policy=policy, kl_estimator=estimator,
                           temperature=temperature)
    raw = _env()
    n = env.action_space.n
    for episode in range(3):
        actions = _actions(10 + episode, tokenizer.eos_token_id)
        _, steps, last_obs = _play(env, actions, seed=episode)
        _, raw_steps, _ = _play(raw, actions, seed=episode)
        k = len(steps)
        lp = _direct_logprobs(policy, last_obs, k, temperature, n)
        ref_lp = _direct_logprobs(reference, last_obs, k, temperature, n)
        expected = kl_per_token(lp[None], ref_lp[None], estimator)[0]
        got = torch.tensor([info["kl"] for _, info in steps])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.tensor([info["ref_logprob"] for _, info in steps]), ref_lp,
                                   rtol=1e-4, atol=1e-4)
        assert not torch.all(got == 0)
        for (reward, info), (raw_reward, _) in zip(steps, raw_steps):
            assert info["env_reward"] == raw_reward
            assert reward == pytest.approx(raw_reward - beta * info["kl"], abs=1e-9)
        # The env's score still arrives on the last step, with that step's penalty.
        assert raw_steps[-1][0] > 0 and all(r == 0 for r, _ in raw_steps[:-1])
        assert steps[-1][1]["completion"] == raw_steps[-1][1]["completion"]
        assert steps[-1][1]["episode_kl"] == pytest.approx(float(got.sum()), abs=1e-6)


def test_cache_reset_between_episodes_matches_a_fresh_wrapper(reference, policy, tokenizer):
    used = KLPenaltyWrapper(_env(), reference, beta=0.2, policy=policy)
    _play(used, _actions(1, tokenizer.eos_token_id), options={"prompt": PROMPTS[0]})
    _play(used, _actions(2, tokenizer.eos_token_id), options={"prompt": PROMPTS[1]})
    second = _play(used, _actions(3, tokenizer.eos_token_id), options={"prompt": PROMPTS[2]})[1]
    fresh = KLPenaltyWrapper(_env(), reference, beta=0.2, policy=policy)
    alone = _play(fresh, _actions(3, tokenizer.eos_token_id), options={"prompt": PROMPTS[2]})[1]
    assert [r for r, _ in second] == [r for r, _ in alone]
    assert [i["kl"] for _, i in second] == [i["kl"] for _, i in alone]


def test_policy_cache_is_rebuilt_when_its_weights_change(reference, policy, tokenizer):
    lm = copy.deepcopy(policy)
    env = KLPenaltyWrapper(_env(), reference, beta=1.0, policy=lm)
    actions = [400, 500, 600, 700, 800, 900]
    env.reset(options={"prompt": PROMPTS[0]})
    infos = [env.step(a)[4] for a in actions[:3]]
    with torch.no_grad():  # an optimizer step mid-episode (in place, as SB3's optimizers do)
        for p in lm.parameters():
            p.mul_(1.01)
    infos += [env.step(a)[4] for a in actions[3:]]
    obs = env.unwrapped.episodes.observation(0)
    n = env.action_space.n
    lp = _direct_logprobs(lm, obs, len(actions), 1.0, n)
    torch.testing.assert_close(torch.tensor([i["logprob"] for i in infos[3:]]), lp[3:], rtol=1e-4, atol=1e-4)


def test_callable_policy_gives_the_same_kl_as_the_module(reference, policy, tokenizer):
    def logits_fn(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return policy(input_ids=ids, attention_mask=mask).logits[:, -1]

    actions = _actions(5, tokenizer.eos_token_id)
    a = _play(KLPenaltyWrapper(_env(), reference, beta=0.1, policy=policy), actions, seed=4)[1]
    b = _play(KLPenaltyWrapper(_env(), reference, beta=0.1, policy=logits_fn), actions, seed=4)[1]
    np.testing.assert_allclose([i["kl"] for _, i in a], [i["kl"] for _, i in b], atol=1e-4)


def test_reference_only_estimator_without_policy(reference, tokenizer):
    beta = 0.05
    env = KLPenaltyWrapper(_env(), reference, beta=beta)
    actions = _actions(7, tokenizer.eos_token_id)
    _, steps, last_obs = _play(env, actions, seed=2)
    ref_lp = _direct_logprobs(reference, last_obs, len(steps), 1.0, env.action_space.n)
    for t, (reward, info) in enumerate(steps):
        assert "kl" not in info
        assert info["ref_logprob"] == pytest.approx(float(ref_lp[t]), abs=1e-4)
        assert reward == pytest.approx(info["env_reward"] + beta * info["ref_logprob"], abs=1e-9)
    assert env.episode_kls == []


def test_rejects_bad_arguments(reference):
    with pytest.raises(ValueError, match="beta"):
        KLPenaltyWrapper(_env(), reference, beta=-0.1)
    with pytest.raises(ValueError, match="beta"):
        KLPenaltyWrapper(_env(), reference, beta=float("nan"))
    with pytest.raises(ValueError, match="kl_estimator='k2'"):
        KLPenaltyWrapper(_env(), reference, beta=0.1, kl_estimator="k2")
    with pytest.warns(TokengymDeprecationWarning, match="'estimator' is deprecated"):
        assert KLPenaltyWrapper(_env(), reference, beta=0.1, estimator="k3").kl_estimator == "k3"
    with pytest.raises(ValueError, match="temperature"):
        KLPenaltyWrapper(_env(), reference, beta=0.1, temperature=0)
    with pytest.raises(TypeError, match="reference"):
        KLPenaltyWrapper(_env(), torch.nn.Linear(2, 2), beta=0.1)
    with pytest.raises(TypeError, match="policy"):
        KLPenaltyWrapper(_env(), reference, beta=0.1, policy=42)
    with pytest.raises(TypeError, match="tokengym"):
        KLPenaltyWrapper(gym.make("CartPole-v1"), reference, beta=0.1)
    with pytest.raises(TypeError, match="gymnasium.Env"):
        KLPenaltyWrapper("tokengym/Sentiment-v0", reference, beta=0.1)
