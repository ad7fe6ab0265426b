"""The two-component mixture that calibrates scores."""
import numpy as np
import pytest

from fiftyone_ncl.core.calibration import clean_probability, fit_mixture


def test_gmm_posterior_separates_two_modes_and_is_monotone():
    rng = np.random.default_rng(0)
    clean = rng.normal(0.8, 0.05, 700)
    noisy = rng.normal(0.2, 0.15, 300)
    scores = np.concatenate([clean, noisy])
    prob, fit = clean_probability(scores, higher_is_clean=True)
    assert fit.means[0] > fit.means[1]  # clean component first
    assert prob[:700].mean() > 0.95 and prob[700:].mean() < 0.1
    order = np.argsort(scores)
    assert np.all(np.diff(prob[order]) >= -1e-12), "confidence must not drop as similarity grows"
    # losses: lower is cleaner
    prob_l, fit_l = clean_probability(-scores, higher_is_clean=False)
    np.testing.assert_allclose(prob_l, prob, atol=1e-6)
    assert fit_l.means[0] < fit_l.means[1]


def test_gmm_constant_scores_carry_no_split():
    prob, fit = clean_probability(np.full(10, 0.3))
    assert fit is None and np.all(prob == 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        fit_mixture(np.array([0.1, np.nan, 0.3]))


def test_gmm_confidence_ranks_exactly_like_the_score():
    # a wide noisy component makes the raw posterior fall again in the far
    # clean tail; the monotone envelope must not create ties there
    rng = np.random.default_rng(4)
    scores = np.concatenate([rng.normal(0.8, 0.03, 400), rng.normal(0.3, 0.3, 600)])
    prob, fit = clean_probability(scores)
    assert fit.stds[0] < fit.stds[1]
    ranked = prob[np.argsort(scores)]
    steps = np.diff(ranked)
    assert np.all(steps >= 0)
    # strictly increasing wherever float64 can still tell values apart from 1
    assert np.all(steps[ranked[1:] < 1.0 - 1e-12] > 0)
    # same AUROC as the raw score for any labelling
    labels = rng.random(1000) < 0.5
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels, prob) == pytest.approx(roc_auc_score(labels, scores))
    # nothing underflows to exactly 0: the least confident stay ordered
    far = clean_probability(np.concatenate([scores, [-5.0, -6.0]]))[0]
    assert far[-1] > 0 and far[-2] > far[-1]
