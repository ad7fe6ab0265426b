"""The regime suite's generators and the near-neighbour / mixed noise."""
import numpy as np
import pytest

from fiftyone_ncl.core.noise import inject_mixed, inject_neighbors, inject_random
from fiftyone_ncl.datasets.regimes import REGIMES, get_regime, inject, list_regimes, make_pairs


def test_every_regime_is_seeded_with_the_right_shapes_and_space():
    for name in REGIMES:
        regime = get_regime(name)
        a, truth = regime.make(seed=3, size=400)
        b, _ = regime.make(seed=3, size=400)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.texts, b.texts)
        p = regime.params
        cpi = p.get("captions_per_image", 1)
        assert a.n_pairs == 400 // cpi * cpi and a.n_images == 400 // cpi
        assert a.images.dtype == np.float32 and a.texts.dtype == np.float32
        assert np.isfinite(a.images).all() and np.isfinite(a.texts).all()
        assert a.joint_space == bool(p.get("joint_space", False))
        if a.joint_space:
            assert a.image_dim == a.text_dim
        else:
            assert (a.image_dim, a.text_dim) == (p.get("image_dim", 384), p.get("text_dim", 512))
        assert truth["shared"].shape[0] == a.n_images
        assert (truth["classes"] is None) == (not p.get("n_classes"))
        assert truth["regime"] == name and a.meta["regime"] == name


def test_another_seed_draws_another_problem():
    regime = get_regime("unaligned-heavy")
    a, _ = regime.make(seed=3, size=300)
    c, _ = regime.make(seed=4, size=300)
    assert not np.array_equal(a.texts, c.texts) and not np.array_equal(a.images, c.images)


def test_registry_holds_a_third_out_with_the_mimic_among_them():
    held = list_regimes(held_out=True)
    assert 12 <= len(REGIMES) <= 16
    assert 0.25 <= len(held) / len(REGIMES) <= 0.4
    assert "heldout-mimic" in held
    assert set(held) | set(list_regimes(held_out=False)) == set(REGIMES)
    with pytest.raises(ValueError, match="unknown regime"):
        get_regime("nope")


def test_heavy_tails_are_heavier_and_exclusive_variance_grows():
    def kurtosis(x):
        x = x - x.mean()
        return float(np.mean(x**4) / np.mean(x**2) ** 2)

    _, light = make_pairs(n_pairs=3000, tails="gaussian", seed=0)
    _, heavy = make_pairs(n_pairs=3000, tails="student", df=3.0, seed=0)
    assert kurtosis(heavy["excl_image"]) > 2 * kurtosis(light["excl_image"])
    # the bulk has the same scale (interquartile range), only tails differ
    iqr = lambda x: np.subtract(*np.percentile(x, [75, 25]))  # noqa: E731
    assert iqr(heavy["excl_image"]) == pytest.approx(iqr(light["excl_image"]), rel=0.1)


def test_class_level_regime_captions_match_their_class():
    data, truth = make_pairs(n_pairs=600, n_classes=6, captions_per_image=2, seed=0)
    assert truth["classes"].shape == (600,)
    assert np.array_equal(truth["classes"], truth["image_classes"][data.image_index])
    # random swaps landing in the same class are not noise at class level
    noisy, mask = inject((data, truth), "random", 0.5, seed=0)
    assert 0.35 < mask.mean() < 0.5
    assert noisy.meta["noise"]["realised_rate"] == pytest.approx(mask.mean())


@pytest.mark.parametrize("kind", ["random", "neighbor", "mixed"])
def test_inject_is_seeded_and_realises_about_the_rate(kind):
    regime_data = get_regime("unaligned-balanced").make(seed=0, size=1000)
    a, mask_a = inject(regime_data, kind, 0.4, seed=2)
    b, mask_b = inject(regime_data, kind, 0.4, seed=2)
    assert np.array_equal(a.texts, b.texts) and np.array_equal(mask_a, mask_b)
    assert 0.37 <= mask_a.mean() <= 0.4
    assert np.array_equal(a.images, regime_data[0].images)
    assert not a.joint_space and a.meta["noise"]["kind"] == kind
    with pytest.raises(ValueError, match="kind"):
        inject(regime_data, "nope", 0.4)


def test_neighbour_swaps_land_on_near_neighbours():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(800, 4))
    image_index = np.repeat(np.arange(800), 2)
    near = inject_neighbors(features, image_index, 0.3, seed=1, k=5)
    rand = inject_random(image_index, 0.3, seed=1)
    assert near.kind == "neighbor" and near.realised_rate == pytest.approx(0.3, abs=0.005)

    def distance(noise):
        d = np.linalg.norm(features[image_index] - features[image_index[noise.source]], axis=1)
        return d[noise.noisy].mean()

    assert distance(near) < 0.4 * distance(rand)
    # a neighbour is another image: never the pair's own
    assert (image_index[near.source][near.noisy] != image_index[near.noisy]).all()
    assert np.array_equal(near.source, inject_neighbors(features, image_index, 0.3, seed=1, k=5).source)


def test_neighbour_swaps_with_classes_cross_the_class_boundary():
    rng = np.random.default_rng(0)
    image_classes = np.arange(300) % 3
    features = np.eye(3)[image_classes] * 3 + rng.normal(size=(300, 3))
    image_index = np.arange(300)
    noise = inject_neighbors(features, image_index, 0.5, seed=0, k=3, classes=image_classes)
    assert noise.realised_rate == pytest.approx(0.5)
    moved = noise.source != np.arange(300)
    assert (image_classes[noise.source[moved]] != image_classes[moved]).all()


def test_mixed_is_half_near_half_random():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(1000, 4))
    image_index = np.arange(1000)
    noise = inject_mixed(features, image_index, 0.4, seed=0, k=5)
    assert noise.kind == "mixed" and 0.37 <= noise.realised_rate <= 0.4
    d = np.linalg.norm(features - features[noise.source], axis=1)[noise.noisy]
    # about half the swaps are near (neighbour), about half far (random)
    near = d < np.median(np.linalg.norm(features - features[rng.permutation(1000)], axis=1)) / 2
    assert 0.35 < near.mean() < 0.7
