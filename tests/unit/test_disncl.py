"""DisNCL: soft targets, the method end to end on tiny synthetic problems,
checkpoints, determinism and the synthetic benchmark's plumbing."""
import numpy as np
import pytest
import torch

from fiftyone_ncl.bench.synthetic import make_synthetic, run_synthetic_benchmark
from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.disncl import DisNCLMethod, fixed_variance_kl, symmetric_gaussian_kl
from fiftyone_ncl.core.losses import infonce
from fiftyone_ncl.core.methods import CorrespondenceMethod, build_method, list_methods
from fiftyone_ncl.core.soft_targets import (
    candidate_mask,
    hard_targets,
    soft_cross_entropy,
    soft_targets,
)
from fiftyone_ncl.core.training import same_image_mask

TINY = dict(
    epochs=3,
    warmup_epochs=1,
    ramp_epochs=1,
    grl_ramp_epochs=1,
    batch_size=32,
    hidden_dim=32,
    embed_dim=8,
    mei_dim=8,
    critic_hidden=16,
    critic_dim=8,
    club_hidden=16,
    club_steps=2,
    mi_samples=128,
    mi_steps=10,
    device="cpu",
    seed=0,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    """120 images with 2 captions each (duplicates exercise same-image logic)."""
    return make_synthetic(
        n_images=120, captions_per_image=2, image_dim=24, text_dim=20, map_hidden=32, noise_rate=0.3, seed=1
    )


@pytest.fixture(scope="module")
def fitted(tiny):
    data, _ = tiny
    return DisNCLMethod(**TINY).fit(data, progress=False)


@pytest.fixture(scope="module")
def scores(fitted, tiny):
    return fitted.score(tiny[0], progress=False)


# soft targets ---------------------------------------------------------------


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


def test_kl_terms():
    mu = torch.randn(4, 3)
    lv = torch.randn(4, 3)
    assert torch.allclose(symmetric_gaussian_kl(mu, lv, mu, lv), torch.zeros(4), atol=1e-6)
    assert (symmetric_gaussian_kl(mu, lv, mu + 1, lv) > 0).all()
    z = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    assert torch.allclose(fixed_variance_kl(z, z, 0.1), torch.zeros(4))
    assert fixed_variance_kl(z, -z, 0.5)[0].item() == pytest.approx(4.0 / 0.25, rel=1e-5)


# the method -------------------------------------------------------------------


def test_registered_and_options_checked():
    assert "disncl" in list_methods()
    with pytest.raises(TypeError, match="unknown option"):
        build_method("disncl", not_an_option=1)
    with pytest.raises(ValueError):
        DisNCLMethod(teacher="nope")


def test_fit_score_shapes_and_finiteness(tiny, scores):
    data, _ = tiny
    n, p = data.n_images, data.n_pairs
    assert scores.confidence.shape == (p,) and scores.similarity.shape == (p,)
    assert np.all(np.isfinite(scores.confidence)) and np.all(np.isfinite(scores.similarity))
    assert scores.confidence.min() >= 0 and scores.confidence.max() <= 1
    assert scores.image_embeddings.shape == (n, 8) and scores.text_embeddings.shape == (p, 8)
    shapes = {k: v.shape for k, v in scores.vectors.items()}
    assert shapes == {"mii_image": (n, 8), "mii_text": (p, 8), "mei_image": (n, 8), "mei_text": (p, 8)}
    for v in scores.vectors.values():
        assert np.all(np.isfinite(v))
    assert np.allclose(np.linalg.norm(scores.vectors["mii_image"], axis=1), 1.0, atol=1e-4)
    # the similarity is the MII cosine of each pair
    sim = np.einsum("ij,ij->i", scores.vectors["mii_image"][data.image_index], scores.vectors["mii_text"])
    assert np.allclose(sim, scores.similarity, atol=1e-5)


def test_info_history_and_mi(scores):
    info = scores.info
    hist = info["history"]
    assert len(hist) == 3
    assert hist[0]["fraction_clean"] == 1.0  # warm-up: no filtering
    assert 0.0 < hist[-1]["fraction_clean"] <= 1.0
    for key in ("loss", "match", "s_infonce", "s_kl", "x_recon", "x_adv", "reg_club"):
        assert all(np.isfinite(h[key]) for h in hist), key
    mi = info["mi"]
    for key in ("mii_image__mii_text", "mei_image__mii_text", "mei_text__mii_image", "club_mii_mei_image", "club_mii_mei_text"):
        assert np.isfinite(mi[key]["mi"]), key
    assert mi["mii_image__mii_text"]["mi"] <= mi["log_batch"] + 1e-6
    assert "calibration" in info and info["space"] == "mii"
    assert info["calibration_input"] == "reference loss"
    assert scores.calibration_score.shape == scores.confidence.shape
    # higher reference loss never means a higher clean probability
    order = np.argsort(scores.calibration_score)
    assert np.all(np.diff(scores.confidence[order]) <= 1e-9)


def test_training_split_safeguard():
    m = DisNCLMethod(min_noisy_fraction=0.1)
    w = np.ones(50)
    loss = np.arange(50, dtype=float)
    out = m._training_weights(w, loss)
    assert (out == 0).sum() == 5 and np.all(out[-5:] == 0)
    assert np.all(w == 1)  # the exported confidence is not touched


def test_checkpoint_roundtrip_and_other_dataset(tmp_path, fitted, scores, tiny):
    path = fitted.save(tmp_path / "disncl.safetensors")
    loaded = CorrespondenceMethod.load(path)
    assert isinstance(loaded, DisNCLMethod)
    again = loaded.score(tiny[0], progress=False)
    np.testing.assert_allclose(again.confidence, scores.confidence, atol=1e-6)
    np.testing.assert_allclose(again.similarity, scores.similarity, atol=1e-6)
    for key, value in scores.vectors.items():
        np.testing.assert_allclose(again.vectors[key], value, atol=1e-6)
    # a different collection with the same input dimensions
    other, _ = make_synthetic(
        n_images=50, image_dim=24, text_dim=20, map_hidden=32, noise_rate=0.2, seed=5
    )
    s2 = loaded.score(other, progress=False)
    assert s2.confidence.shape == (50,) and np.all(np.isfinite(s2.confidence))
    assert s2.vectors["mei_text"].shape == (50, 8)


def test_deterministic_on_cpu(tiny):
    data, _ = tiny
    opts = dict(TINY, epochs=2, mi_diagnostics=False)
    a = DisNCLMethod(**opts).fit(data, progress=False).score(data, progress=False)
    b = DisNCLMethod(**opts).fit(data, progress=False).score(data, progress=False)
    assert np.array_equal(a.confidence, b.confidence)
    assert np.array_equal(a.vectors["mei_image"], b.vectors["mei_image"])


@pytest.mark.parametrize("extra", [dict(stochastic=True), dict(teacher="ema", warmup_epochs=0)])
def test_variants_run(tiny, extra):
    data, _ = tiny
    opts = dict(TINY, epochs=2, mi_diagnostics=False, **extra)
    calls = []
    s = DisNCLMethod(**opts).fit(data, progress=lambda f, label: calls.append((f, label))).score(data, progress=False)
    assert np.all(np.isfinite(s.confidence))
    assert calls and calls[-1][0] == pytest.approx(1.0) and "clean=" in calls[-1][1]


def test_cnn_towers_on_pixels():
    rng = np.random.default_rng(0)
    data = PairData(
        images=rng.integers(0, 255, size=(40, 1, 8, 8), dtype=np.uint8),
        texts=rng.normal(size=(40, 6)).astype(np.float32),
        image_index=np.arange(40),
    )
    opts = dict(TINY, epochs=2, towers="cnn", mi_diagnostics=False, batch_size=16)
    s = DisNCLMethod(**opts).fit(data, progress=False).score(data, progress=False)
    assert np.all(np.isfinite(s.confidence)) and s.vectors["mei_image"].shape == (40, 8)


def test_synthetic_generator_and_benchmark_plumbing():
    data, truth = make_synthetic(n_images=60, exclusive_std=3.0, noise_rate=0.5, seed=0)
    assert data.images.shape == (60, 96) and data.texts.shape == (60, 96)
    assert truth.noisy.sum() > 0 and np.array_equal(data.texts.shape[0], truth.shared_text.shape[0])
    # clean pairs carry their own caption's factors
    clean = ~truth.noisy
    assert np.allclose(truth.shared_text[clean], truth.shared[clean])
    again, _ = make_synthetic(n_images=60, exclusive_std=3.0, noise_rate=0.5, seed=0)
    assert np.array_equal(again.texts, data.texts)

    result = run_synthetic_benchmark(
        exclusive_stds=(3.0,),
        n_images=120,
        methods=["raw-cosine", "cosine", "disncl"],
        train=dict(epochs=2, hidden_dim=32, embed_dim=8, batch_size=32),
        disncl=dict(warmup_epochs=1, mi_steps=5, mi_samples=64),
        data_kwargs=dict(map_hidden=32),
    )
    level = result["levels"][0]
    assert set(level["methods"]) == {"raw-cosine", "cosine", "disncl"}
    for row in level["methods"].values():
        assert 0.0 <= row["auroc"] <= 1.0 and 0.0 <= row["ap"] <= 1.0
    assert set(level["probe"]) == {"raw", "heads", "mii", "mei"}
    assert set(level["probe"]["mii"]) == {"s", "x"}
    assert "mii_image__mii_text" in level["mi"]
