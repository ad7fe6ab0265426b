"""Mutual-information pieces of DisNCL: gradient reversal, CLUB, InfoNCE critics."""
import math

import numpy as np
import pytest
import torch

from fiftyone_ncl.core.mi import (
    CLUB,
    SeparableCritic,
    critic_infonce,
    estimate_club_mi,
    estimate_infonce_mi,
    grad_reverse,
    infonce_bound,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("coef", [1.0, 0.25, 0.0])
def test_grad_reverse_flips_and_scales(coef):
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    y = grad_reverse(x, coef)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -coef * w)


def test_grad_reverse_only_flips_its_own_branch():
    x = torch.randn(6, requires_grad=True)
    loss = x.sum() + grad_reverse(x, 2.0).sum()
    loss.backward()
    assert torch.allclose(x.grad, torch.full_like(x, 1.0 - 2.0))


def _gaussian(n, d, seed):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_club_near_zero_for_independent_inputs():
    x, y = _gaussian(2000, 4, 0), _gaussian(2000, 4, 1)
    est = estimate_club_mi(x, y, steps=300, seed=0)
    assert abs(est["mi"]) < 0.15, est


def test_club_clearly_positive_for_dependent_inputs():
    x = _gaussian(2000, 4, 0)
    a = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
    y = np.tanh(x @ a) + 0.3 * _gaussian(2000, 4, 3)
    est = estimate_club_mi(x, y, steps=300, seed=0)
    assert est["mi"] > 1.0, est
    indep = estimate_club_mi(x, _gaussian(2000, 4, 4), steps=300, seed=0)
    assert est["mi"] > indep["mi"] + 1.0


def test_club_module_fit_then_bound():
    """Fit q by its own loss on detached samples; the bound then separates
    dependent from independent pairs, and is differentiable in x and y."""
    torch.manual_seed(0)
    club = CLUB(3, 3, hidden_dim=32)
    opt = torch.optim.Adam(club.parameters(), lr=5e-3)
    for _ in range(300):
        x = torch.randn(128, 3)
        y = x + 0.2 * torch.randn(128, 3)
        loss = club.learning_loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(512, 3, requires_grad=True)
    dep = club(x, x + 0.2 * torch.randn(512, 3))
    indep = club(x, torch.randn(512, 3))
    assert dep.item() > 1.5
    assert abs(indep.item()) < 0.5
    dep.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_club_weights_ignore_zero_weight_rows():
    torch.manual_seed(0)
    club = CLUB(2, 2, hidden_dim=8)
    x, y = torch.randn(10, 2), torch.randn(10, 2)
    w = torch.tensor([1.0] * 6 + [0.0] * 4)
    y_bad = y.clone()
    y_bad[6:] = 100.0  # rows with zero weight must not matter
    assert torch.allclose(club(x, y, w), club(x, y_bad, w), atol=1e-5)
    assert torch.allclose(club(x[:6], y[:6]), club(x, y, w), atol=1e-5)


def test_critic_logits_are_bounded():
    critic = SeparableCritic(4, 3, hidden_dim=16, out_dim=8, clip=2.0)
    with torch.no_grad():
        logits = critic(100 * torch.randn(16, 4), 100 * torch.randn(16, 3))
    assert logits.shape == (16, 16)
    assert logits.abs().max() < 2.0


def test_critic_infonce_weights_and_bound():
    logits = torch.randn(8, 8)
    per_pair = critic_infonce(logits, reduction="none")
    w = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0])
    assert torch.allclose(critic_infonce(logits, weights=w), per_pair[:4].mean())
    # a perfect critic reaches the log(B) cap, a uniform one 0
    assert infonce_bound(torch.eye(8) * 1e4) == pytest.approx(math.log(8), abs=1e-4)
    assert infonce_bound(torch.zeros(8, 8)) == pytest.approx(0.0, abs=1e-6)


def test_infonce_estimate_high_for_dependent_low_for_independent():
    x = _gaussian(2000, 4, 0)
    dep = estimate_infonce_mi(x, x + 0.3 * _gaussian(2000, 4, 1), batch_size=64, steps=200, seed=0)
    indep = estimate_infonce_mi(x, _gaussian(2000, 4, 2), batch_size=64, steps=200, seed=0)
    assert dep["cap"] == pytest.approx(math.log(64))
    assert 1.5 < dep["mi"] <= dep["cap"] + 1e-6, dep
    assert abs(indep["mi"]) < 0.2, indep


def test_infonce_estimate_groups_make_duplicates_positives():
    """Two captions of one image: with groups, both count as positives."""
    rng = np.random.default_rng(0)
    s = rng.normal(size=(500, 4)).astype(np.float32)
    groups = np.repeat(np.arange(500), 2)
    x = np.repeat(s, 2, axis=0)
    y = x + 0.2 * rng.normal(size=x.shape).astype(np.float32)
    est = estimate_infonce_mi(x, y, batch_size=64, steps=100, groups=groups, seed=0)
    assert np.isfinite(est["mi"]) and est["mi"] > 1.0
