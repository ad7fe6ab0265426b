"""The training-free multimodal-neighbour score (fiftyone_ncl.core.neighbors)."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fiftyone_ncl.core.neighbors import (
    COMPONENTS,
    DEFAULT_WEIGHTS,
    fit_neighbor_weights,
    nearest_neighbors,
    neighbor_scores,
)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def aligned_problem(n=600, caps=1, clusters=20, excl=0.7, gap=0.0, jitter=0.0, dim=32, seed=0):
    """Clustered shared factors through ONE random map for both sides (a
    joint space); ``gap``: a constant offset on the caption side and
    ``jitter``: per-item offsets, the hubness of real CLIP spaces."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (clusters, 8))
    cls = rng.integers(clusters, size=n)
    s = centers[cls] + rng.normal(0, 0.6, (n, 8))
    idx = np.repeat(np.arange(n), caps)
    w1, w2 = rng.normal(0, 0.25, (16, 64)), rng.normal(0, 0.125, (64, dim))
    f = lambda z: np.tanh(z @ w1) @ w2  # noqa: E731
    img = f(np.concatenate([s, rng.normal(0, excl, (n, 8))], 1))
    txt = f(np.concatenate([s[idx], rng.normal(0, excl, (len(idx), 8))], 1))
    scale = np.linalg.norm(img, axis=1).mean()
    g = rng.normal(0, 1, dim)
    txt = txt + gap * scale * g / np.linalg.norm(g)
    img = img + jitter * scale * rng.normal(0, dim**-0.5, img.shape)
    txt = txt + jitter * scale * rng.normal(0, dim**-0.5, txt.shape)
    return img, txt, idx, cls


def category_swaps(idx, cls, rate, seed=0):
    """A fraction of captions replaced by one of another image of the same cluster."""
    rng = np.random.default_rng(seed)
    source = np.arange(len(idx))
    noisy = np.zeros(len(idx), bool)
    for p in rng.choice(len(idx), int(rate * len(idx)), replace=False):
        pool = np.flatnonzero((cls[idx] == cls[idx[p]]) & (idx != idx[p]))
        if len(pool):
            source[p], noisy[p] = rng.choice(pool), True
    return source, noisy


def test_neighbor_score_beats_cosine_when_hubs_distort_it():
    img, txt, idx, cls = aligned_problem(gap=1.0, jitter=0.5)
    source, noisy = category_swaps(idx, cls, 0.4)
    txt = txt[source]
    cosine = np.einsum("ij,ij->i", _unit(img)[idx], _unit(txt))
    res = neighbor_scores(img, txt, idx)
    auc_cos = roc_auc_score(noisy, -cosine)
    auc_nbr = roc_auc_score(noisy, -res.score)
    assert auc_nbr > auc_cos + 0.02, (auc_nbr, auc_cos)
    assert res.components.shape == (len(idx), len(COMPONENTS))
    assert np.isfinite(res.score).all()


def test_an_image_is_never_its_own_neighbour_nor_a_caption_its_images():
    img, txt, idx, _ = aligned_problem(n=80, caps=3, seed=1)
    img[5] = img[4]  # an exact duplicate image is a neighbour, the image itself never
    res = neighbor_scores(img, txt, idx, k=4)
    assert not (res.image_neighbors == np.arange(len(img))[:, None]).any()
    assert (res.image_neighbors[4] == 5).any() and (res.image_neighbors[5] == 4).any()
    assert (res.text_neighbors >= 0).all()
    assert not (idx[res.text_neighbors] == idx[:, None]).any()


def _brute_force_components(img, txt, idx, k, tau_pair, tau_neighbor):
    """The three LEMoN distances written the slow way (cosine)."""
    i, t = _unit(img), _unit(txt)
    d1 = 1 - np.einsum("ij,ij->i", i[idx], t)
    has = np.bincount(idx, minlength=len(i)) > 0
    out = np.zeros((len(t), 3))
    out[:, 0] = d1
    for p in range(len(t)):
        own = idx[p]
        s = i @ i[own]
        s[own] = -np.inf
        s[~has] = -np.inf
        num = den = 0.0
        for j in np.argsort(-s)[:k]:
            for q in np.flatnonzero(idx == j):
                w = np.exp(-tau_neighbor * (1 - s[j])) * np.exp(-tau_pair * d1[q])
                num, den = num + w * (1 - t[p] @ t[q]), den + w
        out[p, 1] = num / den
        st = t @ t[p]
        st[idx == own] = -np.inf
        q = np.argsort(-st)[:k]
        w = np.exp(-tau_neighbor * (1 - st[q])) * np.exp(-tau_pair * d1[q])
        out[p, 2] = (w * (1 - i[idx[q]] @ i[own])).sum() / w.sum()
    return out


def test_multi_caption_components_match_the_definition():
    img, txt, idx, _ = aligned_problem(n=40, caps=3, seed=2)
    keep = np.random.default_rng(0).random(len(idx)) < 0.7  # uneven counts
    keep[idx == 7] = False  # an image without captions vouches for nothing
    txt, idx = txt[keep], idx[keep]
    res = neighbor_scores(img, txt, idx, k=4, tau_pair=3.0, tau_neighbor=2.0)
    want = _brute_force_components(img, txt, idx, 4, 3.0, 2.0)
    np.testing.assert_allclose(res.components[:, [0, 2, 3]], want, atol=1e-5)
    assert not (res.image_neighbors == 7).any()


def test_csls_is_the_cross_distance_less_the_local_radii():
    img, txt, idx, _ = aligned_problem(n=50, caps=2, seed=3)
    res = neighbor_scores(img, txt, idx, k=3)
    i, t = _unit(img), _unit(txt)
    sim = i @ t.T
    r_img = np.sort(sim, axis=1)[:, -3:].mean(1)
    r_txt = np.sort(sim.T, axis=1)[:, -3:].mean(1)
    want = (1 - sim[idx, np.arange(len(idx))]) - 0.5 * ((1 - r_img[idx]) + (1 - r_txt))
    np.testing.assert_allclose(res.component("csls"), want, atol=1e-5)


def test_exact_and_sklearn_searches_agree():
    rng = np.random.default_rng(4)
    q, r = _unit(rng.normal(size=(120, 16))), _unit(rng.normal(size=(300, 16)))
    groups_q, groups_r = rng.integers(40, size=120), rng.integers(40, size=300)
    a_idx, a_sim = nearest_neighbors(q, r, 6, groups_q, groups_r, backend="exact", memory_bytes=20000)
    b_idx, b_sim = nearest_neighbors(q, r, 6, groups_q, groups_r, backend="sklearn")
    np.testing.assert_array_equal(a_idx, b_idx)
    np.testing.assert_allclose(a_sim, b_sim, atol=1e-5)
    assert not (groups_r[a_idx] == groups_q[:, None]).any()
    img, txt, idx, _ = aligned_problem(n=150, caps=2, seed=5)
    exact = neighbor_scores(img, txt, idx, backend="exact", memory_bytes=50000)
    sk = neighbor_scores(img, txt, idx, backend="sklearn")
    np.testing.assert_allclose(exact.components, sk.components, atol=1e-5)


def test_fewer_candidates_than_k_and_a_single_image():
    img, txt, idx, _ = aligned_problem(n=3, caps=2, seed=6)
    res = neighbor_scores(img, txt, idx, k=10)
    assert (res.image_neighbors[:, 2:] == -1).all() and np.isfinite(res.score).all()
    one = neighbor_scores(img[:1], txt[:2], np.zeros(2, int))
    assert np.isnan(one.component("image_side")).all() and np.isfinite(one.score).all()


def test_euclidean_ranks_like_cosine_with_the_default_weights():
    img, txt, idx, _ = aligned_problem(n=100, seed=7)
    cos = neighbor_scores(img, txt, idx)
    euc = neighbor_scores(img, txt, idx, metric="euclidean")
    np.testing.assert_allclose(euc.components[:, :2], 2 * cos.components[:, :2], atol=1e-5)
    np.testing.assert_allclose(euc.score, cos.score, atol=1e-5)


def test_weights_fitted_from_labels():
    # noisy cross-modal distances, several captions per image: the
    # neighbour terms carry signal that only labels say how to weigh
    img, txt, idx, _ = aligned_problem(n=500, caps=2, excl=1.2, seed=3)
    rng = np.random.default_rng(3)
    chosen = rng.choice(len(idx), int(0.4 * len(idx)), replace=False)
    source = np.arange(len(idx))
    source[chosen] = chosen[rng.permutation(len(chosen))]
    noisy = idx[source] != idx
    res = neighbor_scores(img, txt[source], idx)
    labelled = rng.random(len(idx)) < 0.2
    matched = np.where(labelled, (~noisy).astype(float), np.nan)
    weights = fit_neighbor_weights(res.components, matched)
    assert weights.info["source"] == "fitted"
    assert weights.info["n_right"] + weights.info["n_wrong"] == labelled.sum()
    assert (weights.weights >= 0).all() and weights.weights[2:].sum() > 0
    refit = neighbor_scores(img, txt[source], idx, weights=weights)
    held = ~labelled
    cosine = np.einsum("ij,ij->i", _unit(img)[idx], _unit(txt[source]))
    auc_fit = roc_auc_score(noisy[held], -refit.score[held])
    auc_default = roc_auc_score(noisy[held], -res.score[held])
    assert auc_fit > auc_default + 0.005 and auc_default > roc_auc_score(noisy[held], -cosine[held])
    p = weights.probability(res.components)
    assert ((p > 0) & (p < 1)).all() and p[~noisy].mean() > p[noisy].mean()


def test_fit_drops_a_distance_that_points_the_wrong_way():
    rng = np.random.default_rng(9)
    wrong = rng.random(400) < 0.4
    comps = rng.normal(size=(400, 4))
    comps[:, 1] += 2.0 * wrong  # informative
    comps[:, 3] -= 2.0 * wrong  # "closer when wrong": must not get a negative weight
    w = fit_neighbor_weights(comps, ~wrong)
    assert w.weights[1] > 0 and w.weights[3] == 0
    with pytest.raises(ValueError, match="right and pairs marked wrong"):
        fit_neighbor_weights(comps, np.ones(400))


def test_bad_inputs_are_refused():
    img, txt, idx, _ = aligned_problem(n=20, seed=10)
    with pytest.raises(ValueError, match="one space"):
        neighbor_scores(img, txt[:, :5], idx)
    with pytest.raises(ValueError, match="outside"):
        neighbor_scores(img, txt, idx + 1)
    with pytest.raises(ValueError, match="metric"):
        neighbor_scores(img, txt, idx, metric="manhattan")
    with pytest.raises(ValueError, match="4 values"):
        neighbor_scores(img, txt, idx, weights=[1, 2])
    assert len(DEFAULT_WEIGHTS) == len(COMPONENTS)
