"""DisNCL's soft many-to-many targets."""
import pytest
import torch

from fiftyone_ncl.core.losses import infonce
from fiftyone_ncl.core.soft_targets import (
    candidate_mask,
    hard_targets,
    soft_cross_entropy,
    soft_targets,
)
from fiftyone_ncl.core.training import same_image_mask



def _teacher(n, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)


@pytest.mark.parametrize("in_prior", [True, False])
def test_soft_targets_row_stochastic_and_masked(in_prior):
    n, k = 12, 3
    owners = torch.tensor([0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8])
    same = same_image_mask(owners)
    teacher = _teacher(n)
    w = torch.linspace(0.0, 1.0, n)
    y, row_weight, mask = soft_targets(teacher, w, same, k=k, same_image_in_prior=in_prior)
    assert torch.allclose(y.sum(1), torch.ones(n), atol=1e-6)
    assert (y >= 0).all()
    assert not (y[~mask] > 0).any(), "mass outside top-k + diagonal + same-image"
    # the mask is exactly: diagonal, same-image, and the k nearest others
    eye = torch.eye(n, dtype=torch.bool)
    off = (teacher @ teacher.T).masked_fill(same | eye, float("-inf"))
    expected = eye | same
    expected.scatter_(1, off.topk(k, dim=1).indices, True)
    assert torch.equal(mask, expected)
    assert ((mask & ~(same | eye)).sum(1) == k).all()
    assert (row_weight > 0).all() and (row_weight <= 1).all()
    # the diagonal keeps (1 - a0) w_i of the mass (plus same-image share)
    alone = same.sum(1) == 1
    assert torch.allclose(y.diagonal()[alone], 0.9 * w[alone], atol=1e-6)


def test_soft_targets_confidence_moves_mass_off_doubtful_pairs():
    n = 10
    teacher = _teacher(n, seed=1)
    w = torch.ones(n)
    w[3] = 0.0  # a pair judged noisy
    y, _, mask = soft_targets(teacher, w, None, k=4, a0=0.1)
    assert y[0, 0] == pytest.approx(0.9)  # clean: (1 - a0), a0 spread over neighbours
    assert y[0].sum() == pytest.approx(1.0)
    assert y[3, 3] < 1e-6  # noisy: all its mass moves to its neighbours' partners
    assert y[3].max() > 0.2 and mask[3].sum() == 5
    assert y[:, 3].sum() < 0.01  # and nobody's target points at the noisy caption
    # a doubtful row whose candidates are all doubtful too is down-weighted
    _, rw, _ = soft_targets(teacher, torch.zeros(n), None, k=4)
    assert (rw < 0.05).all()


def test_candidate_mask_counts():
    mask = candidate_mask(torch.randn(7, 7), k=3)
    assert (mask.sum(1) == 4).all() and mask.diagonal().all()
    assert candidate_mask(torch.randn(2, 2), k=5).all()  # k capped at B - 1
    same = same_image_mask(torch.tensor([0, 0, 0]))
    assert candidate_mask(torch.randn(3, 3), k=2, same_image=same).all()


def test_soft_cross_entropy_with_hard_targets_is_infonce():
    v = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    logits = v @ t.T / 0.1
    y = hard_targets(torch.eye(6, dtype=torch.bool))
    ours = 0.5 * (soft_cross_entropy(logits, y) + soft_cross_entropy(logits.T, y))
    assert ours.item() == pytest.approx(infonce(v, t, 0.1).item(), rel=1e-5)
