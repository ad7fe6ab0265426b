"""DisNCL: its loss terms, the method end to end on tiny synthetic problems,
checkpoints and determinism (soft targets: test_soft_targets.py)."""
import numpy as np
import pytest
import torch

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.methods.disncl import DisNCLMethod
from fiftyone_ncl.core.methods.disncl.terms import fixed_variance_kl, symmetric_gaussian_kl
from fiftyone_ncl.core.registry import build_method, list_methods, load_method
from fiftyone_ncl.datasets.synthetic import make_synthetic

TINY = dict(
    epochs=3,
    warmup_epochs=1,
    ramp_epochs=1,
    grl_ramp_epochs=1,
    batch_size=32,
    hidden_dim=32,
    embed_dim=8,
    mei_dim=8,
    critic_hidden=16,
    critic_dim=8,
    club_hidden=16,
    club_steps=2,
    mi_samples=128,
    mi_steps=10,
    device="cpu",
    seed=0,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    """120 images with 2 captions each (duplicates exercise same-image logic)."""
    return make_synthetic(
        n_images=120, captions_per_image=2, image_dim=24, text_dim=20, map_hidden=32, noise_rate=0.3, seed=1
    )


@pytest.fixture(scope="module")
def fitted(tiny):
    data, _ = tiny
    return DisNCLMethod(**TINY).fit(data, progress=False)


@pytest.fixture(scope="module")
def scores(fitted, tiny):
    return fitted.score(tiny[0], progress=False)


def test_kl_terms():
    mu = torch.randn(4, 3)
    lv = torch.randn(4, 3)
    assert torch.allclose(symmetric_gaussian_kl(mu, lv, mu, lv), torch.zeros(4), atol=1e-6)
    assert (symmetric_gaussian_kl(mu, lv, mu + 1, lv) > 0).all()
    z = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    assert torch.allclose(fixed_variance_kl(z, z, 0.1), torch.zeros(4))
    assert fixed_variance_kl(z, -z, 0.5)[0].item() == pytest.approx(4.0 / 0.25, rel=1e-5)


# the method -------------------------------------------------------------------


def test_registered_and_options_checked():
    assert "disncl" in list_methods()
    with pytest.raises(TypeError, match="unknown option"):
        build_method("disncl", not_an_option=1)
    with pytest.raises(ValueError):
        DisNCLMethod(teacher="nope")


def test_fit_score_shapes_and_finiteness(tiny, scores):
    data, _ = tiny
    n, p = data.n_images, data.n_pairs
    assert scores.confidence.shape == (p,) and scores.similarity.shape == (p,)
    assert np.all(np.isfinite(scores.confidence)) and np.all(np.isfinite(scores.similarity))
    assert scores.confidence.min() >= 0 and scores.confidence.max() <= 1
    assert scores.image_embeddings.shape == (n, 8) and scores.text_embeddings.shape == (p, 8)
    shapes = {k: v.shape for k, v in scores.vectors.items()}
    assert shapes == {"mii_image": (n, 8), "mii_text": (p, 8), "mei_image": (n, 8), "mei_text": (p, 8)}
    for v in scores.vectors.values():
        assert np.all(np.isfinite(v))
    assert np.allclose(np.linalg.norm(scores.vectors["mii_image"], axis=1), 1.0, atol=1e-4)
    # the similarity is the MII cosine of each pair
    sim = np.einsum("ij,ij->i", scores.vectors["mii_image"][data.image_index], scores.vectors["mii_text"])
    assert np.allclose(sim, scores.similarity, atol=1e-5)


def test_info_history_and_mi(scores):
    info = scores.info
    hist = info["history"]
    assert len(hist) == 3
    assert hist[0]["fraction_clean"] == 1.0  # warm-up: no filtering
    assert 0.0 < hist[-1]["fraction_clean"] <= 1.0
    for key in ("loss", "match", "s_infonce", "s_kl", "x_recon", "x_adv", "reg_club"):
        assert all(np.isfinite(h[key]) for h in hist), key
    mi = info["mi"]
    for key in ("mii_image__mii_text", "mei_image__mii_text", "mei_text__mii_image", "club_mii_mei_image", "club_mii_mei_text"):
        assert np.isfinite(mi[key]["mi"]), key
    assert mi["mii_image__mii_text"]["mi"] <= mi["log_batch"] + 1e-6
    assert "calibration" in info and info["space"] == "mii"
    assert info["calibration_input"] == "reference loss"
    assert scores.calibration_score.shape == scores.confidence.shape
    # higher reference loss never means a higher clean probability
    order = np.argsort(scores.calibration_score)
    assert np.all(np.diff(scores.confidence[order]) <= 1e-9)


def test_training_split_safeguard():
    m = DisNCLMethod(min_noisy_fraction=0.1)
    w = np.ones(50)
    loss = np.arange(50, dtype=float)
    out = m._training_weights(w, loss)
    assert (out == 0).sum() == 5 and np.all(out[-5:] == 0)
    assert np.all(w == 1)  # the exported confidence is not touched


def test_checkpoint_roundtrip_and_other_dataset(tmp_path, fitted, scores, tiny):
    path = fitted.save(tmp_path / "disncl.safetensors")
    loaded = load_method(path)
    assert isinstance(loaded, DisNCLMethod)
    again = loaded.score(tiny[0], progress=False)
    np.testing.assert_allclose(again.confidence, scores.confidence, atol=1e-6)
    np.testing.assert_allclose(again.similarity, scores.similarity, atol=1e-6)
    for key, value in scores.vectors.items():
        np.testing.assert_allclose(again.vectors[key], value, atol=1e-6)
    # a different collection with the same input dimensions
    other, _ = make_synthetic(
        n_images=50, image_dim=24, text_dim=20, map_hidden=32, noise_rate=0.2, seed=5
    )
    s2 = loaded.score(other, progress=False)
    assert s2.confidence.shape == (50,) and np.all(np.isfinite(s2.confidence))
    assert s2.vectors["mei_text"].shape == (50, 8)


def test_deterministic_on_cpu(tiny):
    data, _ = tiny
    opts = dict(TINY, epochs=2, mi_diagnostics=False)
    a = DisNCLMethod(**opts).fit(data, progress=False).score(data, progress=False)
    b = DisNCLMethod(**opts).fit(data, progress=False).score(data, progress=False)
    assert np.array_equal(a.confidence, b.confidence)
    assert np.array_equal(a.vectors["mei_image"], b.vectors["mei_image"])


@pytest.mark.parametrize("extra", [dict(stochastic=True), dict(teacher="ema", warmup_epochs=0)])
def test_variants_run(tiny, extra):
    data, _ = tiny
    opts = dict(TINY, epochs=2, mi_diagnostics=False, **extra)
    calls = []
    s = DisNCLMethod(**opts).fit(data, progress=lambda f, label: calls.append((f, label))).score(data, progress=False)
    assert np.all(np.isfinite(s.confidence))
    assert calls and calls[-1][0] == pytest.approx(1.0) and "clean=" in calls[-1][1]


def test_cnn_towers_on_pixels():
    rng = np.random.default_rng(0)
    data = PairData(
        images=rng.integers(0, 255, size=(40, 1, 8, 8), dtype=np.uint8),
        texts=rng.normal(size=(40, 6)).astype(np.float32),
        image_index=np.arange(40),
    )
    opts = dict(TINY, epochs=2, mi_diagnostics=False, batch_size=16)
    s = DisNCLMethod(**opts).fit(data, progress=False).score(data, progress=False)
    assert np.all(np.isfinite(s.confidence)) and s.vectors["mei_image"].shape == (40, 8)


def test_grouped_critics_and_club_compute_what_separate_networks_do():
    """The two modalities' critics and CLUB estimators run as one grouped
    network; group by group they are the separate networks of earlier
    versions (whose checkpoints load into them)."""
    from fiftyone_ncl.core.methods.disncl.nets import GroupedCLUB, GroupedCritic, DisNCLNet
    from fiftyone_ncl.core.methods.disncl.terms import grouped_critic_infonce
    from fiftyone_ncl.core.mi import CLUB, SeparableCritic, critic_infonce

    torch.manual_seed(0)
    sep_critics = [SeparableCritic(6, 5, 16, 4, 3.0) for _ in range(2)]
    sep_clubs = [CLUB(5, 6, 16) for _ in range(2)]
    state = {}
    for side, crit, club in zip(("image", "text"), sep_critics, sep_clubs):
        state.update({"critic_%s.%s" % (side, k): v for k, v in crit.state_dict().items()})
        state.update({"club_%s.%s" % (side, k): v for k, v in club.state_dict().items()})
    stacked = dict(state)
    DisNCLNet._load_separate(stacked, "")
    critics = GroupedCritic(2, 6, 5, 16, 4, 3.0)
    critics.load_state_dict({k[len("critics."):]: v for k, v in stacked.items() if k.startswith("critics.")})
    clubs = GroupedCLUB(2, 5, 6, 16)
    clubs.load_state_dict({k[len("clubs."):]: v for k, v in stacked.items() if k.startswith("clubs.")})
    x, y = torch.randn(2, 10, 6), torch.randn(2, 10, 5)
    w = torch.rand(10)
    same = torch.eye(10, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    logits = critics(x, y)
    for g in range(2):
        torch.testing.assert_close(logits[g], sep_critics[g](x[g], y[g]), rtol=1e-5, atol=1e-5)
    expected = sum(critic_infonce(sep_critics[g](x[g], y[g]), same, w) for g in range(2))
    torch.testing.assert_close(grouped_critic_infonce(logits, same, w), expected, rtol=1e-5, atol=1e-5)
    expected = sum(critic_infonce(sep_critics[g](x[g], y[g]), None, w) for g in range(2))
    torch.testing.assert_close(grouped_critic_infonce(logits, None, w), expected, rtol=1e-5, atol=1e-5)
    # CLUB: z -> e within each group
    z, e = torch.randn(2, 10, 5), torch.randn(2, 10, 6)
    torch.testing.assert_close(clubs(z, e), sum(sep_clubs[g](z[g], e[g]) for g in range(2)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(clubs.learning_loss(z, e), sum(sep_clubs[g].learning_loss(z[g], e[g]) for g in range(2)),
                               rtol=1e-5, atol=1e-4)


def test_checkpoint_of_separate_networks_loads(fitted, tiny):
    """A state dict in the earlier layout (separate critic_image / club_text
    ... modules) loads into the grouped networks and scores the same."""
    from fiftyone_ncl.core.methods.disncl.nets import DisNCLNet

    state = fitted.net.state_dict()
    old = {}
    for key, value in state.items():
        if key.startswith(("critics.", "clubs.")):
            continue
        old[key] = value
    for grouped, (separate, linear) in DisNCLNet._SEPARATE.items():
        for g, side in enumerate(("image", "text")):
            part = state[grouped][g]
            old[separate.format(side)] = part.T.clone() if linear else part[0].clone()
    import copy

    net = copy.deepcopy(fitted.net)
    net.load_state_dict(old)
    for key, value in state.items():
        assert torch.equal(net.state_dict()[key], value), key


def test_split_features_normalised_on_the_device_like_on_the_host():
    """On a GPU the split keeps its MII features on the device; their
    normalisation and checks are normalize_rows' (tested here on CPU tensors)."""
    from fiftyone_ncl.core.methods.disncl.method import _normalize_on_device
    from fiftyone_ncl.core.vectors import normalize_rows

    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    np.testing.assert_allclose(_normalize_on_device(torch.from_numpy(x), "z").numpy(), normalize_rows(x), atol=1e-6)
    unit = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
    assert _normalize_on_device(unit, "z") is unit  # already unit rows: kept
    x[3] = 0.0
    with pytest.raises(ValueError, match="all-zero"):
        _normalize_on_device(torch.from_numpy(x), "z")


# high-noise safeguards (issue 15): split gate, KL gating, ACL rows ---------------


def _losses(kind, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "tail":  # one population of losses and a 3 % far tail: no noisy population
        return np.concatenate([rng.normal(5.0, 0.3, int(0.97 * n)), rng.normal(7.0, 0.6, n - int(0.97 * n))])
    # clean pairs around 2, a 40 % noisy population around 5: a real split
    return np.concatenate([rng.normal(2.0, 0.4, int(0.6 * n)), rng.normal(5.0, 0.6, n - int(0.6 * n))])


def test_split_gate_fires_on_a_far_tail_not_on_two_modes():
    """The GMM is fitted by the function the method's split uses
    (reference_confidence -> clean_probability, sklearn's GaussianMixture)."""
    from fiftyone_ncl.core.calibration import clean_probability
    from fiftyone_ncl.core.methods.disncl.split import split_credibility

    tail = _losses("tail")
    w, fit = clean_probability(tail, higher_is_clean=False, seed=0)
    assert fit.weights[1] < 0.1  # the mixture did fit the tail ...
    assert (w > 0.5).mean() > 0.9  # ... and calls almost every pair clean
    check = split_credibility(tail, fit)
    assert check.fired and check.reason == "tail"
    assert check.stats["noisy_mean"] > check.stats["tail_value"]

    two = _losses("two")
    w, fit = clean_probability(two, higher_is_clean=False, seed=0)
    check = split_credibility(two, fit)
    assert not check.fired and check.reason is None
    assert check.stats["separation"] > 4  # two well separated modes
    # the same split is distrusted when the components must separate more
    assert split_credibility(two, fit, min_separation=10.0).reason == "overlap"
    # tail check off
    assert not split_credibility(tail, clean_probability(tail, higher_is_clean=False, seed=0)[1], tail_weight=0.0).fired
    # constant losses: no fit, not trusted
    assert split_credibility(np.ones(10), None).reason == "no fit"


def test_gated_weights_fallbacks_and_previous_split():
    from fiftyone_ncl.core.calibration import clean_probability
    from fiftyone_ncl.core.methods.disncl.method import _EpochState
    from fiftyone_ncl.core.methods.disncl.split import rank_weights

    tail, two = _losses("tail"), _losses("two")
    w_tail, fit_tail = clean_probability(tail, higher_is_clean=False, seed=0)
    w_two, fit_two = clean_probability(two, higher_is_clean=False, seed=0)
    for fallback in ("neutral", "previous", "rank"):
        m = DisNCLMethod(split_gate=True, gate_fallback=fallback, gate_min_separation=0.0)
        state = _EpochState(w=torch.ones(len(tail)))
        # first split untrusted: "previous" has nothing to go back to
        w, rec = m._gated_weights(w_tail, tail, fit_tail, state)
        assert rec["gate"] and rec["gate_reason"] == "tail"
        if fallback == "rank":
            np.testing.assert_allclose(w, rank_weights(tail))
            assert np.argmax(w) == np.argmin(tail) and w.max() == 1.0 and w.min() == 0.0
        else:
            assert rec["gate_fallback"] == "neutral" and np.all(w == 0.5)
        # a trusted split is used (with the minimum noisy fraction) and kept
        w, rec = m._gated_weights(w_two, two, fit_two, state)
        assert not rec["gate"] and rec["split_check"]["fired"] is False
        np.testing.assert_array_equal(w, m._training_weights(w_two, two))
        trusted = w
        w, rec = m._gated_weights(w_tail, tail, fit_tail, state)
        assert rec["gate"]
        if fallback == "previous":
            assert rec["gate_fallback"] == "previous"
            np.testing.assert_array_equal(w, trusted)
    # gate off: the tail split is trained on, but the check is still recorded
    m = DisNCLMethod(split_gate=False)
    w, rec = m._gated_weights(w_tail, tail, fit_tail, _EpochState(w=torch.ones(len(tail))))
    assert rec["gate"] is False and rec["split_check"]["fired"] and rec["split_check"]["reason"] == "tail"
    assert (w > 0.5).mean() > 0.9


def test_history_records_the_gate(tiny):
    data, _ = tiny
    opts = dict(TINY, epochs=3, mi_diagnostics=False)
    # a separation no split reaches: the gate fires at every split
    m = DisNCLMethod(split_gate=True, gate_min_separation=1e9, **opts).fit(data, progress=False)
    splits = [h for h in m.history if "split_check" in h]
    assert len(splits) == 2  # epochs after the one warm-up epoch
    for h in splits:
        assert h["gate"] is True and "overlap" in h["gate_reason"] and h["gate_fallback"] == "neutral"
        assert h["mean_w"] == pytest.approx(0.5) and h["fraction_clean"] == 0.0
        assert h["s_kl"] == 0.0  # w = 0.5 everywhere: no pair is confident, no KL pull
    assert "gate" not in m.history[0]  # warm-up: no split
    m = DisNCLMethod(split_gate=False, kl_min_w=0.5, **opts).fit(data, progress=False)
    for h in m.history[1:]:
        assert h["gate"] is False and h["gate_reason"] is None and "separation" in h["split_check"]
        assert h["s_kl"] > 0


def _kl_config(**kw):
    return DisNCLMethod(**kw).config


def test_kl_gating_changes_which_rows_contribute():
    from fiftyone_ncl.core.methods.disncl.terms import invariance_loss, log_probs

    torch.manual_seed(0)
    z_v = torch.nn.functional.normalize(torch.randn(4, 6), dim=-1).requires_grad_(True)
    z_t = torch.nn.functional.normalize(torch.randn(4, 6), dim=-1)
    w = torch.tensor([0.95, 0.7, 0.3, 0.0])
    kl = fixed_variance_kl(z_v, z_t, 0.03).detach()

    def run(**kw):
        lp = log_probs(z_v, z_t, 0.05)
        return invariance_loss(lp, z_v, z_t, None, None, w, 1.0, _kl_config(**kw))

    _, _, l_kl = run(kl_min_w=0.5)  # every pair the split calls clean: rows 0 and 1
    assert l_kl.item() == pytest.approx(kl[:2].mean().item(), rel=1e-5)
    _, _, l_kl = run(kl_min_w=0.9)  # only row 0
    assert l_kl.item() == pytest.approx(kl[0].item(), rel=1e-5)
    grad = torch.autograd.grad(l_kl, z_v)[0]
    assert grad[0].abs().sum() > 0 and torch.all(grad[1:] == 0)
    _, _, l_kl = run(kl_min_w=0.0)  # every pair with w > 0: rows 0-2
    assert l_kl.item() == pytest.approx(kl[:3].mean().item(), rel=1e-5)
    l_s, l_nce, l_kl = run(kl_deterministic=False)  # no KL pull for deterministic heads
    assert l_kl.item() == 0.0 and l_s.item() == pytest.approx(l_nce.item())
    # stochastic heads keep their KL with kl_deterministic=False
    mu_logvar = (z_v, torch.zeros(4, 6), z_t, torch.zeros(4, 6))
    lp = log_probs(z_v, z_t, 0.05)
    _, _, l_kl = invariance_loss(lp, z_v, z_t, mu_logvar, None, w, 1.0, _kl_config(kl_deterministic=False))
    assert l_kl.item() > 0


def test_robust_match_loss_is_acl_on_unconfident_rows():
    from fiftyone_ncl.core.acl import acl_from_log_probs
    from fiftyone_ncl.core.methods.disncl.terms import log_probs, robust_match_loss

    torch.manual_seed(1)
    z_v = torch.nn.functional.normalize(torch.randn(8, 6), dim=-1)
    z_t = torch.nn.functional.normalize(torch.randn(8, 6), dim=-1)
    lp = log_probs(z_v, z_t, 0.1)
    ce = (-lp.i2t.diagonal(), -lp.t2i.diagonal())
    w = torch.tensor([0.9, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1, 0.0])
    # every row unconfident: half CRCL's ACL with y = w (its terms add both directions)
    out = robust_match_loss(lp, ce, (None, None), None, w, 1.0, 5.0)
    assert out.item() == pytest.approx(0.5 * acl_from_log_probs(lp.i2t, lp.t2i, w, 5.0).loss.item(), rel=1e-5)
    # every row confident: the plain cross-entropy
    out = robust_match_loss(lp, ce, (None, None), None, w.clamp_min(0.5), 0.5, 5.0)
    assert out.item() == pytest.approx(0.5 * (ce[0].mean() + ce[1].mean()).item(), rel=1e-5)
    # a noisy row (w = 0) is not pulled towards its labelled partner
    w = torch.zeros(8)
    out = robust_match_loss(lp, ce, (None, None), None, w, 0.5, 0.0)
    assert out.item() == 0.0
    # with lam > 0 it is pushed away from the others, bounded
    out = robust_match_loss(lp, ce, (None, None), None, w, 0.5, 5.0)
    assert 0.0 < out.item() <= 5.0


@pytest.mark.parametrize("name, value", [
    ("kl_min_w", 1.0), ("kl_min_w", -0.1), ("gate_tail_weight", 1.5), ("gate_tail_quantile", 1.0),
    ("gate_min_separation", -1), ("gate_fallback", "median"), ("robust_loss", "mae"), ("robust_min_w", 0.0),
    ("acl_lam", -1.0), ("split_gate", "yes"), ("kl_deterministic", 0),
])
def test_high_noise_options_checked(name, value):
    with pytest.raises(ValueError, match=name):
        DisNCLMethod(**{name: value})


@pytest.mark.parametrize("extra", [
    dict(split_gate=True, gate_fallback="rank", gate_min_separation=1e9, kl_min_w=0.9),
    dict(robust_loss="acl"),
    dict(robust_loss="acl", use_soft_targets=False),
])
def test_high_noise_variants_run(tiny, extra):
    data, _ = tiny
    s = DisNCLMethod(**dict(TINY, epochs=3, mi_diagnostics=False, **extra)).fit(data, progress=False).score(
        data, progress=False)
    assert np.all(np.isfinite(s.confidence)) and "split_check" in s.info


def test_the_start_is_the_papers_unless_asked_and_explicit_options_win(tiny, fitted):
    from fiftyone_ncl.core.start import resolve_start

    data, _ = tiny
    assert data.towers == "frozen"
    # the default run: the paper's random MLP heads at tau 0.05, recorded as concrete values
    assert (fitted.config.init, fitted.config.head, fitted.config.tau) == ("random", "mlp", 0.05)
    method = DisNCLMethod(**TINY)
    assert (method.config.init, method.config.head, method.config.tau) == ("random", None, None)
    cca = resolve_start(DisNCLMethod(**dict(TINY, init="cca")).config, data)
    assert (cca.init, cca.head, cca.tau) == ("cca", "linear", 0.2)
    auto = resolve_start(DisNCLMethod(**dict(TINY, init="auto")).config, data)
    assert (auto.init, auto.head, auto.tau) == ("cca", "linear", 0.2)
    mine = resolve_start(DisNCLMethod(**dict(TINY, init="cca", tau=0.1, head="mlp")).config, data)
    assert (mine.init, mine.head, mine.tau) == ("cca", "mlp", 0.1)
    towers = resolve_start(DisNCLMethod(**dict(TINY, init="auto")).config, data.replace(towers="cnn"))
    assert (towers.init, towers.head, towers.tau) == ("random", "mlp", 0.05)
    # a CCA-started fit records its concrete start too
    started = DisNCLMethod(**dict(TINY, init="cca", epochs=2, mi_diagnostics=False)).fit(data, progress=False)
    assert (started.config.init, started.config.head, started.config.tau) == ("cca", "linear", 0.2)
    with pytest.raises(ValueError, match="init must be one of"):
        DisNCLMethod(init="pca")
    with pytest.raises(ValueError, match="tau must be a number > 0"):
        DisNCLMethod(tau=0)
