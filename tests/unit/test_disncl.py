"""DisNCL: its loss terms, the method end to end on tiny synthetic problems,
checkpoints and determinism (soft targets: test_soft_targets.py)."""
import numpy as np
import pytest
import torch

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.methods.disncl import DisNCLMethod
from fiftyone_ncl.core.methods.disncl.terms import fixed_variance_kl, symmetric_gaussian_kl
from fiftyone_ncl.core.registry import build_method, list_methods, load_method
from fiftyone_ncl.datasets.synthetic import make_synthetic

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
    loaded = load_method(path)
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
    opts = dict(TINY, epochs=2, mi_diagnostics=False, batch_size=16)
    s = DisNCLMethod(**opts).fit(data, progress=False).score(data, progress=False)
    assert np.all(np.isfinite(s.confidence)) and s.vectors["mei_image"].shape == (40, 8)
