"""Metrics, calibration, reference scores, suggestions, noise injection."""
import numpy as np
import pytest

from fiftyone_ncl.core.calibration import clean_probability, fit_mixture
from fiftyone_ncl.core.metrics import detection_metrics, retrieval_metrics
from fiftyone_ncl.core.noise import inject_category, inject_random
from fiftyone_ncl.core.reference import reference_scores
from fiftyone_ncl.core.suggestions import suggest_captions, suggestion_candidates
from fiftyone_ncl.core.training import Progress, epoch_batches, seed_everything


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# detection metrics ------------------------------------------------------


def test_detection_metrics_perfect_and_reversed():
    noisy = np.array([True, True, False, False, False])
    perfect = np.array([0.1, 0.2, 0.8, 0.9, 0.95])
    m = detection_metrics(noisy, perfect, threshold=0.5)
    assert m["auroc"] == 1.0 and m["ap"] == 1.0 and m["precision_at_k"] == 1.0
    assert m["k"] == 2 and m["flagged"] == 2 and m["precision"] == 1.0 and m["recall"] == 1.0
    reversed_ = detection_metrics(noisy, 1 - perfect)
    assert reversed_["auroc"] == 0.0 and reversed_["precision_at_k"] == 0.0


def test_detection_metrics_keep_the_order_of_tiny_confidences():
    # calibrated posteriors deep in the noisy tail are tiny but distinct;
    # ranking by 1 - confidence would round them all to 1.0 and tie them
    noisy = np.array([True, True, False, False])
    confidence = np.array([1e-200, 1e-120, 1e-30, 0.9])
    m = detection_metrics(noisy, confidence, threshold=0.5)
    assert m["auroc"] == 1.0 and m["ap"] == 1.0 and m["precision_at_k"] == 1.0
    assert m["flagged"] == 3 and m["recall"] == 1.0


def test_detection_metrics_one_class_and_shape_errors():
    m = detection_metrics(np.zeros(4, bool), np.linspace(0, 1, 4))
    assert m["auroc"] is None and m["ap"] is None and m["precision_at_k"] is None
    with pytest.raises(ValueError, match="shape"):
        detection_metrics(np.zeros(3, bool), np.zeros(4))


def test_retrieval_metrics_instance_and_class_protocols():
    # 3 images, 2 captions each; caption embeddings point at their image
    img = np.eye(3, dtype=np.float32)
    image_index = np.array([0, 0, 1, 1, 2, 2])
    txt = img[image_index]
    m = retrieval_metrics(img, txt, image_index)
    assert m["i2t_r1"] == 100.0 and m["t2i_r1"] == 100.0 and m["rsum"] == 600.0
    # scramble: caption rows point at the next image -> R@1 = 0 both ways
    txt_wrong = img[(image_index + 1) % 3]
    m = retrieval_metrics(img, txt_wrong, image_index)
    assert m["i2t_r1"] == 0.0 and m["t2i_r1"] == 0.0
    # class protocol: images 0 and 1 share a class, so pointing 0->1 is a hit
    classes_img = np.array([0, 0, 1])
    txt_01 = img[np.array([1, 1, 0, 0, 2, 2])]
    m = retrieval_metrics(img, txt_01, image_index, classes_img, classes_img[image_index])
    assert m["i2t_r1"] == 100.0 and m["t2i_r1"] == 100.0


# calibration ------------------------------------------------------------


def test_gmm_posterior_separates_two_modes_and_is_monotone():
    rng = np.random.default_rng(0)
    clean = rng.normal(0.8, 0.05, 700)
    noisy = rng.normal(0.2, 0.15, 300)
    scores = np.concatenate([clean, noisy])
    prob, fit = clean_probability(scores, higher_is_clean=True)
    assert fit.means[0] > fit.means[1]  # clean component first
    assert prob[:700].mean() > 0.95 and prob[700:].mean() < 0.1
    order = np.argsort(scores)
    assert np.all(np.diff(prob[order]) >= -1e-12), "confidence must not drop as similarity grows"
    # losses: lower is cleaner
    prob_l, fit_l = clean_probability(-scores, higher_is_clean=False)
    np.testing.assert_allclose(prob_l, prob, atol=1e-6)
    assert fit_l.means[0] < fit_l.means[1]


def test_gmm_constant_scores_carry_no_split():
    prob, fit = clean_probability(np.full(10, 0.3))
    assert fit is None and np.all(prob == 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        fit_mixture(np.array([0.1, np.nan, 0.3]))


# reference scores -------------------------------------------------------


def test_reference_scores_match_brute_force():
    rng = np.random.default_rng(1)
    img = _unit(rng.normal(size=(6, 8)).astype(np.float32))
    image_index = np.array([0, 0, 1, 2, 3, 4, 5, 5])
    txt = _unit(img[image_index] + 0.5 * rng.normal(size=(8, 8)).astype(np.float32))
    tau = 0.1
    prob, loss = reference_scores(img, txt, image_index, tau, n_negatives=5, n_sets=3, seed=7)

    from fiftyone_ncl.core.reference import reference_negatives

    sets = reference_negatives(8, 5, 3, seed=7)
    for i in range(8):
        ps, ls = [], []
        for neg in sets:
            neg = [n for n in neg if image_index[n] != image_index[i]]
            pos = img[image_index[i]] @ txt[i]
            li2t = np.array([pos] + [img[image_index[i]] @ txt[n] for n in neg]) / tau
            lt2i = np.array([pos] + [txt[i] @ img[image_index[n]] for n in neg]) / tau
            a = np.exp(li2t[0]) / np.exp(li2t).sum()
            b = np.exp(lt2i[0]) / np.exp(lt2i).sum()
            ps.append((a + b) / 2)
            ls.append(-(np.log(a) + np.log(b)) / 2)
        assert prob[i] == pytest.approx(np.mean(ps), rel=1e-4)
        assert loss[i] == pytest.approx(np.mean(ls), rel=1e-4)


def test_reference_scores_rank_matched_above_swapped():
    rng = np.random.default_rng(2)
    img = _unit(rng.normal(size=(200, 16)).astype(np.float32))
    # caption = its image + small noise (norm ~0.2 against 1)
    txt = _unit(img + 0.05 * rng.normal(size=img.shape).astype(np.float32))
    txt[:40] = txt[np.roll(np.arange(40), 1)]
    prob, loss = reference_scores(img, txt, np.arange(200), 0.1)
    assert prob[40:].min() > prob[:40].max()
    assert loss[40:].max() < loss[:40].min()


# suggestions ------------------------------------------------------------


def test_suggestions_find_the_right_caption_never_the_own():
    img = np.eye(4, dtype=np.float32)
    image_index = np.array([0, 1, 2, 3])
    txt = img[[1, 0, 2, 3]]  # captions of 0 and 1 swapped
    best, score = suggest_captions(img, txt, image_index, [0, 1])
    assert list(best) == [1, 0]
    # image 2's own caption matches it best but is excluded
    best, _ = suggest_captions(img, txt, image_index, [2])
    assert best[0] != 2
    # candidate mask restricts the search; none left -> -1
    best, score = suggest_captions(img, txt, image_index, [0], candidates=np.array([True, False, False, False]))
    assert best[0] == -1 and np.isnan(score[0])


def test_suggestion_candidates_keep_every_flagged_caption():
    noisy = np.zeros(1000, bool)
    noisy[:50] = True
    assert suggestion_candidates(noisy, None) is None
    assert suggestion_candidates(noisy, 5000) is None
    mask = suggestion_candidates(noisy, 200, seed=3)
    assert mask[:50].all() and mask.sum() == 200
    mask = suggestion_candidates(noisy, 20, seed=3)  # more flagged than the budget
    assert mask.sum() == 20 and not mask[50:].any()


# noise injection --------------------------------------------------------


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


# training helpers -------------------------------------------------------


def test_epoch_batches_visit_every_pair_once():
    gen = seed_everything(0)
    batches = epoch_batches(1000, 128, gen)
    flat = np.concatenate(batches)
    assert sorted(flat) == list(range(1000))
    assert min(len(b) for b in batches) >= 120  # no ragged tiny batch
    assert len(epoch_batches(5, 128, gen)) == 1


def test_progress_callback_reports_fraction_and_label():
    seen = []
    with Progress(4, "train", lambda f, label: seen.append((f, label))) as bar:
        for _ in range(4):
            bar.update(loss=0.5)
    assert [round(f, 2) for f, _ in seen] == [0.25, 0.5, 0.75, 1.0]
    assert seen[-1][1].startswith("train") and "loss=0.5" in seen[-1][1]


def test_gmm_confidence_ranks_exactly_like_the_score():
    # a wide noisy component makes the raw posterior fall again in the far
    # clean tail; the monotone envelope must not create ties there
    rng = np.random.default_rng(4)
    scores = np.concatenate([rng.normal(0.8, 0.03, 400), rng.normal(0.3, 0.3, 600)])
    prob, fit = clean_probability(scores)
    assert fit.stds[0] < fit.stds[1]
    ranked = prob[np.argsort(scores)]
    steps = np.diff(ranked)
    assert np.all(steps >= 0)
    # strictly increasing wherever float64 can still tell values apart from 1
    assert np.all(steps[ranked[1:] < 1.0 - 1e-12] > 0)
    # same AUROC as the raw score for any labelling
    labels = rng.random(1000) < 0.5
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels, prob) == pytest.approx(roc_auc_score(labels, scores))
    # nothing underflows to exactly 0: the least confident stay ordered
    far = clean_probability(np.concatenate([scores, [-5.0, -6.0]]))[0]
    assert far[-1] > 0 and far[-2] > far[-1]
