"""Suggested corrections."""
import numpy as np
import pytest

from fiftyone_ncl.core.suggestions import suggest_captions, suggestion_candidates


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


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
