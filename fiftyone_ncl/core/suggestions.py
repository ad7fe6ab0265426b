"""Suggested corrections: for an image whose caption looks wrong, the caption
elsewhere in the collection that matches it best."""
import numpy as np


def suggestion_candidates(noisy, max_candidates=None, seed=0):
    """Which captions to search for suggestions; None means all of them.

    Flagged captions are kept first: when captions were swapped, the right
    caption for a flagged image usually sits on another flagged pair. Beyond
    ``max_candidates`` captions, the flagged ones (a seeded random subset if
    they alone are too many) plus a seeded random subset of the others fill
    the budget, which bounds the search on very large collections.
    """
    noisy = np.asarray(noisy, dtype=bool)
    if max_candidates is None or len(noisy) <= max_candidates:
        return None
    rng = np.random.default_rng(seed)
    flagged, clean = np.flatnonzero(noisy), np.flatnonzero(~noisy)
    if len(flagged) > max_candidates:
        flagged = rng.choice(flagged, int(max_candidates), replace=False)
    room = int(max_candidates) - len(flagged)
    mask = np.zeros(len(noisy), dtype=bool)
    mask[flagged] = True
    mask[rng.choice(clean, min(room, len(clean)), replace=False)] = True
    return mask


def suggest_captions(
    image_embeddings,
    text_embeddings,
    image_index,
    query_images,
    candidates=None,
    chunk_size=1024,
):
    """Best-matching caption for each query image, never one of its own.

    Args:
        image_embeddings: (N, d) L2-normalised images
        text_embeddings: (P, d) L2-normalised captions
        image_index: (P,) image row of each caption
        query_images: (Q,) image rows to find captions for
        candidates (None): optional (P,) bool mask of the captions that may
            be suggested (see :func:`suggestion_candidates`). Default: all
        chunk_size (1024): query images scored at once

    Returns:
        ``(caption_index, score)``: (Q,) int64 row of the suggested caption
        (-1 where no candidate exists) and (Q,) float32 its similarity
    """
    query_images = np.asarray(query_images, dtype=np.int64)
    image_index = np.asarray(image_index, dtype=np.int64)
    pool = np.arange(len(image_index)) if candidates is None else np.flatnonzero(candidates)

    best = np.full(len(query_images), -1, dtype=np.int64)
    best_score = np.full(len(query_images), np.nan, dtype=np.float32)
    if len(pool) == 0 or len(query_images) == 0:
        return best, best_score

    cand_txt = np.ascontiguousarray(text_embeddings[pool], dtype=np.float32)
    cand_owner = image_index[pool]
    for start in range(0, len(query_images), chunk_size):
        q = query_images[start : start + chunk_size]
        sims = image_embeddings[q].astype(np.float32) @ cand_txt.T
        sims[cand_owner[None, :] == q[:, None]] = -np.inf
        arg = sims.argmax(axis=1)
        score = sims[np.arange(len(q)), arg]
        ok = np.isfinite(score)
        best[start : start + len(q)] = np.where(ok, pool[arg], -1)
        best_score[start : start + len(q)] = np.where(ok, score, np.nan)
    return best, best_score
