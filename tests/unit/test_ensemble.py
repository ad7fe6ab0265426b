"""``method="ensemble"``: a rank consensus of named methods (fiftyone_ncl.core.methods.ensemble)."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.methods.ensemble import EnsembleMethod
from fiftyone_ncl.core.metrics import detection_metrics
from fiftyone_ncl.core.registry import build_method, list_methods, load_method, method_capabilities

HEADS = dict(epochs=2, embed_dim=16, hidden_dim=32, device="cpu")


def _problem(n=600, rate=0.3, noise=0.6, seed=0, joint=True):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 16))
    img, txt = z + noise * rng.normal(size=z.shape), z + noise * rng.normal(size=z.shape)
    k = int(rate * n)
    txt[:k] = txt[np.roll(np.arange(k), 1)]
    noisy = np.arange(n) < k
    if not joint:
        img = img @ rng.normal(size=(16, 24))
    data = PairData(img.astype(np.float32), txt.astype(np.float32), np.arange(n), joint_space=joint)
    return data, noisy


def test_registered_with_gmm_and_neighbors_by_default():
    assert "ensemble" in list_methods()
    caps = method_capabilities("ensemble")
    assert caps["options"]["members"] == ("gmm", "neighbors") and caps["uses_labels"] is True
    method = build_method("ensemble")
    assert [m.name for m in method.members] == ["gmm", "neighbors"]


def test_consensus_ranks_and_calibrates():
    data, noisy = _problem()
    ens = build_method("ensemble").fit(data, progress=False)
    scores = ens.score(data, progress=False)
    aucs = {m.name: roc_auc_score(noisy, -m.score(data, progress=False).confidence) for m in ens.members}
    auc = roc_auc_score(noisy, -scores.confidence)
    assert auc >= min(aucs.values()) - 1e-9
    info = scores.info
    assert info["members"] == ["gmm", "neighbors"] and set(info["member_info"]) == {"gmm", "neighbors"}
    assert 0.5 < info["rank_agreement"]["gmm~neighbors"] <= 1.0
    # the confidence follows the consensus, and the calibration sees two modes:
    # about as many pairs flagged as are mismatched
    order = np.argsort(scores.calibration_score)
    assert np.all(np.diff(scores.confidence[order]) >= -1e-12)
    m = detection_metrics(noisy, scores.confidence, threshold=0.5)
    assert abs(m["flagged"] - noisy.sum()) < 0.25 * noisy.sum() and m["f1"] > 0.8
    mean = build_method("ensemble", combine="mean").fit(data, progress=False).score(data, progress=False)
    assert roc_auc_score(noisy, -mean.confidence) > 0.9


def test_members_that_share_heads_train_them_once():
    data, noisy = _problem(n=300, joint=False)
    ens = build_method("ensemble", **HEADS).fit(data, progress=False)
    gmm, nb = ens.members
    assert gmm.model is not None and nb.model is gmm.model
    scores = ens.score(data, progress=False)
    assert scores.info["space"].startswith("infonce-heads")
    assert scores.confidence.shape == (300,)


def test_options_reach_the_members():
    ens = build_method("ensemble", members="cosine, neighbors", epochs=3,
                       member_options={"neighbors": {"k": 7, "epochs": 4}})
    cosine, nb = ens.members
    assert (cosine.name, nb.name) == ("cosine", "neighbors")
    assert cosine.config.epochs == 3 and nb.config.epochs == 4 and nb.config.k == 7
    # an unset shared option keeps each member's own default, and is not saved
    assert "batch_size" not in ens.config_dict() and cosine.config.batch_size == 128
    with pytest.raises(ValueError, match="at least 2 distinct"):
        build_method("ensemble", members=("gmm",))
    with pytest.raises(ValueError, match="cannot be a member"):
        build_method("ensemble", members=("gmm", "ensemble"))
    with pytest.raises(ValueError, match="unknown method"):
        build_method("ensemble", members=("gmm", "nope"))
    with pytest.raises(ValueError, match="not members"):
        build_method("ensemble", member_options={"crcl": {"epochs": 1}})
    with pytest.raises(TypeError, match="unknown option"):
        build_method("ensemble", member_options={"neighbors": {"kk": 1}})
    with pytest.raises(ValueError, match="combine"):
        build_method("ensemble", combine="max")


def test_labels_reach_the_member_that_learns_from_them():
    data, noisy = _problem(n=400, noise=0.9)
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(400) < 0.3, (~noisy).astype(float), -1.0)
    ens = build_method("ensemble").fit(data.replace(labels=labels), progress=False)
    assert ens.uses_labels and ens.members[1].fitted_weights is not None
    assert not build_method("ensemble", members=("cosine", "gmm")).uses_labels


def test_checkpoints_round_trip(tmp_path):
    data, noisy = _problem(n=300, joint=False)
    rng = np.random.default_rng(1)
    labels = np.where(rng.random(300) < 0.3, (~noisy).astype(float), -1.0)
    ens = build_method("ensemble", seed=2, **HEADS).fit(data.replace(labels=labels), progress=False)
    path = ens.save(tmp_path / "ens.safetensors")
    loaded = load_method(path)
    assert isinstance(loaded, EnsembleMethod) and [m.name for m in loaded.members] == ["gmm", "neighbors"]
    assert loaded.members[1].fitted_weights is not None
    np.testing.assert_allclose(loaded.score(data, progress=False).confidence,
                               ens.score(data, progress=False).confidence, atol=1e-6)
    # a checkpoint for other inputs is refused before scoring
    other = PairData(np.zeros((5, 8), np.float32), np.zeros((5, 16), np.float32), np.arange(5))
    with pytest.raises(ValueError, match="trained on"):
        loaded.check_inputs(other)
    # members in a joint space without labels: nothing to save
    joint, _ = _problem(n=200)
    assert build_method("ensemble").fit(joint, progress=False).state_dict() == {}
