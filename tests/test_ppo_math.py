"""PPO maths: GAE/returns, KL estimators, reward shaping, whitening, the beta controllers."""

from __future__ import annotations

import math

import pytest
import torch

from tokengym.agents.advantages import gae, shaped_rewards, whiten
from tokengym.agents.kl import AdaptiveKLController, FixedKLController, kl_per_token


def test_gae_matches_hand_computed_example() -> None:
    # One episode of 3 steps (a 4th padded column), gamma=0.9, lam=0.8.
    rewards = torch.tensor([[0.0, 0.5, 2.0, 9.0]])
    values = torch.tensor([[1.0, 2.0, 3.0, 7.0]])
    mask = torch.tensor([[True, True, True, False]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    d2 = 2.0 - 3.0  # last step bootstraps from 0
    d1 = 0.5 + 0.9 * 3.0 - 2.0
    d0 = 0.0 + 0.9 * 2.0 - 1.0
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 1, a1 + 2, a2 + 3, 0.0]]))


def test_gae_with_lam_1_gamma_1_is_reward_to_go_minus_value() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 5.0, 5.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[6.0, 5.0, 3.0], [4.0, 0.0, 0.0]]))
    torch.testing.assert_close(adv, torch.tensor([[5.5, 4.5, 2.5], [3.0, 0.0, 0.0]]))


def test_k1_and_k3_match_their_formulas() -> None:
    logp = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    ref = torch.tensor([-1.5, -1.0, -0.5, -0.1])
    d = logp - ref
    torch.testing.assert_close(kl_per_token(logp, ref, "k1"), d)
    expected = torch.tensor([math.exp(-x) - 1 + x for x in d.tolist()])
    torch.testing.assert_close(kl_per_token(logp, ref, "k3"), expected)
    assert (kl_per_token(logp, ref, "k3") >= 0).all()
    with pytest.raises(ValueError, match="k2"):
        kl_per_token(logp, ref, "k2")


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_is_exactly_zero_for_equal_logprobs(estimator: str) -> None:
    logp = torch.randn(3, 5)
    assert torch.equal(kl_per_token(logp, logp.clone(), estimator), torch.zeros(3, 5))


def test_shaped_rewards_put_score_on_last_step_and_penalise_kl() -> None:
    logp = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -3.0, -2.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    rewards, kl = shaped_rewards(torch.tensor([1.0, -1.0]), logp, ref, mask, beta=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, -0.5], [0.0, 1.0, 0.0]]))
    expected = torch.tensor([[-0.05, 0.0, 0.05 + 1.0], [0.0, -0.1 - 1.0, 0.0]])
    torch.testing.assert_close(rewards, expected)


def test_whiten_uses_only_masked_entries() -> None:
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -100.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    w = whiten(x, mask)
    assert w[:, 2].eq(0).all()
    assert abs(float(w[mask].mean())) < 1e-6
    assert abs(float(w[mask].std()) - 1) < 1e-3


def test_adaptive_controller_moves_beta_towards_target() -> None:
    ctl = AdaptiveKLController(beta=0.1, target=6.0, horizon=100)
    ctl.update(current_kl=12.0, n_episodes=10)  # above target: error clipped to +0.2
    assert ctl.beta == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    high = ctl.beta
    ctl.update(current_kl=5.4, n_episodes=10)  # below target: error -0.1
    assert ctl.beta == pytest.approx(high * (1 - 0.1 * 10 / 100))
    state = ctl.state_dict()
    other = AdaptiveKLController(beta=1.0, target=1.0, horizon=1)
    other.load_state_dict(state)
    assert other.state_dict() == state


def test_fixed_controller_never_moves() -> None:
    ctl = FixedKLController(0.3)
    ctl.update(100.0, 64)
    assert ctl.beta == 0.3
