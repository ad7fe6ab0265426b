"""Detection and retrieval metrics.

Detection treats "the pair is noisy" as the positive class and ranks pairs
from least to most confident. Retrieval follows the image-text matching literature:
R@K in both directions and their sum (rSum).
"""
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def detection_metrics(noisy, confidence, threshold=None, flags=None):
    """Measures how well ``confidence`` separates noisy from clean pairs.

    Args:
        noisy: boolean array, True where the pair is known to be mismatched
        confidence: array of clean probabilities (higher = more likely clean)
        threshold (None): if given, also report precision / recall / F1 of the
            decision ``confidence < threshold``
        flags (None): a decision already made (True = flagged): report its
            precision / recall / F1 instead

    Returns:
        a dict with ``auroc``, ``ap``, ``precision_at_k`` (k = number of noisy
        pairs), ``k``, ``noise_rate``, the threshold-free F1 scores of
        LEMoN's protocol: ``f1_at_rate`` (flagging as many pairs as are
        noisy, LEMoN's "F1 at the true prevalence"; it equals
        ``precision_at_k``) and ``best_f1`` (the best F1 over every cut, an
        upper bound of LEMoN's F1 at a threshold chosen on labelled
        validation data), and, with a threshold, ``precision``, ``recall``,
        ``f1``, ``flagged`` of the decision. AUROC and AP are None when only
        one class is present.
    """
    noisy = np.asarray(noisy, dtype=bool)
    confidence = np.asarray(confidence, dtype=np.float64)
    if noisy.shape != confidence.shape:
        raise ValueError(
            "noisy has shape %s but confidence has %s" % (noisy.shape, confidence.shape)
        )
    # rank by -confidence, the same order as 1 - confidence without its
    # rounding: a calibrated posterior of 1e-30 and one of 1e-200 are two
    # distinct doubles, but 1 - either is exactly 1.0, which would tie every
    # pair deep in the noisy tail
    score = -confidence

    k = int(noisy.sum())
    out = {"n": int(noisy.size), "k": k, "noise_rate": float(noisy.mean()) if noisy.size else 0.0}
    both = 0 < k < noisy.size
    out["auroc"] = float(roc_auc_score(noisy, score)) if both else None
    out["ap"] = float(average_precision_score(noisy, score)) if both else None
    if k > 0:
        # stable sort so ties keep a deterministic order
        order = np.argsort(-score, kind="stable")
        out["precision_at_k"] = float(noisy[order[:k]].mean())
        # F1 of flagging the j least confident pairs, j = 1..n: 2 tp / (j + k)
        tp = np.cumsum(noisy[order])
        out["best_f1"] = float(np.max(2.0 * tp / (np.arange(1, noisy.size + 1) + k)))
    else:
        out["precision_at_k"] = None
        out["best_f1"] = None
    out["f1_at_rate"] = out["precision_at_k"]

    if threshold is not None or flags is not None:
        flagged = confidence < threshold if flags is None else np.asarray(flags, dtype=bool)
        if flagged.shape != noisy.shape:
            raise ValueError("flags has shape %s but noisy has %s" % (flagged.shape, noisy.shape))
        tp = int((flagged & noisy).sum())
        n_flagged = int(flagged.sum())
        precision = tp / n_flagged if n_flagged else 0.0
        recall = tp / k if k else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.update(precision=precision, recall=recall, f1=f1, flagged=n_flagged)

    return out


def _ranks_of_hits(sims, hit):
    """For each row, the 0-based rank of the best-ranked column where ``hit``."""
    order = np.argsort(-sims, axis=1, kind="stable")
    hits_sorted = np.take_along_axis(hit, order, axis=1)
    has = hits_sorted.any(axis=1)
    ranks = np.where(has, hits_sorted.argmax(axis=1), sims.shape[1])
    return ranks


def retrieval_metrics(
    image_embeddings,
    text_embeddings,
    image_index,
    image_classes=None,
    text_classes=None,
    ks=(1, 5, 10),
    chunk_size=1024,
):
    """Image-to-text and text-to-image recall at K, and rSum.

    By default a hit is the ground-truth partner: for image i any caption with
    ``image_index == i``; for a caption its own image. With ``image_classes``
    and ``text_classes`` a hit is any item of the same class (the protocol for
    class-templated captions, where two sneakers share "a photo of a sneaker").

    Args:
        image_embeddings: (N, d) L2-normalised image embeddings
        text_embeddings: (P, d) L2-normalised caption embeddings
        image_index: (P,) image row of each caption
        image_classes (None): optional (N,) class per image
        text_classes (None): optional (P,) class per caption
        ks ((1, 5, 10)): the K values
        chunk_size (1024): rows scored at once, to bound memory

    Returns:
        a dict with ``i2t_r{k}``, ``t2i_r{k}`` (percent) and ``rsum``
    """
    img = np.asarray(image_embeddings, dtype=np.float32)
    txt = np.asarray(text_embeddings, dtype=np.float32)
    image_index = np.asarray(image_index)
    by_class = image_classes is not None and text_classes is not None
    if by_class:
        image_classes = np.asarray(image_classes)
        text_classes = np.asarray(text_classes)

    i2t_ranks = []
    for start in range(0, len(img), chunk_size):
        rows = np.arange(start, min(start + chunk_size, len(img)))
        sims = img[rows] @ txt.T
        if by_class:
            hit = image_classes[rows][:, None] == text_classes[None, :]
        else:
            hit = rows[:, None] == image_index[None, :]
        i2t_ranks.append(_ranks_of_hits(sims, hit))
    i2t_ranks = np.concatenate(i2t_ranks) if i2t_ranks else np.zeros(0)

    t2i_ranks = []
    for start in range(0, len(txt), chunk_size):
        rows = np.arange(start, min(start + chunk_size, len(txt)))
        sims = txt[rows] @ img.T
        if by_class:
            hit = text_classes[rows][:, None] == image_classes[None, :]
        else:
            hit = image_index[rows][:, None] == np.arange(len(img))[None, :]
        t2i_ranks.append(_ranks_of_hits(sims, hit))
    t2i_ranks = np.concatenate(t2i_ranks) if t2i_ranks else np.zeros(0)

    out = {}
    for k in ks:
        out["i2t_r%d" % k] = float(100.0 * np.mean(i2t_ranks < k))
        out["t2i_r%d" % k] = float(100.0 * np.mean(t2i_ranks < k))
    out["rsum"] = float(sum(out["i2t_r%d" % k] + out["t2i_r%d" % k] for k in ks))
    return out
