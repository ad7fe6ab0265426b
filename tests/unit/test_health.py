"""The run's label-free health checks."""
import numpy as np

from fiftyone_ncl.core.decision import estimate_mismatch_rate
from fiftyone_ncl.core.health import assess


def _rate(share, n=3000, seed=0):
    """Statistic of n pairs, ``share`` of them scoring like the null."""
    rng = np.random.default_rng(seed)
    bad = rng.random(n) < share
    stat = np.where(bad, rng.normal(0, 1, n), rng.normal(3, 1, n))
    null = rng.normal(0, 1, 3000)
    return stat, estimate_mismatch_rate(stat, null, seed=seed)


def test_a_method_finding_far_fewer_random_looking_pairs_than_the_baseline_is_flagged():
    stat, memorised = _rate(0.05)
    b_stat, baseline = _rate(0.30, seed=1)
    health = assess(memorised, baseline={"name": "cca", "rate": baseline, "statistic": b_stat},
                    method="crcl", statistic=stat)
    assert health["verdict"] == "check"
    check = next(c for c in health["checks"] if c["check"] == "baseline")
    assert not check["ok"] and "method='cca'" in check["message"] and "crcl" in check["message"]
    assert check["baseline_rate"] > check["rate"]


def test_a_method_as_good_as_the_baseline_passes():
    stat, rate = _rate(0.30)
    b_stat, baseline = _rate(0.30, seed=1)
    health = assess(rate, baseline={"name": "cca", "rate": baseline, "statistic": b_stat}, statistic=stat)
    assert health["verdict"] == "ok" and all(c["ok"] for c in health["checks"])


def test_scores_that_do_not_separate_from_random_pairs_fail_the_separation_check():
    rng = np.random.default_rng(0)
    rate = estimate_mismatch_rate(rng.normal(0, 1, 2000), rng.normal(0, 1, 2000))
    health = assess(rate)
    assert health["verdict"] == "check" and "barely" in health["summary"]


def test_soft_labels_zeroed_far_beyond_the_mismatch_estimate_fail_the_labels_check():
    _, rate = _rate(0.2)
    rng = np.random.default_rng(0)
    collapsed = np.where(rng.random(3000) < 0.8, 0.0, 1.0)
    assert assess(rate, labels=collapsed)["verdict"] == "check"
    in_line = np.where(rng.random(3000) < 0.2, 0.0, 1.0)
    assert assess(rate, labels=in_line)["verdict"] == "ok"
    # the message names the fix when the labels came from the official estimate
    (labels,) = [c for c in assess(rate, labels=collapsed, label_info={"scc_probability": "official"})["checks"]
                 if c["check"] == "labels"]
    assert "scc_probability='relative'" in labels["message"]
    (labels,) = [c for c in assess(rate, labels=collapsed, label_info={"scc_probability": "relative"})["checks"]
                 if c["check"] == "labels"]
    assert "scc_probability" not in labels["message"]
