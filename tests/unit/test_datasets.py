"""The data sets shared by the demo, the benchmarks and the tests."""
import numpy as np

from fiftyone_ncl.datasets.synthetic import make_synthetic


def test_synthetic_generator_is_seeded_and_keeps_truth():
    data, truth = make_synthetic(n_images=60, exclusive_std=3.0, noise_rate=0.5, seed=0)
    assert data.images.shape == (60, 96) and data.texts.shape == (60, 96)
    assert truth.noisy.sum() > 0 and np.array_equal(data.texts.shape[0], truth.shared_text.shape[0])
    # clean pairs carry their own caption's factors
    clean = ~truth.noisy
    assert np.allclose(truth.shared_text[clean], truth.shared[clean])
    again, _ = make_synthetic(n_images=60, exclusive_std=3.0, noise_rate=0.5, seed=0)
    assert np.array_equal(again.texts, data.texts)
