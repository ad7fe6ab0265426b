"""Pipeline bugs that look like mismatches but come in groups.

* One caption pasted onto many unrelated images ("stock photo, all rights
  reserved", an unfilled template "{product_name}", an alt-text default):
  :func:`duplicate_caption_groups`.
* The same (or a near-identical) image carrying captions that contradict each
  other: :func:`duplicate_image_groups`.

Both judge "unrelated" on a scale of the collection itself, so one setting
works across encoders: a shared caption's images are ranked against random
images of the collection (0 = as related as random images, 1 = as nearest
neighbours): a pasted caption's images sit near 0, a legitimately repeated
caption's ("a photo of a sneaker" on 500 sneakers) well above. Captions of
duplicated images are placed between random caption pairs (0) and captions
that describe one thing (1).

Pure numpy / scipy / scikit-learn; near-linear apart from the neighbour search.
"""
import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from fiftyone_ncl.core.neighbors import nearest_neighbors
from fiftyone_ncl.core.vectors import normalize_rows

_MAX_PAIRWISE = 2000

# unfilled templates: {name}, {{ name }}, ${name}, $name, %(name)s, %s, <NAME>, [NAME]
_TEMPLATE = re.compile(
    r"\{\{?\s*[A-Za-z_][\w.\- ]*\}\}?|\$\{?[A-Za-z_]\w*\}?|%\(\w+\)[sd]|(?<!\w)%[sd](?!\w)|<[A-Z][A-Z_]{2,}>|\[[A-Z][A-Z_]{2,}\]"
)


@dataclass
class DuplicateGroups:
    """Groups found by :func:`duplicate_caption_groups` or
    :func:`duplicate_image_groups`.

    Attributes:
        groups: one dict per group, id = position in the list: ``rows``
            (caption rows), ``images`` (image rows), ``size`` (distinct
            images), ``caption`` (the shared caption) or ``captions``, the
            statistics the decision rests on, and ``reason``
        row_group: (P,) group id of each caption row, -1 when in no group
        info: reference statistics of the collection
    """

    groups: list
    row_group: np.ndarray
    info: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.groups)


def normalize_caption(text):
    """A caption reduced to what a pasted duplicate keeps: unicode NFKC,
    zero-width and other invisible format characters removed, case folded,
    punctuation and symbols turned into spaces, whitespace collapsed.
    ``"  Stock-Photo\u200b, ALL rights reserved!"`` -> ``"stock photo all rights reserved"``."""
    if text is None:
        return ""
    text = unicodedata.normalize("NFKC", str(text))
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cf":  # zero-width space/joiners, BOM, soft hyphen, direction marks
            continue
        out.append(" " if cat[0] in "PSZC" else ch)
    return " ".join("".join(out).casefold().split())


def looks_like_template(text):
    """True when ``text`` holds an unfilled template slot (``{product_name}``,
    ``${title}``, ``%s``, ``<PLACEHOLDER>``)."""
    return bool(_TEMPLATE.search(str(text or "")))


def _coherence(x):
    """Mean pairwise cosine of the unit rows of ``x`` (diagonal excluded), in
    O(m d) through the sum vector: sum_{i != j} x_i.x_j = |sum x|^2 - m."""
    m = len(x)
    if m < 2:
        return np.nan
    s = np.asarray(x, dtype=np.float64).sum(axis=0)
    return float((s @ s - m) / (m * (m - 1)))


def _null_log_rank(n_others, n_fellows):
    """Mean and standard deviation of log(rank) of the nearest of
    ``n_fellows`` random images among ``n_others`` random competitors (rank
    1 = the fellow beats every competitor): the position of the first fellow
    in a random order is negative-hypergeometric."""
    from scipy.special import gammaln

    def log_comb(a, b):
        return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)

    j = np.arange(n_others + 1, dtype=np.float64)  # competitors ahead of it
    log_p = log_comb(n_others, j) - log_comb(n_others + n_fellows, j) + np.log(n_fellows) - np.log(n_others + n_fellows - j)
    prob = np.exp(log_p - log_p.max())
    prob /= prob.sum()
    log_rank = np.log1p(j)
    mean = float(prob @ log_rank)
    return mean, float(np.sqrt(prob @ (log_rank - mean) ** 2))


def _rank_coherence(img, members, rng, n_probe, min_others):
    """How much closer a group's images are to each other than chance.

    For up to ``n_probe`` members, the rank of its nearest fellow member among
    random images outside the group (rank 1: nothing outside is closer).
    Ranks are scale-free, so a member in a sparse region of the embedding
    (far from everything) is judged like one in a dense region. The mean log
    rank is placed between 0 (rank 1: look-alikes) and its expectation for
    random members (see :func:`_null_log_rank`): ``1 - mean / null``, ~0 for
    a random set, 1 for a set of nearest neighbours.

    Returns:
        ``(position, null_sd)``: the position and its standard deviation
        under the random-set hypothesis; NaN when the group covers so much
        of the collection that chance can not be told apart
    """
    n, m = len(img), len(members)
    is_member = np.zeros(n, dtype=bool)
    is_member[members] = True
    n_others = int(min(n - m, max(min_others, 20 * m)))
    probe = rng.choice(members, min(m, n_probe), replace=False)
    others = np.flatnonzero(~is_member) if n_others >= n - m else None
    if others is None:
        cand = rng.choice(n, min(n, n_others + m), replace=False)
        others = cand[~is_member[cand]][:n_others]
    null_mean, null_sd = _null_log_rank(len(others), m - 1)
    if len(others) == 0 or null_mean < 0.5:  # a caption on most of the collection
        return np.nan, np.nan
    fellow_sims = img[probe] @ img[members].T
    fellow_sims[probe[:, None] == members[None, :]] = -np.inf
    fellow = fellow_sims.max(axis=1)
    rank = 1 + ((img[probe] @ img[others].T) > fellow[:, None]).sum(axis=1)
    position = 1.0 - float(np.log(rank).mean()) / null_mean
    return position, null_sd / np.sqrt(len(probe)) / null_mean


def _position(value, low, high):
    """Where ``value`` sits between ``low`` (random) and ``high`` (alike)."""
    return float((value - low) / max(high - low, 1e-6))


def duplicate_caption_groups(
    captions,
    image_embeddings=None,
    image_index=None,
    min_size=5,
    max_coherence=0.5,
    z=4.0,
    templates=True,
    n_probe=128,
    min_others=5000,
    seed=0,
):
    """Captions shared by many images that do not look alike.

    Captions are grouped by :func:`normalize_caption` (a hash, linear time).
    A caption shared by at least ``min_size`` distinct images is a group when
    its images are no more alike than random images of the collection: for
    sampled members, the rank of the nearest other member among random
    images outside the group gives a ``coherence`` (0 = as random images,
    1 = as nearest neighbours; see :func:`_rank_coherence`). The caption is a
    group when ``coherence < min(max_coherence, z * sd)``, ``sd`` being the
    coherence's spread for a random set of that size: small groups need only
    look unrelated, large ones must not be significantly alike (a class
    caption like "a photo of a sneaker" spread over a fifth of the sneakers
    scores ~0.3-0.6, a pasted one ~0 +- 0.05). A caption with an unfilled
    template slot is a group whatever its images look like. A caption on
    more than about a quarter of the collection can not be judged this way
    (a random quarter and a class look alike to the test): it is listed in
    ``info["undecided"]``, not grouped.

    Args:
        captions: (P,) caption strings
        image_embeddings (None): (N, d) image embeddings (any image encoder;
            no joint space needed); None: every shared caption of
            ``min_size`` images or more is a group (nothing tells a legit
            class caption apart then)
        image_index (None): (P,) image row of each caption; None: one caption
            per image (row p describes image p)
        min_size (5): distinct images a caption must be on (at least 2)
        max_coherence (0.5): coherence above which a group is never flagged
        z (4.0): standard deviations of the random-set coherence below which
            a group is flagged (the bound for large groups)
        templates (True): flag unfilled templates regardless of the images
        n_probe (128): members sampled per group
        min_others (5000): random outside images each member is ranked
            among (at least 20 per member, at most all): bounds the cost at
            O(n_probe x max(min_others, 20 m) x d) per shared caption
        seed (0): seed of the samples

    Returns:
        a :class:`DuplicateGroups`; each group has ``caption`` (the first
        original spelling), ``normalized``, ``rows``, ``images``, ``size``,
        ``coherence``, ``threshold`` (the coherence bound it was held to),
        ``mean_cosine`` (mean pairwise cosine of its images, a dispersion
        statistic; the collection's is in ``info``) and ``reason``
        (``"unrelated images"``, ``"template"`` or ``"shared"`` without
        embeddings), largest groups first
    """
    if min_size < 2:
        raise ValueError("min_size must be at least 2, got %r" % min_size)
    captions = list(captions)
    p = len(captions)
    image_index = np.arange(p) if image_index is None else np.asarray(image_index, dtype=np.int64)
    if len(image_index) != p:
        raise ValueError("%d captions but %d entries in image_index" % (p, len(image_index)))
    row_group = np.full(p, -1, dtype=np.int64)
    if p == 0:
        return DuplicateGroups([], row_group)

    ids = {}
    key = np.fromiter((ids.setdefault(normalize_caption(c), len(ids)) for c in captions), dtype=np.int64, count=p)
    names = list(ids)
    # distinct (caption, image) pairs -> distinct images per caption
    n_img = int(image_index.max()) + 1
    pair_key = np.unique(key * n_img + image_index)
    counts = np.bincount(pair_key // n_img, minlength=len(names))
    candidates = np.flatnonzero(counts >= min_size)

    info = {"min_size": int(min_size), "candidates": int(len(candidates)), "undecided": []}
    img = None
    if image_embeddings is not None and len(candidates):
        img = normalize_rows(image_embeddings, "image embeddings")
        if len(img) <= image_index.max():
            raise ValueError("image_index points outside the %d images" % len(img))
        rng = np.random.default_rng(seed)
        info["collection_mean_cosine"] = _coherence(img)

    order = np.argsort(key, kind="stable")
    rows_of = np.split(order, np.searchsorted(key[order], np.arange(1, len(names))))
    groups = []
    for c in candidates:
        rows = rows_of[c]
        images = np.unique(image_index[rows])
        original = captions[rows[0]]
        group = {
            "caption": original,
            "normalized": names[c],
            "rows": rows,
            "images": images,
            "size": int(len(images)),
            "coherence": None,
            "threshold": None,
            "mean_cosine": None,
        }
        template = templates and looks_like_template(original)
        if img is None:
            group["reason"] = "template" if template else "shared"
        else:
            position, sd = _rank_coherence(img, images, rng, n_probe, min_others)
            group["mean_cosine"] = _coherence(img[images])
            group["coherence"] = position
            group["threshold"] = float(min(max_coherence, z * sd)) if np.isfinite(sd) else None
            if not np.isfinite(position):
                # on over a quarter of the collection: chance and likeness can
                # not be told apart (a two-class data set looks the same)
                info["undecided"].append(names[c])
            if np.isfinite(position) and position < group["threshold"]:
                group["reason"] = "unrelated images"
            elif template:
                group["reason"] = "template"
            else:
                continue
        groups.append(group)
    groups.sort(key=lambda g: -g["size"])
    for gid, g in enumerate(groups):
        g["id"] = gid
        row_group[g["rows"]] = gid
    return DuplicateGroups(groups, row_group, info)


def _union_find_components(n, a, b):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def duplicate_image_groups(
    image_embeddings,
    image_index=None,
    text_embeddings=None,
    captions=None,
    threshold=0.97,
    relative_distance=0.25,
    max_agreement=0.5,
    k=8,
    neighbors=None,
    backend="auto",
    n_reference=256,
    seed=0,
    near=True,
    device=None,
):
    """Near-identical images whose captions contradict each other.

    Images are linked when their cosine is at least ``threshold`` and their
    distance (1 - cosine) at most ``relative_distance`` times the
    collection's median nearest-neighbour distance (in a space where all
    images crowd together, raw pixels say, 0.97 is not "the same image"),
    among each image's ``k`` nearest neighbours; exact copies are found by
    hashing first, so a large set of identical copies is one group whatever
    ``k``. Linked images form groups (connected components). A group is
    kept when two of its images have captions that disagree: with
    ``text_embeddings``, the mean cosine between their captions sits closer
    to that of random caption pairs than to that of captions that agree
    (two captions of one image when the collection has several per image,
    else captions of an image and of its nearest different image):
    ``agreement`` position below ``max_agreement``. Without embeddings,
    captions contradict when their :func:`normalize_caption` forms differ.

    Args:
        image_embeddings: (N, d) image embeddings (any image encoder)
        image_index (None): (P,) image row of each caption; None: row p of
            the captions describes image p
        text_embeddings (None): (P, d') caption embeddings (any text encoder)
        captions (None): (P,) caption strings (kept in the groups; the
            fallback test without ``text_embeddings``)
        threshold (0.97): image cosine from which two images may be the same
        relative_distance (0.25): and at most this fraction of the median
            nearest-neighbour distance apart
        max_agreement (0.5): largest agreement position of a contradiction
        k (8): neighbours searched per image
        neighbors (None): optional precomputed (N, k') image neighbours (e.g.
            :attr:`~fiftyone_ncl.core.neighbors.NeighborScores.image_neighbors`)
            to skip the search
        backend ("auto"): see :func:`fiftyone_ncl.core.neighbors.nearest_neighbors`
        n_reference (256): images sampled for the agreement reference
        seed (0): seed of that sample
        near (True): also link near copies (a neighbour search, quadratic
            without an index); False: exact copies only (linear)
        device (None): torch device of the neighbour searches (None: CPU)

    Returns:
        a :class:`DuplicateGroups`; each group has ``images``, ``rows``,
        ``size``, ``min_image_cosine``, ``agreement`` (position; None without
        text embeddings), ``captions`` (when given) and ``reason``
    """
    if text_embeddings is None and captions is None:
        raise ValueError("duplicate_image_groups needs text_embeddings or captions to judge contradiction")
    img = normalize_rows(image_embeddings, "image embeddings")
    n = len(img)
    p = len(text_embeddings) if text_embeddings is not None else len(captions)
    image_index = np.arange(p) if image_index is None else np.asarray(image_index, dtype=np.int64)
    if len(image_index) != p:
        raise ValueError("%d captions but %d entries in image_index" % (p, len(image_index)))
    row_group = np.full(p, -1, dtype=np.int64)
    if n < 2:
        return DuplicateGroups([], row_group)

    # exact copies: one representative per distinct vector, by hashing each
    # rounded row to two random projections (row-wise sums: identical rows
    # give identical keys), checked against the cosine to rule out collisions
    proj = np.random.default_rng(seed).normal(size=(2, img.shape[1]))
    keys = np.empty((n, 2))
    for start in range(0, n, 65536):
        block = np.round(img[start : start + 65536].astype(np.float64), 5)
        keys[start : start + 65536] = np.stack([(block * proj[0]).sum(axis=1), (block * proj[1]).sum(axis=1)], axis=1)
    _, rep_of = np.unique(keys, axis=0, return_inverse=True)
    rep_of = rep_of.ravel()
    reps = np.unique(rep_of, return_index=True)[1]  # first image of each distinct vector
    same = np.einsum("ij,ij->i", img, img[reps[rep_of]]) >= 1.0 - 1e-5
    a = [np.flatnonzero(same)]
    b = [reps[rep_of][same]]
    # near copies: neighbours close in absolute and in relative terms
    if not near:
        src = dst = np.zeros(0, dtype=np.int64)
        sim = nearest = np.zeros(0)
    elif neighbors is None:
        kk = min(k, len(reps) - 1)
        nbr, sim = nearest_neighbors(img[reps], img[reps], kk, np.arange(len(reps)), np.arange(len(reps)), backend=backend,
                                     device=device)
        src = np.repeat(reps, kk)
        dst = np.where(nbr >= 0, reps[np.maximum(nbr, 0)], -1).ravel()
        sim = sim.ravel()
        nearest = sim[:: max(kk, 1)] if kk else sim
    else:
        nbr = np.asarray(neighbors, dtype=np.int64)
        src = np.repeat(np.arange(len(nbr)), nbr.shape[1])
        dst = nbr.ravel()
        sim = np.where(dst >= 0, np.einsum("ij,ij->i", img[src], img[np.maximum(dst, 0)]), -np.inf)
        nearest = sim.reshape(nbr.shape).max(axis=1)
    nearest = nearest[np.isfinite(nearest)]
    typical = float(np.median(1.0 - nearest)) if len(nearest) else 0.0
    max_distance = min(1.0 - threshold, relative_distance * typical)
    close = (dst >= 0) & (1.0 - sim <= max_distance)
    a.append(src[close])
    b.append(dst[close])
    comp = _union_find_components(n, np.concatenate(a), np.concatenate(b))
    sizes = np.bincount(comp)
    multi = np.flatnonzero(sizes >= 2)

    info = {"max_distance": max_distance, "median_nearest_distance": typical, "image_groups": int(len(multi))}
    txt = None
    if text_embeddings is not None and len(multi):
        txt = normalize_rows(text_embeddings, "caption embeddings")
        random_level, agree_level, agree_kind = _caption_agreement_reference(img, txt, image_index, n_reference, seed, backend)
        info.update(random_agreement=random_level, agree_agreement=agree_level, agree_reference=agree_kind)

    rng = np.random.default_rng(seed)
    caps_of = np.split(np.argsort(image_index, kind="stable"), np.cumsum(np.bincount(image_index, minlength=n))[:-1])
    members_of = np.split(np.argsort(comp, kind="stable"), np.cumsum(sizes)[:-1])
    norm_cache = {}
    groups = []
    for c in multi:
        images = members_of[c]
        captioned = [i for i in images if len(caps_of[i])]
        if len(captioned) < 2:
            continue
        rows = np.concatenate([caps_of[i] for i in captioned])
        group = {"images": np.asarray(images), "rows": rows, "size": int(len(images))}
        # pairwise statistics on at most _MAX_PAIRWISE members (a placeholder
        # image can be repeated thousands of times)
        some = images if len(images) <= _MAX_PAIRWISE else rng.choice(images, _MAX_PAIRWISE, replace=False)
        group["min_image_cosine"] = float((img[some] @ img[some].T).min())
        if txt is not None:
            # mean caption vector per image: its dot products are the mean
            # cosine over caption pairs of two images
            if len(captioned) > _MAX_PAIRWISE:
                captioned = list(rng.choice(captioned, _MAX_PAIRWISE, replace=False))
            cent = np.stack([txt[caps_of[i]].astype(np.float64).mean(axis=0) for i in captioned])
            pair = cent @ cent.T
            np.fill_diagonal(pair, np.inf)
            group["agreement"] = _position(pair.min(), random_level, agree_level)
            contradict = group["agreement"] < max_agreement
        else:
            group["agreement"] = None
            forms = set()
            for i in captioned:
                for r in caps_of[i]:
                    if r not in norm_cache:
                        norm_cache[r] = normalize_caption(captions[r])
                forms.add(frozenset(norm_cache[r] for r in caps_of[i]))
            contradict = len(forms) > 1
        if not contradict:
            continue
        if captions is not None:
            group["captions"] = [captions[r] for r in rows]
        group["reason"] = "contradicting captions"
        groups.append(group)
    groups.sort(key=lambda g: -g["size"])
    for gid, g in enumerate(groups):
        g["id"] = gid
        row_group[g["rows"]] = gid
    return DuplicateGroups(groups, row_group, info)


def _caption_agreement_reference(img, txt, image_index, n_reference, seed, backend):
    """(random, agreeing, kind): mean caption cosine of random caption pairs,
    and the median mean cosine of captions that describe the same thing."""
    rng = np.random.default_rng(seed)
    n = len(img)
    # random pairs: mean pairwise cosine of all captions
    random_level = _coherence(txt)
    counts = np.bincount(image_index, minlength=n)
    multi = np.flatnonzero(counts >= 2)
    caps_of = np.split(np.argsort(image_index, kind="stable"), np.cumsum(counts)[:-1])
    if len(multi):
        sample = rng.choice(multi, min(n_reference, len(multi)), replace=False)
        agree = np.median([_coherence(txt[caps_of[i]]) for i in sample])
        return random_level, float(agree), "captions of one image"
    # one caption per image: an image's caption vs its nearest other image's
    captioned = np.flatnonzero(counts > 0)
    sample = rng.choice(captioned, min(n_reference, len(captioned)), replace=False)
    nbr, _ = nearest_neighbors(img[sample], img[captioned], 1, sample, captioned, backend=backend)
    vals = [
        float(txt[caps_of[i]].mean(axis=0) @ txt[caps_of[captioned[j]]].mean(axis=0))
        for i, j in zip(sample, nbr[:, 0])
        if j >= 0
    ]
    return random_level, float(np.median(vals)) if vals else 1.0, "captions of nearest images"


# above this many images the near-copy search of :func:`find_duplicate_groups`
# (quadratic without an index) is skipped; exact copies are still found. On
# one CPU core 20k images of 512-d take ~15 s; a GPU does 1M in seconds
MAX_NEAR_IMAGES = 20_000
MAX_NEAR_IMAGES_GPU = 1_000_000
# groups listed in a summary (the field holds every group's members)
_MAX_LISTED = 1000


@dataclass
class DuplicateReport:
    """Both kinds of groups of one collection, as a run records them.

    Attributes:
        row_group: (P,) group id of each caption row (``"caption-<i>"`` or
            ``"image-<i>"``), None for rows in no group; a row in both kinds
            gets its caption group
        groups: one JSON-friendly dict per group: ``id``, ``kind``
            (``"caption"`` or ``"image"``), ``size`` (distinct images),
            ``pairs`` (caption rows), ``caption`` (the shared caption) or
            ``captions`` (a few of the contradicting ones), ``reason`` and
            the statistic the decision rests on
        info: counts and reference statistics
    """

    row_group: list
    groups: list
    info: dict = field(default_factory=dict)

    def summary(self, max_groups=_MAX_LISTED):
        """What a run records: counts, and the largest ``max_groups`` groups."""
        kinds = [g["kind"] for g in self.groups]
        return {
            "caption_groups": kinds.count("caption"),
            "image_groups": kinds.count("image"),
            "grouped_pairs": int(sum(g is not None for g in self.row_group)),
            "groups": self.groups[:max_groups],
            "truncated": len(self.groups) > max_groups,
            "info": self.info,
        }


def _finite_or_none(x):
    return None if x is None or not np.isfinite(x) else float(x)


def find_duplicate_groups(
    captions,
    image_index=None,
    image_embeddings=None,
    text_embeddings=None,
    min_size=5,
    max_near_images=None,
    seed=0,
    backend="auto",
    device=None,
    copy_embeddings=None,
):
    """Duplicate-caption and duplicate-image groups of a collection, for a
    run's ``{key}_duplicate_group`` field and its summary.

    Training-free and cheap: captions are hashed after
    :func:`normalize_caption` (:func:`duplicate_caption_groups`), exact image
    copies are hashed, and near copies are searched among at most
    ``max_near_images`` images (:func:`duplicate_image_groups`).

    Args:
        captions: (P,) caption strings
        image_index (None): (P,) image row of each caption (None: row p is image p)
        image_embeddings (None): (N, d) images, any space (without them only
            shared captions of ``min_size`` images or more are grouped, and
            no image groups are made)
        text_embeddings (None): (P, d') captions, any space (to judge whether
            the captions of duplicated images contradict each other; else
            their normalised strings are compared)
        min_size (5): images a shared caption must be on
        max_near_images (None): above this many images only exact image
            copies are grouped; None: :data:`MAX_NEAR_IMAGES` on the CPU,
            :data:`MAX_NEAR_IMAGES_GPU` on a CUDA ``device``
        seed (0): seed of the samples the tests draw
        backend ("auto"): neighbour search (see
            :func:`fiftyone_ncl.core.neighbors.nearest_neighbors`)
        device (None): torch device of that search (None: CPU)
        copy_embeddings (None): (N, d'') image embeddings in which copies of
            one image are searched, when a better space for "the same
            image" than ``image_embeddings`` is at hand (a run passes its
            input embeddings: a few learned dimensions can put two different
            images at cosine 0.97); None: ``image_embeddings``

    Returns:
        a :class:`DuplicateReport`
    """
    captions = list(captions)
    p = len(captions)
    image_index = np.arange(p) if image_index is None else np.asarray(image_index, dtype=np.int64)
    row_group = [None] * p
    groups = []
    info = {}
    by_caption = duplicate_caption_groups(captions, image_embeddings, image_index, min_size=min_size, seed=seed)
    info["caption"] = by_caption.info
    for g in by_caption.groups:
        gid = "caption-%d" % g["id"]
        for r in g["rows"]:
            row_group[r] = gid
        groups.append({
            "id": gid,
            "kind": "caption",
            "size": int(g["size"]),
            "pairs": int(len(g["rows"])),
            "caption": g["caption"],
            "reason": g["reason"],
            "coherence": _finite_or_none(g.get("coherence")),
            "threshold": _finite_or_none(g.get("threshold")),
        })
    copies = image_embeddings if copy_embeddings is None else copy_embeddings
    if copies is not None and len(copies) >= 2:
        if max_near_images is None:
            on_gpu = device is not None and str(device).startswith("cuda")
            max_near_images = MAX_NEAR_IMAGES_GPU if on_gpu else MAX_NEAR_IMAGES
        near = len(copies) <= max_near_images
        by_image = duplicate_image_groups(
            copies, image_index, text_embeddings=text_embeddings, captions=captions, seed=seed,
            backend=backend, near=near, device=device,
        )
        info["image"] = dict(by_image.info, near_copies_searched=bool(near))
        for g in by_image.groups:
            gid = "image-%d" % g["id"]
            for r in g["rows"]:
                if row_group[r] is None:
                    row_group[r] = gid
            distinct = list(dict.fromkeys(g.get("captions") or []))
            groups.append({
                "id": gid,
                "kind": "image",
                "size": int(g["size"]),
                "pairs": int(len(g["rows"])),
                "captions": distinct[:5],
                "reason": g["reason"],
                "agreement": _finite_or_none(g.get("agreement")),
                "min_image_cosine": _finite_or_none(g.get("min_image_cosine")),
            })
    groups.sort(key=lambda g: -g["size"])
    return DuplicateReport(row_group, groups, _jsonable(info))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x
