"""Linear CCA baselines."""
import numpy as np
import pytest

from fiftyone_ncl.core.cca import cca_similarity, fit_cca, fit_refined_cca
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


def test_refitting_on_the_pairs_called_clean_undoes_the_swaps_pull_on_a_small_set():
    # fewer pairs (250) than input dimensions (384 / 512): one fit on all pairs
    # can correlate the swapped pairs too
    clean = make_pairs(n_pairs=250, image_dim=384, text_dim=512, exclusive_std=1.0, seed=3)
    data, noisy = inject(clean, "random", 0.4, seed=3)
    args = (data.images, data.texts, data.image_index)
    once = _auroc(noisy, cca_similarity(fit_cca(*args, seed=3), *args))
    model, history = fit_refined_cca(*args, seed=3)
    refitted = _auroc(noisy, cca_similarity(model, *args))
    assert refitted > once and refitted > 0.9, (once, refitted)
    assert [h["round"] for h in history] == [0, 1, 2]
    assert history[0]["fit_pairs"] == 250 and all(h["fit_pairs"] < 250 for h in history[1:])
    # refine=0 is the single fit
    single, history = fit_refined_cca(*args, refine=0, seed=3)
    np.testing.assert_allclose(single.image_proj, fit_cca(*args, seed=3).image_proj)
    assert len(history) == 1


def test_trained_heads_start_from_the_cca_methods_solution():
    from fiftyone_ncl.core.methods.crcl import CRCLConfig
    from fiftyone_ncl.core.nets import initial_solution
    from fiftyone_ncl.core.registry import build_method

    clean = make_pairs(n_pairs=300, image_dim=48, text_dim=64, exclusive_std=1.0, seed=4)
    data, _ = inject(clean, "random", 0.4, seed=4)
    start = initial_solution(CRCLConfig(init="cca", head="linear"), data)
    cca = build_method("cca").fit(data, progress=False)
    assert len(cca.history) == 3
    expected, _ = fit_refined_cca(data.images, data.texts, data.image_index)
    np.testing.assert_allclose(start.image_proj, expected.image_proj)
    np.testing.assert_allclose(start.text_proj, expected.text_proj)
    # ... which is what the cca method ranks with
    sim = cca.score(data, progress=False).similarity
    np.testing.assert_allclose(sim, cca_similarity(expected, data.images, data.texts, data.image_index), atol=1e-4)
