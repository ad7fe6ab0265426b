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
    vocab = sorted(set(vocabulary), key=len, reverse=True)  # "hot dog" before "dog"
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
