"""Out-of-sample (cross-fitted) statistics for the decision layer."""
import numpy as np
import pytest

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.judge import judge_cross_fitted
from fiftyone_ncl.core.registry import build_method
from fiftyone_ncl.datasets.regimes import get_regime, inject


def test_select_pairs_keeps_only_the_images_it_uses():
    images = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    data = PairData(images, np.arange(12, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32),
                    np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]))
    part = data.select_pairs([1, 4, 10, 11])
    assert part.image_index.tolist() == [0, 1, 2, 2] and part.images[:, 0].tolist() == [0, 3, 9]
    assert part.texts[:, 0].tolist() == [1, 4, 10, 11]


def test_cross_fitted_judgement_scores_every_pair_out_of_sample():
    data, truth = inject(get_regime("unaligned-easy").make(seed=0, size=1000), "random", 0.2, seed=0)
    verdict = judge_cross_fitted(lambda: build_method("cca", seed=0), data, folds=4, seed=0)
    assert verdict.statistic.shape == (data.n_pairs,) and verdict.info["folds"] == 4
    # held-out pairs vs held-out decoys: the random swaps are counted
    assert abs(verdict.rate.rate - truth.mean()) < 0.05, verdict.rate.to_dict()
    flags = verdict.decision.flags
    assert flags[truth].mean() > 0.8 and flags[~truth].mean() < 0.02
    with pytest.raises(ValueError, match="folds must be an integer from 2"):
        judge_cross_fitted(lambda: build_method("cca"), data, folds=1)


def test_cross_fitting_takes_progress_true_or_a_callable():
    data, _ = inject(get_regime("unaligned-easy").make(seed=0, size=300), "random", 0.2, seed=0)
    judge_cross_fitted(lambda: build_method("cca", seed=0), data, folds=2, progress=True)
    seen = []
    judge_cross_fitted(lambda: build_method("cca", seed=0), data, folds=2, progress=lambda f, label: seen.append(label))
    assert seen == ["fold 1 of 2", "fold 2 of 2"]
