"""The decision layer: mismatch rate, posterior, and the flagging modes."""
import numpy as np
import pytest

from fiftyone_ncl.core.decision import (
    CONFIDENCE_FLOOR,
    Decision,
    MismatchRate,
    decide,
    estimate_mismatch_rate,
    log_odds,
    margin,
    posterior_matched,
)


def _mixture(n=4000, rate=0.2, seed=0, null_size=4000):
    """Matched pairs ~ N(0, 1), mismatched ~ N(-4, 1.5); the null is a fresh
    sample of the mismatched distribution (shuffled pairs)."""
    rng = np.random.default_rng(seed)
    noisy = rng.random(n) < rate
    score = np.where(noisy, rng.normal(-4.0, 1.5, n), rng.normal(0.0, 1.0, n))
    null = rng.normal(-4.0, 1.5, null_size)
    return score, null, noisy


def test_clean_one_mode_scores_with_a_null_flag_nothing():
    score, null, noisy = _mixture(rate=0.0)
    assert not noisy.any()
    rate = estimate_mismatch_rate(score, null)
    assert rate.method == "null-ratio"
    assert rate.rate == 0.0 and rate.low == 0.0 and rate.high < 0.01
    d = decide(score, null_score=null, rate=rate)
    assert d.info["mode"] == "probability" and d.info["level"] == 0.5
    assert d.flags.mean() <= 0.01
    assert decide(score, "fdr", null_score=null, rate=rate).flags.mean() <= 0.01
    assert d.confidence.min() > 0.99  # ~1 for every pair on clean data
    assert d.confidence.max() <= 1 - CONFIDENCE_FLOOR + 1e-12


def test_twenty_percent_mixture_rate_and_fdr_precision():
    score, null, noisy = _mixture(rate=0.2)
    rate = estimate_mismatch_rate(score, null)
    assert abs(rate.rate - noisy.mean()) < 0.03
    assert rate.low <= noisy.mean() <= rate.high + 0.01
    d = decide(score, "fdr", 0.1, null_score=null, rate=rate)
    precision = noisy[d.flags].mean()
    # selected with the rate's lower bound: at least 1 - level, roughly
    assert precision >= 0.88 and d.flags[noisy].mean() > 0.6
    # the reported estimate (point rate) tracks the realised share of matched flags
    assert abs(d.info["estimated_fdr"] - (1 - precision)) < 0.05
    p = decide(score, null_score=null, rate=rate)  # the default: P(matched) < 0.5
    assert noisy[p.flags].mean() >= 0.9 and p.flags[noisy].mean() > 0.8  # the Bayes rule itself: 0.94 / 0.88


def test_scores_that_do_not_separate_from_the_null_get_no_rate_based_decision():
    rng = np.random.default_rng(3)
    score, null = rng.normal(0.0, 1.0, 2000), rng.normal(-0.2, 1.0, 2000)  # P(score > null) ~ 0.56
    rate = estimate_mismatch_rate(score, null)
    assert not rate.usable and rate.evidence["separation"] < 0.7 and rate.rate > 0.3  # only an upper bound
    for mode in ("probability", "fdr"):
        d = decide(score, mode, null_score=null, rate=rate)
        assert not d.flags.any() and "refused" in d.info
        assert np.allclose(d.confidence, 0.5, atol=1e-5)
    assert decide(score, "top_k", 10, null_score=null, rate=rate).flags.sum() == 10  # explicit choices still work


def test_posterior_is_monotone_bounded_and_never_saturates():
    score, null, _ = _mixture(rate=0.3, n=2000)
    score = np.concatenate([score, [-1e3, 1e3]])  # far outside everything
    for null_score in (null, None):
        conf = posterior_matched(score, null_score)
        order = np.argsort(score)
        assert np.all(np.diff(conf[order]) > 0), "distinct scores must keep their order"
        assert conf.min() >= CONFIDENCE_FLOOR and conf.max() <= 1 - CONFIDENCE_FLOOR
        assert conf[-2] < 0.01 and conf[-1] > 0.99
        assert np.all(np.isfinite(log_odds(conf))) and np.abs(log_odds(conf)).max() < 7.0
    tied = posterior_matched(np.array([1.0, 1.0, 0.0, 0.0, 2.0]), None)
    assert tied[0] == tied[1] and tied[2] == tied[3]


def test_no_null_falls_back_to_a_bic_gated_mixture():
    rng = np.random.default_rng(1)
    one = estimate_mismatch_rate(rng.normal(0.0, 1.0, 3000))
    assert one.method == "one-mode" and one.rate == 0.0 and one.low == 0.0
    assert not decide(rng.normal(0.0, 1.0, 3000)).flags.any()
    score, _, noisy = _mixture(rate=0.2)
    two = estimate_mismatch_rate(score)
    assert two.method == "bic-gmm" and abs(two.rate - noisy.mean()) < 0.03


def test_modes_semantics():
    score, null, noisy = _mixture(rate=0.2, n=1000)
    rate = estimate_mismatch_rate(score, null)
    order = np.argsort(score)

    d = decide(score, "top_k", 37, null_score=null, rate=rate)
    assert d.flags.sum() == 37 and d.flags[order[:37]].all()

    d = decide(score, "fraction", 0.25, null_score=null, rate=rate)
    assert d.flags.sum() == 250 and d.flags[order[:250]].all()

    d = decide(score, "probability", 0.5, null_score=null, rate=rate)
    np.testing.assert_array_equal(d.flags, d.confidence < 0.5)
    stricter = decide(score, "probability", 0.05, null_score=null, rate=rate)
    assert stricter.flags.sum() < d.flags.sum() and not (stricter.flags & ~d.flags).any()

    loose = decide(score, "fdr", 0.3, null_score=null, rate=rate)
    tight = decide(score, "fdr", 0.01, null_score=null, rate=rate)
    assert tight.flags.sum() < loose.flags.sum()

    # f1: marks on either side of 0 -> the cut lands between them
    wrong = np.flatnonzero(score < -2.5)[:20]
    right = np.flatnonzero(score > -1.0)[:20]
    d = decide(score, "f1", marked_right=right, marked_wrong=wrong, null_score=null, rate=rate)
    assert d.info["marked_f1"] == 1.0
    assert score[wrong].max() < d.cut < score[right].min()
    mask = np.zeros(len(score), bool)
    mask[wrong] = True
    d2 = decide(score, "f1", marked_right=right, marked_wrong=mask, null_score=null, rate=rate)
    assert d2.cut == d.cut

    for mode, level in (("top_k", 37), ("fraction", 0.25), ("probability", 0.5), ("fdr", 0.1)):
        d = decide(score, mode, level, null_score=null, rate=rate)
        np.testing.assert_array_equal(d.flags, score < d.cut)
        assert np.all((d.margin < 0) == d.flags)
        assert d.info["n_flagged"] == d.flags.sum()


def test_top_k_never_splits_ties_and_handles_the_ends():
    score = np.array([0.0, 0.0, 0.0, 1.0, 2.0])
    assert decide(score, "top_k", 2).flags.sum() == 0  # a tie group is flagged whole or not at all
    assert decide(score, "top_k", 3).flags.sum() == 3
    assert decide(score, "top_k", 0).flags.sum() == 0 and decide(score, "top_k", 5).flags.all()


def test_redeciding_is_a_pure_function_of_the_stored_arrays():
    score, null, _ = _mixture(rate=0.2, n=1500)
    before = (score.copy(), null.copy())
    a = decide(score, "fdr", 0.1, null_score=null)
    b = decide(score, "fdr", 0.1, null_score=null)
    np.testing.assert_array_equal(a.flags, b.flags)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    assert a.cut == b.cut and a.info == b.info
    # the same decision from a stored rate, and after deciding otherwise in between
    rate = estimate_mismatch_rate(score, null)
    decide(score, "top_k", 10, null_score=null, rate=rate)
    c = decide(score, "fdr", 0.1, null_score=null, rate=rate)
    np.testing.assert_array_equal(a.flags, c.flags)
    np.testing.assert_array_equal(score, before[0])
    np.testing.assert_array_equal(null, before[1])
    assert isinstance(a, Decision) and isinstance(rate, MismatchRate)
    assert set(rate.to_dict()) == {"rate", "low", "high", "method", "usable", "evidence"}


def test_margin_is_signed_distance_in_robust_units():
    m = margin(np.array([-2.0, -1.0, 0.0, 1.0, 2.0]), 0.5)
    assert np.all(np.diff(m) > 0) and (m < 0).sum() == 3
    assert np.all(np.isfinite(margin(np.zeros(4), -np.inf)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(score=[0.1, np.nan, 0.3]), "score"),
        (dict(score=np.zeros((3, 2))), "score"),
        (dict(score=[0.1]), "score"),
        (dict(score=np.arange(50.0), null_score=[np.inf] * 30), "null_score"),
        (dict(score=np.arange(50.0), null_score=np.zeros((30, 2))), "null_score"),
        (dict(score=np.arange(50.0), null_score=np.arange(5.0)), "null_score"),
        (dict(score=np.arange(50.0), mode="fdr", level=0.0), "level"),
        (dict(score=np.arange(50.0), mode="fdr", level=1.0), "level"),
        (dict(score=np.arange(50.0), mode="probability", level=1.5), "level"),
        (dict(score=np.arange(50.0), mode="fraction", level=-0.1), "level"),
        (dict(score=np.arange(50.0), mode="fdr", level="0.1"), "level"),
        (dict(score=np.arange(50.0), mode="top_k", level=0.5), "level"),
        (dict(score=np.arange(50.0), mode="top_k", level=51), "level"),
        (dict(score=np.arange(50.0), mode="nope"), "mode"),
        (dict(score=np.arange(50.0), mode="f1"), "marked"),
        (dict(score=np.arange(50.0), mode="f1", marked_right=[1, 2], marked_wrong=[2, 3]), "marked"),
        (dict(score=np.arange(50.0), mode="f1", marked_right=[1], marked_wrong=np.ones(3, bool)), "marked_wrong"),
        (dict(score=np.arange(50.0), mode="f1", marked_right=[1], marked_wrong=[99]), "marked_wrong"),
        (dict(score=np.arange(50.0), mode="f1", marked_right=[], marked_wrong=[3]), "marked"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        decide(**kwargs)


def test_estimate_checks_its_arguments():
    with pytest.raises(ValueError, match="confidence"):
        estimate_mismatch_rate(np.arange(50.0), confidence=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        estimate_mismatch_rate(np.arange(50.0), n_boot=3)
