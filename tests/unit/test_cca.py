"""Linear CCA baselines."""
import numpy as np
import pytest

from fiftyone_ncl.core.cca import cca_similarity, fit_cca
from fiftyone_ncl.core.metrics import detection_metrics
from fiftyone_ncl.datasets.regimes import inject, make_pairs


def _auroc(noisy, score):
    return detection_metrics(noisy, score)["auroc"]


def test_cca_on_clean_aligned_pairs_separates_swapped_ones():
    clean = make_pairs(n_pairs=1000, joint_space=True, image_dim=64, exclusive_std=1.0, seed=0)
    data, noisy = inject(clean, "random", 0.3, seed=0)
    model = fit_cca(clean[0].images, clean[0].texts, clean[0].image_index)
    sim = cca_similarity(model, data.images, data.texts, data.image_index)
    assert sim.shape == (1000,) and np.all(np.abs(sim) <= 1 + 1e-9)
    assert _auroc(noisy, sim) > 0.9
    assert 1 <= model.n_components <= 32 and model.correlations[0] > 0.8


def test_clean_only_fit_is_at_least_the_all_pairs_fit():
    clean = make_pairs(n_pairs=1200, image_dim=96, text_dim=128, exclusive_std=2.0, seed=1)
    data, noisy = inject(clean, "random", 0.6, seed=1)
    args = (data.images, data.texts, data.image_index)
    on_all = _auroc(noisy, cca_similarity(fit_cca(*args), *args))
    on_clean = _auroc(noisy, cca_similarity(fit_cca(*args, rows=~noisy), *args))
    assert on_all > 0.6
    assert on_clean >= on_all - 0.005


def test_svd_and_sklearn_backends_agree():
    clean = make_pairs(n_pairs=600, image_dim=48, text_dim=40, seed=2)
    data, _ = inject(clean, "random", 0.2, seed=0)
    args = (data.images, data.texts, data.image_index)
    a = fit_cca(*args, n_components=4, pca_dim=12, ridge=0.0)
    b = fit_cca(*args, n_components=4, pca_dim=12, backend="sklearn")
    assert a.correlations == pytest.approx(b.correlations, abs=1e-3)
    assert cca_similarity(a, *args) == pytest.approx(cca_similarity(b, *args), abs=1e-2)


def test_rows_and_bad_inputs():
    clean = make_pairs(n_pairs=300, image_dim=32, text_dim=24, seed=3)
    d = clean[0]
    mask = np.zeros(300, bool)
    mask[:150] = True
    a = fit_cca(d.images, d.texts, d.image_index, rows=mask, n_components=3)
    b = fit_cca(d.images, d.texts, d.image_index, rows=np.arange(150), n_components=3)
    assert a.info["n_rows"] == 150 and np.allclose(a.image_proj, b.image_proj)
    with pytest.raises(ValueError, match="at least 10"):
        fit_cca(d.images, d.texts, d.image_index, rows=np.arange(5))
    with pytest.raises(ValueError, match="backend"):
        fit_cca(d.images, d.texts, d.image_index, backend="nope")
