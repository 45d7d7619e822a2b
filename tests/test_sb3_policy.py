"""LMActorCriticPolicy: SB3's own PPO/A2C driving tokengym envs with a causal-LM policy."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from tokengym.agents.sb3 import LMActorCriticPolicy, train_sb3

SENTIMENT_SMALL = {"tokenizer": "tiny-llama", "max_new_tokens": 8}


@pytest.fixture(autouse=True)
def _one_thread():
    # The CPU is shared; one intra-op thread is as fast for a 3M-param model and disturbs less.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _observations(env: gym.Env, seed: int, n_steps: list[int]) -> list[dict[str, np.ndarray]]:
    """One observation after each number of generated tokens in ``n_steps`` (fresh episodes)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, k in enumerate(n_steps):
        obs, _ = env.reset(seed=seed + i)
        for _ in range(k):
            obs, *_ = env.step(int(rng.integers(300, 5000)))  # no EOS: the episode keeps going
        out.append(obs)
    return out


def test_action_distribution_is_the_lms_next_token_softmax():
    env = gym.make("tokengym/Sentiment-v0", **SENTIMENT_SMALL)
    temperature = 0.7
    model = PPO(LMActorCriticPolicy, env, seed=0, n_steps=16, batch_size=8,
                policy_kwargs={"model": "tiny-llama", "temperature": temperature})
    policy = model.policy
    prompt_len = env.unwrapped.episodes.prompt_len
    counts = [0, 3, 7, 8]  # 8 = a full observation (the episode's terminal one)
    obs_list = _observations(env, 0, counts)
    batch = {k: np.stack([o[k] for o in obs_list]) for k in ("input_ids", "attention_mask")}
    n = env.action_space.n

    lm = policy.lm
    with torch.no_grad():
        ids, mask = torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])
        out = lm(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        cols = torch.tensor([prompt_len - 1 + c for c in counts])
        expected = torch.softmax(out.logits[torch.arange(len(counts)), cols, :n] / temperature, dim=-1)

        # As SB3 collects (int64 tensors) and as it learns (float32 from its rollout buffer).
        for as_float in (False, True):
            obs_t = {k: torch.from_numpy(v) for k, v in batch.items()}
            if as_float:
                obs_t = {k: v.float() for k, v in obs_t.items()}
            probs = policy.get_distribution(obs_t).distribution.probs
            torch.testing.assert_close(probs, expected, rtol=1e-4, atol=1e-6)
            actions = torch.tensor([5, 77, 1000, 42])
            values, log_prob, entropy = policy.evaluate_actions(obs_t, actions)
            expected_lp = expected[torch.arange(4), actions].log()
            torch.testing.assert_close(log_prob, expected_lp, rtol=1e-4, atol=1e-5)
            assert values.shape == (4, 1) and entropy.shape == (4,)
            assert values[-1].item() == 0.0  # nothing is left to do in a full observation
            assert torch.all(values[:-1] != 0)

        # predict() on a single (unbatched) observation: deterministic is the argmax.
        for i, obs in enumerate(obs_list[:3]):
            action, _ = model.predict(obs, deterministic=True)
            assert int(action) == int(expected[i].argmax())
    # Same shapes from SB3's forward (the rollout path).
    actions, values, log_prob = policy(dict(obs_t))
    assert actions.shape == (4,) and values.shape == (4, 1) and log_prob.shape == (4,)


def test_sb3_ppo_trains_on_sentiment_and_evaluate_policy_works():
    env = gym.make("tokengym/Sentiment-v0", **SENTIMENT_SMALL)
    model = PPO(LMActorCriticPolicy, env, seed=0, n_steps=256, batch_size=64, n_epochs=1,
                learning_rate=1e-4, policy_kwargs={"model": "tiny-llama"})
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=2048)
    assert model.num_timesteps == 2048
    changed = [not torch.equal(a, b) for a, b in zip(before, model.policy.parameters())]
    assert all(changed)  # every LM tensor and the value head were trained
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    assert len(model.ep_info_buffer) == 100  # SB3 keeps the last 100; >= 2048 / 8 episodes ended
    mean, std = evaluate_policy(model, model.get_env(), n_eval_episodes=3, deterministic=True)
    assert np.isfinite(mean) and np.isfinite(std)


def test_sb3_a2c_trains_with_make_vec_env_and_evaluates():
    vec_env = make_vec_env("tokengym/Sentiment-v0", n_envs=2, seed=1, env_kwargs=SENTIMENT_SMALL)
    model = A2C(LMActorCriticPolicy, vec_env, seed=1, n_steps=8, learning_rate=1e-4,
                policy_kwargs={"model": "tiny-llama"})
    model.learn(total_timesteps=2048)
    assert model.num_timesteps == 2048
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    rewards, lengths = evaluate_policy(model, vec_env, n_eval_episodes=4, deterministic=False,
                                       return_episode_rewards=True)
    assert len(rewards) == 4 and all(1 <= n <= 8 for n in lengths)


def test_train_sb3_with_kl_penalty_saves_and_reloads(tmp_path):
    model, metrics = train_sb3("ppo", "tokengym/TextGen-v0", model="tiny-llama", total_timesteps=64, seed=3,
                               out_dir=tmp_path, beta=0.05, kl_estimator="k3", n_envs=2,
                               env_kwargs={"prompts": ["Hello there", "The film"], "reward_model": "vader",
                                           "max_prompt_tokens": 8, "max_new_tokens": 4},
                               n_steps=16, batch_size=16, n_epochs=1)
    assert metrics["total_timesteps"] == 64 and metrics["steps_per_second"] > 0
    assert len(metrics["episode_rewards"]) == len(metrics["episode_lengths"]) >= 64 // 4
    assert metrics["episode_kls"] and all(k >= 0 for k in metrics["episode_kls"])  # k3 >= 0
    assert (tmp_path / "metrics.json").is_file()
    loaded = PPO.load(tmp_path / "sb3_ppo.zip", device="cpu")
    for a, b in zip(model.policy.state_dict().values(), loaded.policy.state_dict().values()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"temperature": 0.0}, ValueError),
        ({"model": 3}, TypeError),
        ({"features_extractor_class": object}, ValueError),
        ({"share_features_extractor": False}, ValueError),
    ],
)
def test_policy_rejects_bad_arguments(kwargs, error):
    env = gym.make("tokengym/Sentiment-v0", **SENTIMENT_SMALL)
    with pytest.raises(error):
        LMActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-4, **kwargs)


def test_policy_rejects_non_token_spaces():
    with pytest.raises(TypeError, match="Discrete"):
        LMActorCriticPolicy(gym.spaces.Box(0, 1, (4,)), gym.spaces.Box(0, 1, (2,)), lambda _: 1e-4)


def test_train_sb3_rejects_bad_arguments():
    with pytest.raises(ValueError, match="algo"):
        train_sb3("dqn", "tokengym/Sentiment-v0", total_timesteps=8)
    with pytest.raises(ValueError, match="beta"):
        train_sb3("ppo", "tokengym/Sentiment-v0", total_timesteps=8, beta=-1.0)
