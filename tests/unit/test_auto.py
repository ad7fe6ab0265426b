"""method="auto": candidates tried on a copy with known swaps."""
import numpy as np
import pytest

from fiftyone_ncl.core.auto import CANDIDATES, choose_method, trial_pairs
from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.registry import build_method
from fiftyone_ncl.datasets.regimes import get_regime, inject


def test_trial_pairs_keep_whole_images_and_swap_the_stated_share():
    rng = np.random.default_rng(0)
    image_index = np.repeat(np.arange(300), 2)  # two captions per image
    data = PairData(rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(600, 6)).astype(np.float32),
                    image_index)
    trial, truth = trial_pairs(data, rate=0.2, seed=1, max_pairs=200)
    assert trial.n_pairs == 200 and len(trial.images) == 100
    assert np.all(np.bincount(trial.image_index) == 2)  # both captions of each kept image
    assert abs(truth.mean() - 0.2) < 0.03
    # unswapped pairs keep their own caption: each kept text row is one of the originals
    kept = trial.texts[~truth]
    assert all(np.any(np.all(data.texts == row, axis=1)) for row in kept[:20])
    again, truth2 = trial_pairs(data, rate=0.2, seed=1, max_pairs=200)
    assert np.array_equal(again.texts, trial.texts) and np.array_equal(truth, truth2)


def test_auto_picks_the_candidate_that_finds_the_injected_swaps():
    data, _ = inject(get_regime("unaligned-heavy").make(seed=0, size=800), "random", 0.2, seed=0)
    name, options, report = choose_method(data, build_method, {"seed": 0})
    assert set(report["auroc"]) == set(CANDIDATES) and report["chosen"] == name
    assert report["auroc"][name] == max(report["auroc"].values())
    assert options == CANDIDATES[name]


def test_auto_refuses_inputs_that_would_train_towers():
    rng = np.random.default_rng(0)
    data = PairData(rng.integers(0, 255, size=(20, 1, 8, 8), dtype=np.uint8), rng.normal(size=(20, 4)).astype(np.float32),
                    np.arange(20))
    with pytest.raises(ValueError, match="method='auto' chooses among methods on embeddings"):
        choose_method(data, build_method)


def test_progress_true_from_a_terminal_is_not_called():
    # PhasedProgress hands methods True (bars on) in a terminal, not a callable
    data, _ = inject(get_regime("unaligned-easy").make(seed=0, size=300), "random", 0.2, seed=0)
    name, _, _ = choose_method(data, build_method, {"seed": 0}, candidates={"cca": {}}, progress=True)
    assert name == "cca"
    seen = []
    choose_method(data, build_method, {"seed": 0}, candidates={"cca": {}}, progress=lambda f, label: seen.append(label))
    assert seen == ["auto: trying cca"]
