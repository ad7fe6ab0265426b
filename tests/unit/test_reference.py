"""Per-pair scores against fixed reference negatives."""
import numpy as np
import pytest

from fiftyone_ncl.core.reference import reference_scores


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


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
