"""CRCL's Active Complementary Loss against hand computations."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fiftyone_ncl.core.acl import (
    acl_direction,
    acl_from_logits,
    acl_loss,
    in_batch_log_probs,
    matching_probability,
    matching_probability_from_log_probs,
    relative_matching_probability_from_log_probs,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ACL -------------------------------------------------------------------------

B = 128
TAU = 0.05


def _rows_logits(row):
    """(B, B) logits whose row-softmax at temperature TAU has row i equal to
    ``row`` rolled by i, so ``row[0]`` sits on the diagonal of every row."""
    mat = np.stack([np.roll(row, i) for i in range(len(row))])
    return torch.tensor(np.log(mat) * TAU, dtype=torch.float32)


@pytest.mark.parametrize(
    "row, active, comp_q0, comp_q1",
    [
        # uniform row: -log(1/128) = 4.852; 127 tan(1/128) / (128 tan(1/128))^q
        (np.full(B, 1.0 / B), 4.852, 0.992, 0.992),
        # one negative holds 0.9, the other 127 entries (diagonal included) share 0.1
        (np.r_[0.1 / 127, 0.9, np.full(B - 2, 0.1 / 127)], 7.147, 1.359, 0.9994),
    ],
)
def test_acl_calibration_table_one_direction(row, active, comp_q0, comp_q1):
    logits = _rows_logits(row)
    log_p = F.log_softmax(logits / TAU, dim=1)
    assert torch.allclose(log_p.exp()[0].double(), torch.tensor(row), atol=1e-6)
    for q, expected in ((0.0, comp_q0), (1.0, comp_q1)):
        a, c = acl_direction(log_p, torch.full((B,), q))
        assert a.shape == c.shape == (B,)
        assert abs(a[0].item() - active) < 1e-3
        assert abs(c[0].item() - expected) < 1e-3


def _softmax_np(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_acl_two_directions_by_hand():
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 1, size=(3, 3))
    y = np.array([1.0, 0.4, 0.0])
    lam = 5.0
    p_i2t, p_t2i = _softmax_np(s / TAU), _softmax_np(s.T / TAU)
    active = -np.log(np.diag(p_i2t)) - np.log(np.diag(p_t2i))
    comp = 0.0
    for p in (p_i2t, p_t2i):
        tan = np.tan(p)
        comp = comp + (tan.sum(1) - np.diag(tan)) / tan.sum(1) ** (1 - y)
    expected = np.mean(y * active) + lam * np.mean(comp)

    out = acl_from_logits(torch.tensor(s / TAU, dtype=torch.float32), torch.tensor(y), lam=lam)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(out.active.numpy(), active, rtol=1e-5)
    np.testing.assert_allclose(out.complementary.numpy(), comp, rtol=1e-5)
    np.testing.assert_allclose(out.p.numpy(), (np.diag(p_i2t) + np.diag(p_t2i)) / 2, rtol=1e-5)
    assert not out.p.requires_grad


def test_acl_labels_get_no_gradient_and_embeddings_do():
    torch.manual_seed(0)
    v = F.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    t = F.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    y = torch.rand(6, requires_grad=True)
    acl_loss(v, t, y, TAU).loss.backward()
    assert y.grad is None
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
    assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_acl_is_finite_under_bf16_autocast():
    # |S| = 1 everywhere: logits of +-20, exp(20) = 4.9e8 overflows fp16
    gen = torch.Generator().manual_seed(0)
    sign = torch.randint(0, 2, (B, B), generator=gen).float() * 2 - 1
    sign.fill_diagonal_(1.0)
    y = torch.rand(B, generator=gen)
    ref = acl_from_logits(sign / TAU, y).loss.item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = acl_from_logits((sign / TAU).bfloat16(), y)
    assert torch.isfinite(low.loss) and torch.isfinite(low.p).all()
    assert low.loss.dtype == torch.float32
    assert low.loss.item() == pytest.approx(ref, rel=1e-3)  # +-20 is exact in bf16
    half = acl_from_logits((sign / TAU).half(), y)  # a raw exp(20) would be inf in fp16
    assert half.loss.item() == pytest.approx(ref, rel=1e-3)

    # from embeddings: the similarity is computed in float32 despite autocast
    v = F.normalize(torch.randn(B, 16, generator=gen), dim=1)
    t = F.normalize(v + 0.3 * torch.randn(B, 16, generator=gen), dim=1)
    ref = acl_loss(v, t, y, TAU).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = acl_loss(v.bfloat16(), t.bfloat16(), y, TAU)
    assert torch.isfinite(low.loss)
    assert low.loss.item() == pytest.approx(ref.item(), rel=2e-2)  # bf16 embeddings only


def test_acl_same_image_mask():
    torch.manual_seed(0)
    logits = torch.randn(4, 4) / TAU
    y = torch.ones(4)
    no_dup = torch.eye(4, dtype=torch.bool)
    assert acl_from_logits(logits, y, exclude=no_dup).loss.item() == pytest.approx(
        acl_from_logits(logits, y).loss.item()
    )
    dup = no_dup.clone()
    dup[0, 1] = dup[1, 0] = True  # captions 0 and 1 describe the same image
    log_i2t, log_t2i = in_batch_log_probs(logits, dup)
    assert log_i2t.exp()[0, 1] == 0 and log_t2i.exp()[1, 0] == 0
    assert torch.allclose(log_i2t.exp().sum(1), torch.ones(4))
    assert (matching_probability(logits, dup)[:2] > matching_probability(logits)[:2]).all()
    assert torch.isfinite(acl_from_logits(logits, y, exclude=dup).loss)


# SCC's matching probability: official and relative -----------------------------


def test_relative_probability_is_one_where_the_diagonal_is_the_row_max():
    rng = np.random.default_rng(1)
    s = rng.uniform(-1, 1, size=(5, 5))
    s[np.arange(5), np.arange(5)] = 1.5  # every diagonal entry beats its row and its column
    logits = torch.tensor(s, dtype=torch.float32)  # mild logits: the rows are far from one-hot
    p = matching_probability(logits, probability="relative")
    np.testing.assert_array_equal(p.numpy(), np.ones(5, dtype=np.float32))
    official = matching_probability(logits)
    assert (official < 0.6).all()  # the official p of the same rows is far below 1


def test_relative_probability_by_hand():
    # logits (already S / tau); rows = images, columns = captions
    s = np.array([[2.0, 3.0, 0.0], [1.0, 1.0, -1.0], [0.5, 0.0, 2.5]])
    p_i2t, p_t2i = _softmax_np(s), _softmax_np(s.T)
    # image 0: its caption (2) loses to caption 1 (3): e^(2-3); caption 0 over images: best is itself (2 vs 1, 0.5)
    # pair 1: i2t 1 vs max 1 -> 1; t2i column 1 = (3, 1, 0): e^(1-3)
    # pair 2: i2t diagonal is the max -> 1; t2i column 2 = (0, -1, 2.5) -> 1
    expected = np.array([(np.exp(-1.0) + 1.0) / 2, (1.0 + np.exp(-2.0)) / 2, 1.0])
    np.testing.assert_allclose(np.diag(p_i2t) / p_i2t.max(1) + np.diag(p_t2i) / p_t2i.max(1), 2 * expected)
    logits = torch.tensor(s, dtype=torch.float32)
    log_i2t, log_t2i = in_batch_log_probs(logits)
    got = relative_matching_probability_from_log_probs(log_i2t, log_t2i)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(matching_probability(logits, probability="relative").numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(  # the official value, through the same entry point
        matching_probability_from_log_probs(log_i2t, log_t2i, "official").numpy(),
        (np.diag(p_i2t) + np.diag(p_t2i)) / 2, rtol=1e-6)
    assert not got.requires_grad


def test_relative_probability_ignores_excluded_entries():
    s = torch.tensor([[1.0, 3.0, 0.0], [3.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    # without the mask caption 1 wins image 0's row: e^(1-3) in that direction
    assert matching_probability(s, probability="relative")[0].item() < 0.6
    same = torch.zeros(3, 3, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True  # pairs 0 and 1 show the same image
    p = matching_probability(s, same, probability="relative")
    # pair 0: row (1, -inf, 0) and column (1, -inf, 0): 1; pair 1: row (-inf, 2, 0), column (-inf, 2, 0): 1
    np.testing.assert_allclose(p.numpy(), [1.0, 1.0, 1.0])


def test_relative_probability_keeps_clean_pairs_on_a_many_to_many_batch():
    """k captions per class in a batch of 128 (captions written per class):
    a clean pair's official p tops out near 1/k, under SCC's 0.1 cut, while
    P_ii / max_j P_ij stays high for it and low for swapped pairs."""
    gen = torch.Generator().manual_seed(0)
    n_classes = 8  # k = 16 pairs per class
    cls = torch.arange(B) % n_classes
    centre = F.normalize(torch.randn(n_classes, 32, generator=gen), dim=1)
    v = F.normalize(centre[cls] + 0.05 * torch.randn(B, 32, generator=gen), dim=1)
    caption_cls = cls.clone()
    swapped = torch.arange(B) % 4 == 0  # a quarter of the captions come from the next class
    caption_cls[swapped] = (cls[swapped] + 1) % n_classes
    t = F.normalize(centre[caption_cls] + 0.05 * torch.randn(B, 32, generator=gen), dim=1)
    logits = v @ t.T / TAU
    official = matching_probability(logits)
    relative = matching_probability(logits, probability="relative")
    clean = ~swapped
    assert official[clean].max() < 0.1 * 2  # about 1/16 each
    assert (official[clean] < 0.1).float().mean() > 0.9  # most clean labels would be cut
    assert (relative[clean] >= 0.1).all() and relative[clean].median() > 0.5
    assert (relative[swapped] < 0.1).all() and (official[swapped] < 0.1).all()


def test_unknown_matching_probability_raises():
    with pytest.raises(ValueError, match="probability"):
        matching_probability(torch.zeros(3, 3), probability="bogus")

