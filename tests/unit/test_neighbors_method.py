"""``method="neighbors"`` (fiftyone_ncl.core.methods.neighbors) and the torch
neighbour search under it."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.methods.neighbors import NeighborsMethod
from fiftyone_ncl.core.neighbors import COMPONENTS, nearest_neighbors, neighbor_scores
from fiftyone_ncl.core.registry import build_method, list_methods, load_method, method_capabilities

from .test_neighbors import _unit, aligned_problem, category_swaps

HEADS = dict(epochs=2, embed_dim=16, hidden_dim=32, device="cpu")


def _swapped(rate=0.4, seed=0, **kw):
    img, txt, idx, cls = aligned_problem(seed=seed, **kw)
    source, noisy = category_swaps(idx, cls, rate, seed=seed)
    return img.astype(np.float32), txt[source].astype(np.float32), idx, noisy


def test_registered_training_free_and_learns_from_labels():
    assert "neighbors" in list_methods()
    caps = method_capabilities("neighbors")
    assert caps["trains"] is False and caps["uses_labels"] is True
    assert caps["options"]["k"] == 5 and "k" in caps["form_options"]
    assert method_capabilities("gmm")["uses_labels"] is False


def test_scores_a_joint_space_as_given_and_beats_cosine_under_hubness():
    img, txt, idx, noisy = _swapped(gap=1.0, jitter=0.5)
    data = PairData(img, txt, idx, joint_space=True)
    method = build_method("neighbors").fit(data, progress=False)
    assert method.model is None  # no heads: the inputs are one space
    scores = method.score(data, progress=False)
    assert scores.info["space"] == "given" and scores.info["terms"] == ["cross", "csls"]
    assert scores.confidence.shape == (len(idx),) and ((scores.confidence >= 0) & (scores.confidence <= 1)).all()
    cosine = np.einsum("ij,ij->i", _unit(img)[idx], _unit(txt))
    assert roc_auc_score(noisy, -scores.confidence) > roc_auc_score(noisy, -cosine) + 0.02
    # the calibrated confidence ranks pairs as the neighbour score does
    assert roc_auc_score(noisy, -scores.confidence) == pytest.approx(roc_auc_score(noisy, -scores.calibration_score))
    # only the weighted terms are searched: the same score as all four
    full = neighbor_scores(img, txt, idx)
    np.testing.assert_allclose(scores.calibration_score, full.score, atol=1e-6)


def test_two_spaces_train_the_baselines_heads_or_adopt_them():
    rng = np.random.default_rng(0)
    img, txt, idx, noisy = _swapped(n=300)
    data = PairData(img @ rng.normal(size=(img.shape[1], 24)).astype(np.float32), txt, idx)  # not one space
    gmm = build_method("gmm", **HEADS).fit(data, progress=False)
    nb = build_method("neighbors", **HEADS).fit(data, progress=False)
    assert nb.model is not None and nb.score(data, progress=False).info["space"] == "infonce-heads"
    # same head options: the very same heads, taken over instead of trained again
    adopted = build_method("neighbors", k=3, **HEADS).adopt_fit(gmm)
    assert adopted.model is gmm.model
    with pytest.raises(ValueError, match="same training options"):
        build_method("neighbors", epochs=3, embed_dim=16, hidden_dim=32, device="cpu").adopt_fit(gmm)
    with pytest.raises(ValueError, match="not in one space|one space"):
        build_method("neighbors", train_heads=False).fit(data, progress=False)


def _labelled_problem(seed=3):
    # several captions per image and noisy cross-modal distances: the
    # neighbour terms carry signal that only labels say how to weigh
    img, txt, idx, _ = aligned_problem(n=500, caps=2, excl=1.2, seed=seed)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(idx), int(0.4 * len(idx)), replace=False)
    source = np.arange(len(idx))
    source[chosen] = chosen[rng.permutation(len(chosen))]
    noisy = idx[source] != idx
    labelled = rng.random(len(idx)) < 0.2
    labels = np.where(labelled, (~noisy).astype(float), -1.0)
    return img.astype(np.float32), txt[source].astype(np.float32), idx, noisy, labels


def test_weights_fitted_from_labels_improve_held_out_pairs():
    img, txt, idx, noisy, labels = _labelled_problem()
    data = PairData(img, txt, idx, joint_space=True)
    default = build_method("neighbors").fit(data, progress=False)
    fitted = build_method("neighbors").fit(data.replace(labels=labels), progress=False)
    assert default.fitted_weights is None
    w = fitted.fitted_weights
    assert w.info["source"] == "fitted" and w.info["n_right"] + w.info["n_wrong"] == (labels >= 0).sum()
    held = labels < 0
    auc = lambda m: roc_auc_score(noisy[held], -m.score(data, progress=False).confidence[held])  # noqa: E731
    assert auc(fitted) > auc(default) + 0.005
    assert fitted.score(data, progress=False).info["weights_info"]["source"] == "fitted"


def test_labels_of_one_kind_only_are_refused():
    img, txt, idx, _, labels = _labelled_problem()
    data = PairData(img, txt, idx, joint_space=True, labels=np.where(labels >= 0, 0.0, -1.0))
    with pytest.raises(ValueError, match="right and pairs marked wrong; got 0 right"):
        build_method("neighbors").fit(data, progress=False)
    with pytest.raises(ValueError, match="one value per pair"):
        PairData(img, txt, idx, labels=np.ones(3))
    # no judgement at all: the label-free default
    none = build_method("neighbors").fit(data.replace(labels=np.full(len(idx), np.nan)), progress=False)
    assert none.fitted_weights is None


def test_checkpoints_round_trip(tmp_path):
    img, txt, idx, _, labels = _labelled_problem()
    data = PairData(img, txt, idx, joint_space=True)
    # label-free in a joint space: nothing to save
    assert build_method("neighbors").fit(data, progress=False).state_dict() == {}
    # fitted weights alone (no heads)
    fitted = build_method("neighbors", k=4).fit(data.replace(labels=labels), progress=False)
    fitted.save(tmp_path / "w.safetensors")
    loaded = load_method(tmp_path / "w.safetensors")
    assert isinstance(loaded, NeighborsMethod) and loaded.config.k == 4 and loaded.model is None
    np.testing.assert_allclose(loaded.score(data, progress=False).confidence,
                               fitted.score(data, progress=False).confidence)
    # heads plus weights
    rng = np.random.default_rng(1)
    two = data.replace(images=img @ rng.normal(size=(img.shape[1], 20)).astype(np.float32), joint_space=False,
                       labels=labels)
    both = build_method("neighbors", **HEADS).fit(two, progress=False)
    both.save(tmp_path / "h.safetensors")
    again = load_method(tmp_path / "h.safetensors")
    np.testing.assert_allclose(again.score(two, progress=False).confidence, both.score(two, progress=False).confidence,
                               atol=1e-6)
    # a model without heads refuses inputs that are not one space, saying why
    with pytest.raises(ValueError, match="no heads"):
        loaded.score(two, progress=False)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="k must be"):
        build_method("neighbors", k=0)
    with pytest.raises(ValueError, match="metric"):
        build_method("neighbors", metric="manhattan")
    with pytest.raises(ValueError, match="4 numbers"):
        build_method("neighbors", weights=(1, 2))
    with pytest.raises(TypeError, match="unknown option"):
        build_method("neighbors", kk=3)
    assert build_method("neighbors", weights=[0, 1, 0.5, 0.5]).config.weights == (0.0, 1.0, 0.5, 0.5)


def test_torch_search_agrees_with_the_exact_one():
    rng = np.random.default_rng(4)
    q, r = _unit(rng.normal(size=(120, 16))), _unit(rng.normal(size=(300, 16)))
    gq, gr = rng.integers(40, size=120), rng.integers(40, size=300)
    a_idx, a_sim = nearest_neighbors(q, r, 6, gq, gr, backend="exact", memory_bytes=20000)
    b_idx, b_sim = nearest_neighbors(q, r, 6, gq, gr, backend="torch", memory_bytes=20000)
    np.testing.assert_array_equal(a_idx, b_idx)
    np.testing.assert_allclose(a_sim, b_sim, atol=1e-5)
    c_idx, _ = nearest_neighbors(q, r, 6, backend="torch")
    d_idx, _ = nearest_neighbors(q, r, 6, backend="exact")
    np.testing.assert_array_equal(c_idx, d_idx)
    # fewer candidates than k
    e_idx, e_sim = nearest_neighbors(q[:3], r[:4], 6, backend="torch")
    assert (e_idx[:, 4:] == -1).all() and np.isinf(e_sim[:, 4:]).all()
    img, txt, idx, _ = aligned_problem(n=150, caps=2, seed=5)
    t = neighbor_scores(img, txt, idx, backend="torch", memory_bytes=50000)
    e = neighbor_scores(img, txt, idx, backend="exact", memory_bytes=50000)
    np.testing.assert_allclose(t.components, e.components, atol=1e-5)
    with pytest.raises(ValueError, match="unknown terms"):
        neighbor_scores(img, txt, idx, terms=("cross", "typo"))
    assert len(COMPONENTS) == 4
