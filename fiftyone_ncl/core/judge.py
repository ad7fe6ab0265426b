"""From a fitted method's scores to a decision: the statistic it ranks pairs
by, the same statistic for pairs known to be mismatched (a null), the
estimated mismatch rate and the flags (:mod:`fiftyone_ncl.core.decision`).

The null: decoy pairs (an image with the caption of a pair of another image)
are appended to the collection and the fitted method scores the whole, so
the real pairs and the decoys are judged in the same context (the same
reference negatives, the same neighbourhoods); the decoys' statistic is the
null and the real pairs' statistic in that scoring is what is decided on.
"""
import contextlib
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from fiftyone_ncl.core.decision import decide, estimate_mismatch_rate

MAX_DECOYS = 100_000
MIN_DECOYS = 1000  # a null smaller than this barely shows its lower tail


@dataclass
class Judgement:
    """What the decision layer says about a scored collection.

    Attributes:
        statistic: (P,) the ranking statistic of the real pairs (higher =
            matched), scored beside the decoys
        null: (M,) the statistic of the decoy pairs
        rate: the :class:`~fiftyone_ncl.core.decision.MismatchRate`
        decision: the :class:`~fiftyone_ncl.core.decision.Decision`
        info: how the null was made
    """

    statistic: np.ndarray
    null: np.ndarray
    rate: object
    decision: object
    info: dict = field(default_factory=dict)


def decoy_pairs(image_index, n, seed=0):
    """``(decoy_image_index, caption_rows)``: ``n`` pairs of an image with the
    caption of a pair of another image, drawn at random (seeded)."""
    image_index = np.asarray(image_index)
    rng = np.random.default_rng(seed)
    p = len(image_index)
    captions = rng.integers(p, size=2 * n + 16)
    images = image_index[rng.integers(p, size=2 * n + 16)]
    ok = image_index[captions] != images
    return images[ok][:n], captions[ok][:n]


@contextlib.contextmanager
def quiet_options(method, **changes):
    """Temporarily sets config options the method has (e.g. diagnostics off)."""
    keep = method.config
    known = {k: v for k, v in changes.items() if hasattr(keep, k)}
    method.config = dataclasses.replace(keep, **known) if known else keep
    try:
        yield
    finally:
        method.config = keep


def statistic_with_null(method, data, n_decoys=None, seed=0):
    """The statistic of every real pair and of decoy pairs, both scored by
    the fitted ``method`` in one pass over the collection plus the decoys.

    Returns:
        ``(statistic (P,), null (M,), info)``
    """
    n = min(max(data.n_pairs, MIN_DECOYS), MAX_DECOYS) if n_decoys is None else max(2, int(n_decoys))
    images, captions = decoy_pairs(data.image_index, n, seed=seed)
    augmented = data.replace(
        texts=np.concatenate([data.texts, data.texts[captions]]),
        image_index=np.concatenate([data.image_index, images]),
    )
    with quiet_options(method, mi_diagnostics=False):
        scores = method.score(augmented, progress=False)
    stat = method.statistic(scores)
    info = {"null": "decoys", "n_decoys": int(len(images)), "seed": int(seed)}
    return stat[: data.n_pairs], stat[data.n_pairs :], info


def judge(method, data, mode="probability", level=None, marked_right=None, marked_wrong=None, seed=0):
    """Statistic, null, mismatch rate and decision for a fitted method.

    Args:
        method: a fitted :class:`~fiftyone_ncl.core.methods.base.CorrespondenceMethod`
        data: the :class:`~fiftyone_ncl.core.data.PairData` it scores
        mode, level, marked_right, marked_wrong: see
            :func:`fiftyone_ncl.core.decision.decide`
        seed (0): seed of the decoys and of the rate's bootstrap

    Returns:
        a :class:`Judgement`
    """
    statistic, null, info = statistic_with_null(method, data, seed=seed)
    rate = estimate_mismatch_rate(statistic, null, seed=seed)
    decision = decide(statistic, mode, level, null_score=null, marked_right=marked_right,
                      marked_wrong=marked_wrong, rate=rate, seed=seed)
    return Judgement(statistic, null, rate, decision, info)


def judge_cross_fitted(build, data, folds=5, mode="probability", level=None, marked_right=None,
                       marked_wrong=None, seed=0, progress=None):
    """:func:`judge` on out-of-sample statistics (cross-fitting).

    The images are split into ``folds`` folds (all captions of an image in
    one); a fresh method is fitted on the pairs of the other folds and scores
    the held-out fold's pairs beside decoys of that fold. A trained method
    partly memorises the mismatched pairs it trained on, so in-sample they
    score above decoys it never saw and the rate reads low; held out, the
    pairs and the decoys are equally unseen (cleanlab's rule for its
    thresholds). Each fold's statistic and null are put on one scale by the
    fold's null (median and IQR), since each fold has its own model.

    Args:
        build: ``build()`` -> a fresh, unfitted method
        data: the :class:`~fiftyone_ncl.core.data.PairData` (array images)
        folds (5): number of folds (>= 2)
        mode, level, marked_right, marked_wrong: see
            :func:`fiftyone_ncl.core.decision.decide`
        seed (0): seed of the folds, decoys and bootstrap
        progress (None): ``fn(fraction, label)``

    Returns:
        a :class:`Judgement` (``info["folds"]`` says how it was made)
    """
    folds = int(folds)
    image_rows = np.unique(data.image_index)
    if folds < 2 or folds > len(image_rows):
        raise ValueError("folds must be an integer from 2 to the number of images (%d), got %r"
                         % (len(image_rows), folds))
    rng = np.random.default_rng(seed)
    fold_of_image = np.empty(int(image_rows.max()) + 1, dtype=np.int64)
    fold_of_image[image_rows] = rng.permutation(len(image_rows)) % folds
    fold = fold_of_image[data.image_index]
    statistic = np.empty(data.n_pairs)
    nulls = []
    for k in range(folds):
        if callable(progress):  # True / False (bars) are for the methods' own fits
            progress(k / folds, "fold %d of %d" % (k + 1, folds))
        held_out = np.flatnonzero(fold == k)
        method = build()
        method.fit(data.select_pairs(np.flatnonzero(fold != k)), progress=False)
        s, z, _ = statistic_with_null(method, data.select_pairs(held_out), seed=seed + k)
        loc = np.median(z)
        scale = np.subtract(*np.percentile(z, [75, 25])) or np.std(z) or 1.0
        statistic[held_out] = (s - loc) / scale
        nulls.append((z - loc) / scale)
    null = np.concatenate(nulls)
    rate = estimate_mismatch_rate(statistic, null, seed=seed)
    decision = decide(statistic, mode, level, null_score=null, marked_right=marked_right,
                      marked_wrong=marked_wrong, rate=rate, seed=seed)
    return Judgement(statistic, null, rate, decision, {"null": "decoys", "folds": folds, "seed": int(seed),
                                                      "n_decoys": int(len(null))})
