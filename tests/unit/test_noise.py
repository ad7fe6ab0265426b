"""Noise injection with known truth."""
import numpy as np
import pytest

from fiftyone_ncl.core.noise import inject_category, inject_random


def test_random_noise_is_seeded_and_reports_realised_rate():
    image_index = np.arange(1000)
    a = inject_random(image_index, 0.4, seed=5)
    b = inject_random(image_index, 0.4, seed=5)
    np.testing.assert_array_equal(a.source, b.source)
    assert (a.source != np.arange(1000)).sum() <= 400
    assert 0.38 < a.realised_rate <= 0.4
    # class-level truth: swaps inside a class do not count as noise
    classes = np.arange(1000) % 2
    c = inject_random(image_index, 0.4, seed=5, classes=classes)
    assert c.realised_rate < a.realised_rate
    assert np.all(c.noisy == (classes[c.source] != classes))
    assert c.apply(list(range(1000))) == list(c.source)


def test_category_noise_moves_captions_to_similar_but_different_kinds():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 6, size=600)
    names = ["a", "b", "c", "d", "e", "f"]
    groups = {"a": "g1", "b": "g1", "c": "g1", "d": "g2", "e": "g2", "f": "solo"}
    noise = inject_category(np.arange(600), 0.5, [names[c] for c in classes], seed=1, classes=classes, groups=groups)
    moved = noise.source != np.arange(600)
    assert np.all(noise.noisy == moved)
    src = classes[noise.source[moved]]
    dst = classes[moved]
    assert np.all(src != dst)
    assert all(groups[names[s]] == groups[names[d]] for s, d in zip(src, dst))
    # "f" is alone in its group: its captions cannot move
    assert not moved[classes == 5].any()
    assert noise.realised_rate < 0.5


def test_category_noise_with_multi_label_images_shares_a_category():
    cats = [["dog", "person"], ["dog"], ["car"], ["car", "person"], ["cat"]] * 20
    image_index = np.arange(100)
    noise = inject_category(image_index, 1.0, cats, seed=2)
    for p in np.flatnonzero(noise.noisy):
        assert set(cats[p]) & set(cats[noise.source[p]])
        assert noise.source[p] != p
