"""Injecting mismatches of known location, to measure detection.

Each function returns an :class:`InjectedNoise` whose ``source[p]`` is the row
of the caption that pair ``p`` now carries (``captions_new = captions[source]``)
and whose ``noisy`` marks the pairs that no longer match. All are seeded.

* :func:`inject_random`: the NCR protocol. A fraction ``rate`` of captions is
  chosen and permuted among themselves; some land on their own image (or, with
  class-level truth, on an image of the same class), so the realised rate is
  below ``rate`` and is reported.
* :func:`inject_category`: the hard case. Each chosen caption is replaced by
  the caption of another image that shares a category with (or is in the same
  confusion group as) its own, but is not the same instance or class.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class InjectedNoise:
    """Where injected mismatches are.

    Attributes:
        source: (P,) row of the caption each pair now carries
        noisy: (P,) True where the pair is mismatched
        kind: ``"random"`` or ``"category"``
        rate: the requested fraction
        seed: the seed
    """

    source: np.ndarray
    noisy: np.ndarray
    kind: str
    rate: float
    seed: int

    @property
    def realised_rate(self):
        return float(self.noisy.mean()) if len(self.noisy) else 0.0

    def apply(self, captions):
        """The captions after injection (a list or array indexed by row)."""
        if isinstance(captions, np.ndarray):
            return captions[self.source]
        return [captions[i] for i in self.source]

    def to_dict(self):
        return {
            "kind": self.kind,
            "rate": self.rate,
            "realised_rate": self.realised_rate,
            "seed": self.seed,
            "n_noisy": int(self.noisy.sum()),
        }


def _check_rate(rate):
    if not 0.0 <= rate <= 1.0:
        raise ValueError("noise rate must be in [0, 1], got %r" % rate)


def _noisy_mask(source, image_index, classes):
    """A pair is noisy when its caption came from another image (or, with
    class-level truth, from an image of another class)."""
    rows = np.arange(len(source))
    if classes is not None:
        classes = np.asarray(classes)
        return classes[source] != classes[rows]
    return image_index[source] != image_index[rows]


def inject_random(image_index, rate, seed=0, classes=None):
    """NCR protocol: permute a fraction ``rate`` of captions among themselves.

    Args:
        image_index: (P,) image row of each caption
        rate: fraction of captions chosen
        seed (0): random seed
        classes (None): optional (P,) class of each pair's image; when given,
            truth is class level (a caption of another image of the same class
            still matches)

    Returns:
        an :class:`InjectedNoise`
    """
    _check_rate(rate)
    image_index = np.asarray(image_index)
    n = len(image_index)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(n, int(round(rate * n)), replace=False)
    source = np.arange(n)
    source[chosen] = chosen[rng.permutation(len(chosen))]
    return InjectedNoise(source, _noisy_mask(source, image_index, classes), "random", rate, seed)


def inject_category(image_index, rate, categories, seed=0, classes=None, groups=None):
    """Category-aware swaps: a caption moves to a pair of a similar kind.

    Args:
        image_index: (P,) image row of each caption
        rate: fraction of captions replaced
        categories: (P,) per pair, either one label (class) or a collection of
            labels (e.g. the COCO categories of the image)
        seed (0): random seed
        classes (None): (P,) class per pair for class-level truth; the new
            caption is then always of a different class
        groups (None): optional dict label -> confusion-group id; two pairs are
            "similar" when their labels fall in one group (e.g. {T-shirt,
            pullover, coat, shirt}). Without it, similar = sharing a label

    Returns:
        an :class:`InjectedNoise`; pairs with no similar candidate keep their
        caption (the realised rate reports it)
    """
    _check_rate(rate)
    image_index = np.asarray(image_index)
    n = len(image_index)
    rng = np.random.default_rng(seed)
    label_sets = [
        frozenset(c) if isinstance(c, (list, tuple, set, frozenset, np.ndarray)) else frozenset([c])
        for c in categories
    ]
    if groups is not None:
        label_sets = [frozenset(groups.get(c, ("own", c)) for c in s) for s in label_sets]

    index = {}
    for p, labels in enumerate(label_sets):
        for label in labels:
            index.setdefault(label, []).append(p)
    index = {k: np.asarray(v) for k, v in index.items()}
    cls = None if classes is None else np.asarray(classes)

    chosen = rng.choice(n, int(round(rate * n)), replace=False)
    source = np.arange(n)
    pools = {}
    for p in chosen:
        labels = label_sets[p]
        if labels not in pools:
            pools[labels] = (
                np.unique(np.concatenate([index[label] for label in labels])) if labels else np.zeros(0, int)
            )
        pool = pools[labels]
        if len(pool) == 0:
            continue

        def similar_enough(q):
            return image_index[q] != image_index[p] and (cls is None or cls[q] != cls[p])

        # rejection sampling is fast when most of the pool qualifies ...
        for q in pool[rng.integers(len(pool), size=32)]:
            if similar_enough(q):
                source[p] = q
                break
        else:  # ... and the exact filter handles pools that barely do
            ok = image_index[pool] != image_index[p]
            if cls is not None:
                ok &= cls[pool] != cls[p]
            if ok.any():
                source[p] = pool[ok][rng.integers(ok.sum())]
    return InjectedNoise(source, _noisy_mask(source, image_index, cls), "category", rate, seed)


def inject_nouns(captions, categories, vocabulary, rate, seed=0):
    """Noun replacement: in a fraction ``rate`` of captions, a category noun
    the caption mentions is replaced by another category that the image does
    not contain ("a dog on a sofa" -> "a giraffe on a sofa").

    Args:
        captions: (P,) caption strings
        categories: (P,) per pair the categories of its image
        vocabulary: every category name (single or multi-word)
        rate: fraction of captions chosen
        seed (0): random seed

    Returns:
        ``(new_captions, noisy)``: the edited captions and a (P,) mask of the
        ones actually edited (chosen captions that mention no category stay
        as they are; the realised rate reports it)
    """
    import re

    _check_rate(rate)
    rng = np.random.default_rng(seed)
    n = len(captions)
    # "hot dog" before "dog"; ties alphabetical, so that the edits do not
    # depend on the order a set of strings iterates in (hash-seeded per process)
    vocab = sorted(set(vocabulary), key=lambda v: (-len(v), v))
    patterns = {v: re.compile(r"\b%ss?\b" % re.escape(v), re.IGNORECASE) for v in vocab}
    new = list(captions)
    noisy = np.zeros(n, dtype=bool)
    for p in rng.choice(n, int(round(rate * n)), replace=False):
        present = set(categories[p])
        mentioned = [v for v in vocab if patterns[v].search(captions[p])]
        # prefer a noun of the image's own categories: the edit then surely
        # contradicts the image
        mentioned = [v for v in mentioned if v in present] or mentioned
        options = [v for v in vocab if v not in present]
        if not mentioned or not options:
            continue
        old = mentioned[0]
        replacement = options[rng.integers(len(options))]
        new[p] = patterns[old].sub(
            lambda m, r=replacement, o=old: r + ("s" if len(m.group(0)) > len(o) else ""), captions[p], count=1
        )
        noisy[p] = new[p] != captions[p]
    return new, noisy


def _per_image_classes(image_index, classes, n_images):
    """(N,) class of each image from a (P,) class per pair (None stays None)."""
    if classes is None:
        return None
    out = np.full(n_images, -1, dtype=np.int64)
    out[image_index] = np.asarray(classes)
    return out


def _neighbor_sources(features, image_index, chosen, rng, k, image_classes):
    """For each chosen pair, the row of a caption of one of the ``k`` nearest
    other images (of another class when ``image_classes`` is given), or the
    pair itself when no such image exists."""
    from sklearn.neighbors import NearestNeighbors

    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    counts = np.bincount(image_index, minlength=len(features))
    by_image = np.argsort(image_index, kind="stable")  # captions grouped by image
    starts = np.cumsum(counts) - counts
    source = np.asarray(chosen).copy()
    own = image_index[chosen]
    # one search per class (candidates: the images of the other classes), or
    # one over all images at instance level; images without captions lend none
    keys = np.zeros(len(chosen), dtype=np.int64) if image_classes is None else image_classes[own]
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        ok = counts > 0
        if image_classes is not None:
            ok &= image_classes != key
        pool = np.flatnonzero(ok)
        if len(pool) == 0:
            continue
        n_query = min(len(pool), k + (image_classes is None))  # +1: the image itself
        _, idx = NearestNeighbors(n_neighbors=n_query).fit(features[pool]).kneighbors(features[own[rows]])
        cand = pool[idx]
        valid = cand != own[rows, None]
        # the valid candidates first (stable: nearest first), the k nearest kept
        order = np.argsort(~valid, axis=1, kind="stable")
        cand = np.take_along_axis(cand, order, axis=1)[:, :k]
        n_valid = np.minimum(valid.sum(1), k)
        has = n_valid > 0
        pick = cand[has, (rng.random(int(has.sum())) * n_valid[has]).astype(np.int64)]
        offset = (rng.random(len(pick)) * counts[pick]).astype(np.int64)
        source[rows[has]] = by_image[starts[pick] + offset]
    return source


def inject_neighbors(features, image_index, rate, seed=0, k=10, classes=None):
    """Near-neighbour swaps: a fraction ``rate`` of captions is replaced by a
    caption of one of the ``k`` nearest *other* images in ``features``.

    With ``features`` = the shared factors of a synthetic problem (or class
    prototypes, or any trusted embedding) the new caption describes a
    look-alike image: the hard case that a random permutation rarely makes.

    Args:
        features: (N, d) one vector per image, in the space "near" is measured in
        image_index: (P,) image row of each caption
        rate: fraction of captions replaced
        seed (0): random seed
        k (10): the new caption's image is drawn uniformly among this many
            nearest other images
        classes (None): optional (P,) class of each pair's image for
            class-level truth; the neighbours are then the nearest images of
            *other* classes (a same-class caption would still match)

    Returns:
        an :class:`InjectedNoise` of kind ``"neighbor"`` (a caption may be
        carried by several pairs, as in :func:`inject_category`)
    """
    _check_rate(rate)
    if k < 1:
        raise ValueError("k must be >= 1, got %r" % k)
    image_index = np.asarray(image_index, dtype=np.int64)
    n = len(image_index)
    if len(features) <= int(image_index.max(initial=-1)):
        raise ValueError("features has %d rows but image_index points to image %d" % (len(features), image_index.max()))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, int(round(rate * n)), replace=False))
    image_classes = _per_image_classes(image_index, classes, len(features))
    source = np.arange(n)
    if len(chosen):
        source[chosen] = _neighbor_sources(features, image_index, chosen, rng, k, image_classes)
    return InjectedNoise(source, _noisy_mask(source, image_index, classes), "neighbor", rate, seed)


def inject_mixed(features, image_index, rate, seed=0, k=10, classes=None, neighbor_fraction=0.5):
    """Part random, part near-neighbour swaps (kind ``"mixed"``).

    A fraction ``rate`` of captions is chosen; ``neighbor_fraction`` of them
    get a caption of one of the ``k`` nearest other images in ``features``
    (:func:`inject_neighbors`), the rest are permuted among themselves
    (:func:`inject_random`).

    Args:
        features, image_index, rate, seed, k, classes: as in :func:`inject_neighbors`
        neighbor_fraction (0.5): share of the chosen captions given a neighbour's

    Returns:
        an :class:`InjectedNoise` of kind ``"mixed"``
    """
    _check_rate(rate)
    if not 0.0 <= neighbor_fraction <= 1.0:
        raise ValueError("neighbor_fraction must be in [0, 1], got %r" % neighbor_fraction)
    image_index = np.asarray(image_index, dtype=np.int64)
    n = len(image_index)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(n, int(round(rate * n)), replace=False)
    n_near = int(round(neighbor_fraction * len(chosen)))
    near, rand = np.sort(chosen[:n_near]), chosen[n_near:]
    source = np.arange(n)
    source[rand] = rand[rng.permutation(len(rand))]
    if len(near):
        image_classes = _per_image_classes(image_index, classes, len(features))
        source[near] = _neighbor_sources(features, image_index, near, rng, k, image_classes)
    return InjectedNoise(source, _noisy_mask(source, image_index, classes), "mixed", rate, seed)
