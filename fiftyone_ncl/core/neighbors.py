"""Training-free multimodal-neighbour score (LEMoN-style, hubness-corrected).

A pair (image ``x``, caption ``y``) in one joint embedding space gets four
distances, the first and last two as in LEMoN (Zhang et al., ICML 2025):

* ``cross``: the pair's own distance ``d(x, y)``;
* ``csls``: the same distance corrected for hubness (CSLS, Lample et al.,
  ICLR 2018): ``d(x, y)`` minus the mean of ``x``'s distance to its ``k``
  nearest captions and ``y``'s to its ``k`` nearest images. An image or
  caption that sits close to everything (a hub) no longer looks matched to
  everything; one in a sparse region no longer looks mismatched;
* ``image_side``: how far ``y`` is from the captions of ``x``'s ``k`` nearest
  *other* images (a caption unlike what similar photos are called);
* ``text_side``: how far ``x`` is from the images of ``y``'s ``k`` nearest
  captions, captions of ``x`` itself excluded (a photo unlike the photos
  that similar captions describe).

Neighbours are weighted as in LEMoN: by their closeness to the query
(``exp(-tau_neighbor * d)``) and by how well their own pair matches
(``exp(-tau_pair * d(x_j, y_j))``, so other mismatched pairs count less).
Unlike LEMoN the weighted sum is a weighted *mean* (weights divided by their
sum), so the terms stay in distance units whatever the taus, and the
distances are combined after a robust per-collection standardisation
(median / IQR), which makes one set of label-free weights carry over between
encoders whose distance ranges differ (CLIP's cross-modal cosine lives in a
narrow band, a text encoder's in a wide one).

The label-free default scores with ``cross + csls`` (equal weights on the
standardised distances). On the benchmark of the LEMoN protocol (40 %
random and category swaps, coco-mini stand-in and aligned synthetic data)
``csls`` alone never fell below the plain cosine and gained up to +0.07
AUROC, but on noun swaps (one object word of the caption replaced, the
subtlest mismatch of the protocol) it lost 0.07 AUROC to the cosine on the
coco-mini stand-in: an edited caption sits close to many images of the new
noun, and the hubness correction reads that as "close to everything".
``cross + csls`` keeps most of the gain (+0.004 to +0.04 over the cosine on
random and category swaps) and loses 0.014 there. Adding LEMoN's two
neighbour terms with a fixed weight cost AUROC on category swaps in four
problems of five (a swapped caption comes from the same neighbourhood, so
the terms mostly measure how typical a caption is). They pay off when
labels say how to weigh them: :func:`fit_neighbor_weights`.

Everything is numpy / scikit-learn; memory is bounded by chunking.
"""
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix

from fiftyone_ncl.core.vectors import normalize_rows

COMPONENTS = ("cross", "csls", "image_side", "text_side")

# Label-free defaults, chosen on the benchmark of the LEMoN protocol (40 %
# random, category and noun swaps; coco-mini stand-in and aligned synthetic data),
# see the module docstring. Weights apply to standardised distances, in the
# order of COMPONENTS. k = 5 beat 10 and 20 for csls on the small coco-mini
# sets and tied on the synthetic ones; the taus are LEMoN's own label-free
# values (its tau_1 = 0.1 on a cosine is a near-constant factor, hence 0).
DEFAULT_K = 5
DEFAULT_WEIGHTS = (1.0, 1.0, 0.0, 0.0)
DEFAULT_TAU_NEIGHBOR = 0.0
DEFAULT_TAU_PAIR = 5.0

METRICS = ("cosine", "euclidean")
BACKENDS = ("auto", "torch", "exact", "sklearn")
# "auto" searches with torch (matrix products and top-k, multi-threaded, on
# the GPU when given one); in low dimension with more than this many query x
# reference products it hands the search to scikit-learn's trees instead
_EXACT_MAX = 2e9
_TREE_MAX_DIM = 16
_MEMORY_BYTES = 256 * 2**20


@dataclass
class NeighborWeights:
    """How the four distances combine into a score.

    ``score = -(intercept + sum_c weights[c] * (components[:, c] - center[c]) / scale[c])``:
    higher = more likely matched. ``center``/``scale`` None means those of
    the collection being scored (robust standardisation).

    Attributes:
        weights: (4,) weight of each of :data:`COMPONENTS`
        intercept: offset (only meaningful when fitted: then
            ``sigmoid(score)`` is the fitted probability that the pair matches)
        center: optional (4,) centers the weights were fitted with
        scale: optional (4,) scales the weights were fitted with
        info: how they were obtained
    """

    weights: np.ndarray
    intercept: float = 0.0
    center: np.ndarray = None
    scale: np.ndarray = None
    info: dict = field(default_factory=dict)

    def score(self, components):
        """(P,) score of (P, 4) components, higher = more likely matched."""
        components = np.asarray(components, dtype=np.float64)
        center, scale = robust_standardization(components)
        center = center if self.center is None else np.asarray(self.center, dtype=np.float64)
        scale = scale if self.scale is None else np.asarray(self.scale, dtype=np.float64)
        z = (components - center) / scale
        return -(self.intercept + z @ np.asarray(self.weights, dtype=np.float64))

    def probability(self, components):
        """(P,) fitted probability that each pair matches (fitted weights only)."""
        return 1.0 / (1.0 + np.exp(-self.score(components)))


@dataclass
class NeighborScores:
    """Result of :func:`neighbor_scores`.

    Attributes:
        score: (P,) higher = more likely matched
        components: (P, 4) distances ``cross``, ``csls``, ``image_side``,
            ``text_side`` (see :data:`COMPONENTS`); NaN where a pair has no
            usable neighbour (the score then counts that term as typical)
        weights: the :class:`NeighborWeights` used
        image_neighbors: (N, k) nearest other images of each image (-1: none)
        text_neighbors: (P, k) nearest captions of each caption, captions of
            its own image excluded (-1: none)
        info: k, metric, taus, backend
    """

    score: np.ndarray
    components: np.ndarray
    weights: NeighborWeights
    image_neighbors: np.ndarray
    text_neighbors: np.ndarray
    info: dict = field(default_factory=dict)

    def component(self, name):
        """One component by name (one of :data:`COMPONENTS`)."""
        return self.components[:, COMPONENTS.index(name)]


def robust_standardization(components):
    """Per-column median and IQR/1.349 (a standard deviation for Gaussian
    data, unmoved by a minority of mismatches), ignoring NaN."""
    components = np.asarray(components, dtype=np.float64)
    with warnings.catch_warnings():  # an all-NaN column (no neighbours anywhere) is handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        center = np.nanmedian(components, axis=0)
        q75, q25 = np.nanpercentile(components, [75, 25], axis=0)
    scale = (q75 - q25) / 1.349
    # a constant column (e.g. no neighbours at all) must not divide by zero
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
    center = np.where(np.isfinite(center), center, 0.0)
    return center, scale


def _as_weights(weights):
    if weights is None:
        return NeighborWeights(np.asarray(DEFAULT_WEIGHTS, dtype=np.float64), info={"source": "default"})
    if isinstance(weights, NeighborWeights):
        return weights
    if isinstance(weights, dict):
        weights = [weights.get(c, 0.0) for c in COMPONENTS]
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(COMPONENTS),):
        raise ValueError(
            "weights must give %d values (%s), got shape %s" % (len(COMPONENTS), ", ".join(COMPONENTS), weights.shape)
        )
    return NeighborWeights(weights, info={"source": "given"})


def nearest_neighbors(
    queries,
    reference,
    k,
    query_groups=None,
    reference_groups=None,
    backend="auto",
    memory_bytes=_MEMORY_BYTES,
    device=None,
):
    """The ``k`` most cosine-similar reference rows of each query row.

    A reference row whose group equals the query's group is never returned
    (an image's own row; the captions of a caption's own image).

    Args:
        queries: (Q, d) L2-normalised rows
        reference: (R, d) L2-normalised rows
        k: neighbours per query
        query_groups (None), reference_groups (None): optional (Q,) and (R,)
            int groups; equal groups are excluded
        backend ("auto"): ``"torch"`` (exact: chunked matrix products and
            top-k in torch, on ``device``), ``"exact"`` (the same in numpy),
            ``"sklearn"`` (``NearestNeighbors``, which uses trees in low
            dimension) or ``"auto"`` (torch, except sklearn's trees for
            large low-dimensional searches)
        memory_bytes (256 MiB): bound on the similarity block of the exact paths
        device (None): torch device of the ``"torch"`` path (None: CPU)

    Returns:
        ``(indices, similarities)``: (Q, k) int64 reference rows, nearest
        first, -1 where fewer than k exist; (Q, k) float32 cosines (-inf there)
    """
    if backend not in BACKENDS:
        raise ValueError("backend must be one of %s, got %r" % (", ".join(BACKENDS), backend))
    q, r = len(queries), len(reference)
    k = int(k)
    idx = np.full((q, k), -1, dtype=np.int64)
    sim = np.full((q, k), -np.inf, dtype=np.float32)
    if q == 0 or r == 0 or k <= 0:
        return idx, sim
    grouped = query_groups is not None and reference_groups is not None
    if grouped:
        query_groups = np.asarray(query_groups, dtype=np.int64)
        reference_groups = np.asarray(reference_groups, dtype=np.int64)
    if backend == "auto":
        low_dim = np.shape(reference)[1] <= _TREE_MAX_DIM
        backend = "sklearn" if low_dim and float(q) * r > _EXACT_MAX else "torch"
    if backend == "torch":
        return _torch_search(queries, reference, k, query_groups, reference_groups, grouped, memory_bytes, idx, sim,
                             device)
    if backend == "exact":
        return _exact_search(queries, reference, k, query_groups, reference_groups, grouped, memory_bytes, idx, sim)
    return _sklearn_search(queries, reference, k, query_groups, reference_groups, grouped, idx, sim)


def _exact_search(queries, reference, k, qg, rg, grouped, memory_bytes, idx, sim):
    ref = np.ascontiguousarray(reference, dtype=np.float32)
    r = len(ref)
    kk = min(k, r)
    chunk = max(1, int(memory_bytes // (4 * r * 2)))  # the block and its mask
    for start in range(0, len(queries), chunk):
        block = np.asarray(queries[start : start + chunk], dtype=np.float32) @ ref.T
        if grouped:
            block[qg[start : start + chunk, None] == rg[None, :]] = -np.inf
        # partition for the largest in place of negating (a copy of the block)
        top = np.argpartition(block, r - kk, axis=1)[:, r - kk :] if kk < r else np.tile(np.arange(r), (len(block), 1))
        top_sim = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        top, top_sim = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sim, order, axis=1)
        top[~np.isfinite(top_sim)] = -1
        idx[start : start + len(block), :kk] = top
        sim[start : start + len(block), :kk] = top_sim
    return idx, sim


def _max_shared(qg, rg):
    """At most how many reference rows share one query's group."""
    if not len(rg):
        return 0
    common = np.intersect1d(np.unique(qg), rg)
    if not len(common):
        return 0
    return int(np.unique(rg[np.isin(rg, common)], return_counts=True)[1].max())


def _torch_search(queries, reference, k, qg, rg, grouped, memory_bytes, idx, sim, device):
    """Exact search with torch: each block of queries against every
    reference row, the top ``k`` (plus as many as can share a query's group,
    removed after) kept by ``topk``."""
    import torch

    device = torch.device(device or "cpu")
    r = len(reference)
    extra = _max_shared(qg, rg) if grouped else 0
    kk = min(k + extra, r)
    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32)).to(device)
    chunk = max(1, int(memory_bytes // (4 * r * 2)))
    for start in range(0, len(queries), chunk):
        qb = torch.from_numpy(np.ascontiguousarray(queries[start : start + chunk], dtype=np.float32)).to(device)
        top_sim, top = torch.topk(qb @ ref.T, kk, dim=1, largest=True, sorted=True)
        top, top_sim = top.cpu().numpy().astype(np.int64), top_sim.cpu().numpy()
        rows = np.arange(start, start + len(top))
        if not grouped:
            idx[rows, :kk] = top[:, :k]
            sim[rows, :kk] = top_sim[:, :k]
            continue
        # keep the first k candidates outside the query's group, in order
        ok = rg[top] != qg[rows, None]
        rank = np.cumsum(ok, axis=1) - 1
        keep = ok & (rank < k)
        i, j = np.nonzero(keep)
        idx[rows[i], rank[i, j]] = top[i, j]
        sim[rows[i], rank[i, j]] = top_sim[i, j]
    return idx, sim


def _sklearn_search(queries, reference, k, qg, rg, grouped, idx, sim):
    from sklearn.neighbors import NearestNeighbors

    # on unit vectors the euclidean order is the cosine order
    extra = 0
    if grouped:
        # at most this many reference rows share a query's group
        extra = int(np.bincount(rg - rg.min()).max()) if len(rg) else 0
    n = min(len(reference), k + extra)
    nn = NearestNeighbors(n_neighbors=n).fit(np.asarray(reference, dtype=np.float32))
    step = 8192
    for start in range(0, len(queries), step):
        qb = np.asarray(queries[start : start + step], dtype=np.float32)
        dist, cand = nn.kneighbors(qb)
        cos = (1.0 - 0.5 * dist.astype(np.float64) ** 2).astype(np.float32)
        ok = np.ones_like(cand, dtype=bool)
        if grouped:
            ok = rg[cand] != qg[start : start + len(qb), None]
        # keep the first k allowed candidates of each row, in order
        rank = np.cumsum(ok, axis=1) - 1
        keep = ok & (rank < k)
        rows, cols = np.nonzero(keep)
        idx[start + rows, rank[rows, cols]] = cand[rows, cols]
        sim[start + rows, rank[rows, cols]] = cos[rows, cols]
    return idx, sim


def neighbor_scores(
    image_embeddings,
    text_embeddings,
    image_index,
    k=DEFAULT_K,
    weights=None,
    metric="cosine",
    tau_neighbor=DEFAULT_TAU_NEIGHBOR,
    tau_pair=DEFAULT_TAU_PAIR,
    backend="auto",
    max_reference=None,
    seed=0,
    memory_bytes=_MEMORY_BYTES,
    terms=None,
    device=None,
):
    """Scores every pair with its own distance and its multimodal neighbours.

    The embeddings must already share one space (one CLIP-like encoder, or a
    learned joint space); both sides are L2-normalised here.

    Args:
        image_embeddings: (N, d) images
        text_embeddings: (P, d) captions
        image_index: (P,) image row of each caption (repeats for several
            captions per image)
        k (5): neighbours per side
        weights (None): a :class:`NeighborWeights` (e.g. from
            :func:`fit_neighbor_weights`), 4 weights for the standardised
            :data:`COMPONENTS` or a dict name -> weight; None = label-free
            defaults :data:`DEFAULT_WEIGHTS` (``cross + csls``)
        metric ("cosine"): ``"cosine"`` (1 - cos) or ``"euclidean"`` (squared
            L2 of the normalised vectors, = 2 (1 - cos), as in LEMoN)
        tau_neighbor (0.0): neighbour weight ``exp(-tau_neighbor * d(query,
            neighbour))``
        tau_pair (5.0): neighbour weight ``exp(-tau_pair * d(neighbour's image,
            neighbour's caption))``: other mismatched pairs count less
        backend ("auto"): neighbour search, see :func:`nearest_neighbors`
        max_reference (None): search neighbours among at most this many
            seeded random images and as many captions (LEMoN caps its
            reference set at 50k); None = all
        seed (0): seed of that subset
        memory_bytes (256 MiB): bound on the working blocks
        terms (None): the :data:`COMPONENTS` to compute; the others are NaN
            (a NaN term counts as typical, so it adds nothing to the score).
            None: every one; the label-free default needs only ``("cross",
            "csls")``, which halves the neighbour searches
        device (None): torch device of the neighbour searches (None: CPU)

    Returns:
        a :class:`NeighborScores`
    """
    if metric not in METRICS:
        raise ValueError("metric must be one of %s, got %r" % (", ".join(METRICS), metric))
    image_index = np.asarray(image_index, dtype=np.int64)
    img = normalize_rows(image_embeddings, "image embeddings")
    txt = normalize_rows(text_embeddings, "caption embeddings")
    if img.shape[1] != txt.shape[1]:
        raise ValueError(
            "images (%d-d) and captions (%d-d) must be in one space" % (img.shape[1], txt.shape[1])
        )
    if len(image_index) != len(txt):
        raise ValueError("%d captions but %d entries in image_index" % (len(txt), len(image_index)))
    if len(image_index) and (image_index.min() < 0 or image_index.max() >= len(img)):
        raise ValueError("image_index points outside the %d images" % len(img))
    k = int(k)
    if k < 1:
        raise ValueError("k must be >= 1, got %r" % k)
    terms = COMPONENTS if terms is None else tuple(terms)
    unknown = sorted(set(terms) - set(COMPONENTS))
    if unknown:
        raise ValueError("unknown terms %s; the terms are %s" % (", ".join(unknown), ", ".join(COMPONENTS)))
    search = {"backend": backend, "memory_bytes": memory_bytes, "device": device}
    n, p = len(img), len(txt)
    # on unit vectors squared L2 is 2 (1 - cos): one code path, a unit factor
    unit = 2.0 if metric == "euclidean" else 1.0
    rows_chunk = max(1, int(memory_bytes // (4 * max(k, 1) * img.shape[1] * 2)))

    # the pair's own distance, also every neighbour's "pair quality"
    cross = np.empty(p, dtype=np.float64)
    for s in range(0, p, rows_chunk):
        cross[s : s + rows_chunk] = unit * (
            1.0 - np.einsum("ij,ij->i", txt[s : s + rows_chunk], img[image_index[s : s + rows_chunk]])
        )
    pair_weight = np.exp(-tau_pair * cross)

    # reference sets: images that have captions (an image without one can
    # not vouch for a caption), optionally a seeded subset (LEMoN's cap)
    rng = np.random.default_rng(seed)
    ref_images = np.flatnonzero(np.bincount(image_index, minlength=n) > 0)
    ref_captions = np.arange(p)
    if max_reference is not None:
        if len(ref_images) > max_reference:
            ref_images = np.sort(rng.choice(ref_images, int(max_reference), replace=False))
        if p > max_reference:
            ref_captions = np.sort(rng.choice(p, int(max_reference), replace=False))

    # image side: the k nearest other images, each standing for the weighted
    # mean of its captions. Cosine distance is linear in the caption vector,
    # so per image the sums U_j = sum w_q and V_j = sum w_q y_q are enough:
    # sum_q w_q d(y, y_q) = unit * (U_j - y . V_j)
    image_side = np.full(p, np.nan)
    img_nbr = np.full((n, k), -1, dtype=np.int64)
    if "image_side" in terms:
        img_nbr, image_side = _image_side(img, txt, image_index, ref_images, pair_weight, k, unit, tau_neighbor,
                                          rows_chunk, search)

    # text side: the k nearest captions of other images, each standing for
    # its image; weighted by closeness and by that caption's own pair
    text_side = np.full(p, np.nan)
    txt_nbr = np.full((p, k), -1, dtype=np.int64)
    if "text_side" in terms:
        txt_nbr, text_side = _text_side(img, txt, image_index, ref_captions, pair_weight, k, unit, tau_neighbor,
                                        rows_chunk, search)

    # hubness (CSLS): how close x and y sit to the other modality in general,
    # from the k most similar captions of each image and images of each caption
    csls = np.full(p, np.nan)
    if "csls" in terms:
        _, img_to_txt = nearest_neighbors(img, txt[ref_captions], k, **search)
        all_images = np.arange(n) if max_reference is None or n <= max_reference else ref_images
        _, txt_to_img = nearest_neighbors(txt, img[all_images], k, **search)
        radius_img = unit * (1.0 - _finite_mean(img_to_txt))
        radius_txt = unit * (1.0 - _finite_mean(txt_to_img))
        csls = cross - 0.5 * (radius_img[image_index] + radius_txt)
    if "cross" not in terms:
        cross = np.full(p, np.nan)

    components = np.stack([cross, csls, image_side, text_side], axis=1)
    nw = _as_weights(weights)
    score = _score_with_missing(nw, components)
    info = {
        "k": k,
        "metric": metric,
        "tau_neighbor": float(tau_neighbor),
        "tau_pair": float(tau_pair),
        "backend": backend,
        "max_reference": max_reference,
        "terms": list(terms),
        "weights": [float(x) for x in nw.weights],
        "weights_source": nw.info.get("source", "given"),
    }
    return NeighborScores(score, components, nw, img_nbr, txt_nbr, info)


def _image_side(img, txt, image_index, ref_images, pair_weight, k, unit, tau_neighbor, rows_chunk, search):
    """LEMoN's image-side term: (N, k) image neighbours and (P,) distances."""
    n, p = len(img), len(txt)
    img_nbr, img_sim = nearest_neighbors(img, img[ref_images], k, np.arange(n), ref_images, **search)
    img_nbr = np.where(img_nbr >= 0, ref_images[np.maximum(img_nbr, 0)], -1)
    u_sum = np.bincount(image_index, weights=pair_weight, minlength=n)
    # V = A @ Y with A[j, q] = w_q where caption q describes image j (sparse)
    owner = csr_matrix((pair_weight.astype(np.float32), (image_index, np.arange(p))), shape=(n, p))
    v_sum = np.asarray(owner @ txt, dtype=np.float32)
    image_side = np.full(p, np.nan)
    for s in range(0, p, rows_chunk):
        rows = np.arange(s, min(s + rows_chunk, p))
        nb = img_nbr[image_index[rows]]  # (c, k)
        valid = nb >= 0
        nbc = np.maximum(nb, 0)
        # a missing neighbour (-inf similarity) gets weight 0, not exp(-0 * inf)
        a = np.where(valid, np.exp(-tau_neighbor * unit * (1.0 - np.where(valid, img_sim[image_index[rows]], 1.0))), 0.0)
        u = u_sum[nbc] * a
        dots = np.einsum("cd,ckd->ck", txt[rows], v_sum[nbc]).astype(np.float64)
        num = (a * unit * (u_sum[nbc] - dots)).sum(axis=1)
        den = u.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            image_side[rows] = np.where(den > 0, num / den, np.nan)
    return img_nbr, image_side


def _text_side(img, txt, image_index, ref_captions, pair_weight, k, unit, tau_neighbor, rows_chunk, search):
    """LEMoN's text-side term: (P, k) caption neighbours and (P,) distances."""
    p = len(txt)
    txt_nbr, txt_sim = nearest_neighbors(txt, txt[ref_captions], k, image_index, image_index[ref_captions], **search)
    txt_nbr = np.where(txt_nbr >= 0, ref_captions[np.maximum(txt_nbr, 0)], -1)
    text_side = np.full(p, np.nan)
    for s in range(0, p, rows_chunk):
        rows = np.arange(s, min(s + rows_chunk, p))
        nb = txt_nbr[rows]
        valid = nb >= 0
        nbc = np.maximum(nb, 0)
        w = np.where(valid, np.exp(-tau_neighbor * unit * (1.0 - np.where(valid, txt_sim[rows], 1.0))) * pair_weight[nbc], 0.0)
        d = unit * (1.0 - np.einsum("cd,ckd->ck", img[image_index[rows]], img[image_index[nbc]]).astype(np.float64))
        den = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            text_side[rows] = np.where(den > 0, (w * d).sum(axis=1) / den, np.nan)
    return txt_nbr, text_side


def _finite_mean(sims):
    """Row means of the finite entries (-inf marks a missing neighbour)."""
    ok = np.isfinite(sims)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, sims, 0.0).sum(axis=1) / ok.sum(axis=1)


def _score_with_missing(weights, components):
    """Scores; a missing neighbour term (NaN: a pair with no neighbour, e.g.
    a one-image collection) counts as the collection's median."""
    center, scale = robust_standardization(components)
    filled = np.where(np.isfinite(components), components, center[None, :])
    if weights.center is None:
        # standardise with the stats of the real values, not the filled ones
        weights = NeighborWeights(weights.weights, weights.intercept, center, scale, weights.info)
    return weights.score(filled)


def fit_neighbor_weights(components, matched, C=1.0):
    """Learns how to combine the four distances from pairs a person judged
    (LEMoN fits its weights on a labelled validation split).

    A logistic regression of "wrong" on the standardised distances. A
    distance can only count against a match: a weight that comes out
    negative (an artefact of few or biased labels) is dropped and the rest
    refitted, as LEMoN searches non-negative weights only.

    Args:
        components: (P, 4) distances (:attr:`NeighborScores.components`),
            ideally of the whole collection: every row sets the
            standardisation, the labelled rows fit the weights
        matched: (P,) 1 / True where the pair is right, 0 / False where
            wrong, -1 or NaN where nobody said
        C (1.0): inverse L2 regularisation strength

    Returns:
        a :class:`NeighborWeights`: pass it as ``weights`` to
        :func:`neighbor_scores`, or call its ``score`` / ``probability`` on
        components; ``info`` has the label counts

    Raises:
        ValueError: when the labels do not contain both classes
    """
    from sklearn.linear_model import LogisticRegression

    components = np.asarray(components, dtype=np.float64)
    matched = np.asarray(matched, dtype=np.float64)
    if components.ndim != 2 or components.shape[1] != len(COMPONENTS) or len(components) != len(matched):
        raise ValueError("components must be (P, %d) with one label per row" % len(COMPONENTS))
    labelled = np.isfinite(matched) & (matched >= 0)
    y = matched[labelled] < 0.5  # the model predicts "wrong": distances get positive weights
    if y.all() or not y.any():
        raise ValueError("fitting weights needs pairs marked right and pairs marked wrong")
    center, scale = robust_standardization(components)
    z = (np.where(np.isfinite(components), components, center) - center) / scale
    z = z[labelled]
    use = np.ones(z.shape[1], dtype=bool)
    coef, intercept = np.asarray(DEFAULT_WEIGHTS, dtype=np.float64), 0.0
    while use.any():
        model = LogisticRegression(C=C).fit(z[:, use], y)
        if (model.coef_[0] >= 0).all():
            coef = np.zeros(z.shape[1])
            coef[use] = model.coef_[0]
            intercept = float(model.intercept_[0])
            break
        use[np.flatnonzero(use)[model.coef_[0] < 0]] = False
    # nothing usable (every weight negative): the label-free defaults stay
    return NeighborWeights(
        coef,
        intercept,
        center,
        scale,
        info={"source": "fitted" if use.any() else "default (fit unusable)", "n_right": int((~y).sum()), "n_wrong": int(y.sum()), "C": C},
    )
