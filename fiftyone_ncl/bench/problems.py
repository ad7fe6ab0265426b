"""Benchmark data sets: clean pairs with known structure, ready for noise.

* ``fmnist-captions``: Fashion-MNIST photos (Debian package) with templated
  captions, half of them with a modality-exclusive phrase; class-level truth;
  trained end to end (small CNN image tower over pixels, heads over frozen
  MiniLM caption vectors).
* ``synthetic-high`` / ``synthetic-low``: the MII/MEI factor model
  (:mod:`fiftyone_ncl.bench.synthetic`) with exclusive variance dominating or
  not; instance-level truth.
* ``coco-mini``: 258 real COCO photos x 5 human captions from
  ``../shared/data/coco-mini`` when present; category-aware swaps by shared
  COCO category and noun replacement; pixels + MiniLM, instance-level truth.
* ``coco-mini-aligned``: the same photos in one joint space, as the browser
  suite uses: a photo's first caption(s) paired with a stand-in image
  embedding, the mean MiniLM embedding of its *other* captions (no
  pretrained image model is available offline).
"""
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.datasets import fmnist
from fiftyone_ncl.datasets.coco_mini import load_coco_mini
from fiftyone_ncl.datasets.synthetic import make_synthetic
from fiftyone_ncl.encoders import PixelEncoder, SentenceTransformerEncoder
from fiftyone_ncl.encoders.text import PrecomputedTextEncoder

logger = logging.getLogger(__name__)


@dataclass
class Problem:
    """A clean pair problem.

    Attributes:
        name: data set name
        data: the clean training pairs
        classes: (P,) class of each pair's image for class-level truth (a
            caption of the same class still matches), or None for instance
            level
        categories: (P,) per pair a label or a list of labels, for
            category-aware swaps
        groups: optional label -> confusion group, for category-aware swaps
        test: optional clean held-out pairs for retrieval
        test_classes: ``(image_classes, caption_classes)`` of the test pairs
            for the class-level retrieval protocol, or None
        settings: per-method option overrides for this problem
            (``{"*": {...}, "crcl": {...}}``; ``"*"`` applies to every method)
        captions: optional caption strings (for noun replacement)
        vocabulary: optional noun list for noun replacement
        embed_text: optional function re-embedding edited captions
        shared: optional (N, d) shared factors of each image, for
            near-neighbour swaps (kinds ``"neighbor"`` and ``"mixed"``)
        neighbor_k: neighbours a near-neighbour swap picks from
        meta: description
    """

    name: str
    data: PairData
    classes: np.ndarray = None
    categories: list = None
    groups: dict = None
    test: PairData = None
    test_classes: tuple = None
    settings: dict = field(default_factory=dict)
    captions: list = None
    vocabulary: list = None
    embed_text: object = None
    shared: np.ndarray = None
    neighbor_k: int = 10
    meta: dict = field(default_factory=dict)

    def method_settings(self, method):
        out = dict(self.settings.get("*", {}))
        out.update(self.settings.get(method, {}))
        return out


def _minilm():
    """all-MiniLM-L6-v2 for captions; with ``FIFTYONE_NCL_CAPTION_VECTORS``
    naming an ``.npz`` of precomputed caption vectors
    (``scripts/build-caption-vectors.py``), those instead, which is also the
    only way on a machine without sentence-transformers (a GPU check machine
    cannot fetch the model)."""
    path = os.environ.get("FIFTYONE_NCL_CAPTION_VECTORS")
    if path:
        return PrecomputedTextEncoder(path)
    try:
        import sentence_transformers  # noqa: F401  pylint: disable=unused-import
    except ImportError as e:
        raise ImportError(
            "the benchmark's caption vectors need sentence-transformers, or precomputed vectors: "
            "python scripts/build-caption-vectors.py OUT.npz (where it is installed), then "
            "FIFTYONE_NCL_CAPTION_VECTORS=OUT.npz"
        ) from e
    return SentenceTransformerEncoder()


def fmnist_captions(n_train=60000, n_test=10000, seed=0, exclusive="instance", clutter=0.0, settings=None):
    """Fashion-MNIST with templated captions (class-level truth).

    Args:
        n_train (60000): training photos (a class-balanced subset if fewer)
        n_test (10000): clean test photos for retrieval
        seed (0): seed of the subsets, templates and phrases
        exclusive ("instance"): the appended non-visual phrase: ``"instance"``
            (a random phrase per caption: variance no image can explain, which
            lets a model memorise individual pairs), ``"class"`` (tied to the
            class) or ``"none"``
        clutter (0.0): fraction of images given random image-exclusive
            clutter (a bright bar in a random place)
        settings (None): per-method overrides

    Returns:
        a :class:`Problem` with uint8 pixel images (a CNN trains end to end on them)
    """
    encoder = _minilm()

    def split(name, n, split_seed):
        images, labels = fmnist.load_fashion_mnist(name)
        rng = np.random.default_rng(split_seed)
        if n < len(labels):
            per = n // len(fmnist.CLASS_NAMES)
            keep = np.sort(np.concatenate([
                rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in range(len(fmnist.CLASS_NAMES))
            ]))
            images, labels = images[keep], labels[keep]
        images = images.copy()
        if clutter:
            cluttered = rng.random(len(images)) < clutter
            for i in np.flatnonzero(cluttered):
                r, c = rng.integers(0, 24, size=2)
                images[i, r : r + 4, c : c + 4] = 255
        captions = fmnist.make_fmnist_captions(labels, split_seed, exclusive)
        texts = encoder.embed_texts(captions, progress=False)
        data = PairData(images[:, None], texts, np.arange(len(labels)))
        return data, labels, captions

    train, train_labels, captions = split("train", n_train, seed)
    test, test_labels, _ = split("test", n_test, seed + 1)
    return Problem(
        name="fmnist-captions",
        data=train,
        classes=train_labels,
        categories=[fmnist.CLASS_NAMES[c] for c in train_labels],
        groups=fmnist.CONFUSION_GROUPS,
        test=test,
        test_classes=(test_labels, test_labels),
        settings=dict(settings or {}),
        captions=captions,
        meta={"n_train": len(train_labels), "n_test": len(test_labels), "exclusive": exclusive, "clutter": clutter},
    )


def synthetic(level="high", n_pairs=4000, seed=0, settings=None):
    """The MII/MEI factor model (:mod:`fiftyone_ncl.bench.synthetic`);
    ``level`` "high": exclusive variance dominates (exclusive std 3x the
    shared), "low": shared and exclusive factors have equal std.

    The embeddings are small (96-d), so every method works in a 32-d space
    with 512-wide heads, as in the synthetic benchmark of the DisNCL issue.
    """
    exclusive_std = {"high": 3.0, "low": 1.0}[level]
    data, _ = make_synthetic(n_images=n_pairs, exclusive_std=exclusive_std, noise_rate=0.0, seed=seed)
    defaults = {"*": {"embed_dim": 32, "hidden_dim": 512}}
    for method, opts in (settings or {}).items():
        defaults[method] = dict(defaults.get(method, {}), **opts)
    return Problem(
        name="synthetic-%s" % level,
        data=data,
        settings=defaults,
        meta={"n_pairs": n_pairs, "exclusive_std": exclusive_std},
    )


def coco_mini(root=None, image_size=32, settings=None):
    """258 real COCO photos with 5 human captions each (instance-level truth).

    Images are raw 32x32 RGB pixels (no pretrained image model is available
    offline), captions all-MiniLM-L6-v2; category-aware swaps move a caption
    to another image sharing a COCO category.

    Raises:
        FileNotFoundError: if the data is not there
    """
    rows = load_coco_mini(root)
    paths = [r.filepath for r in rows]
    captions, image_index, categories = [], [], []
    for i, r in enumerate(rows):
        for c in r.captions:
            captions.append(c)
            image_index.append(i)
            categories.append(list(r.categories))
    encoder = _minilm()
    images = PixelEncoder(image_size, grayscale=False).embed_images(paths, progress=False)
    texts = encoder.embed_texts(captions, progress=False)
    vocabulary = sorted({c for r in rows for c in r.categories})
    return Problem(
        name="coco-mini",
        data=PairData(images, texts, np.asarray(image_index)),
        categories=categories,
        settings=settings or {},
        captions=captions,
        vocabulary=vocabulary,
        embed_text=lambda caps: encoder.embed_texts(caps, progress=False),
        meta={"images": len(rows), "captions": len(captions)},
    )


def coco_mini_aligned(root=None, n_captions=1, settings=None):
    """coco-mini in one joint space (instance-level truth).

    Each photo's first ``n_captions`` captions are its pairs; its image
    embedding is a stand-in for a CLIP image embedding: the mean
    all-MiniLM-L6-v2 embedding of its remaining captions (the browser suite's
    stand-in). Both sides are MiniLM, so the inputs are one space
    (``joint_space=True``) and the training-free methods score them as given.

    Raises:
        FileNotFoundError: if the data is not there
    """
    rows = load_coco_mini(root)
    captions, image_index, categories, image_side = [], [], [], []
    for i, r in enumerate(rows):
        if len(r.captions) <= n_captions:
            raise ValueError("coco-mini photo %s has %d captions; n_captions=%d leaves none for its image"
                             % (r.filepath, len(r.captions), n_captions))
        for c in r.captions[:n_captions]:
            captions.append(c)
            image_index.append(i)
            categories.append(list(r.categories))
        image_side.append(r.captions[n_captions:])
    encoder = _minilm()
    texts = encoder.embed_texts(captions, progress=False)
    others = encoder.embed_texts([c for cs in image_side for c in cs], progress=False)
    bounds = np.cumsum([0] + [len(cs) for cs in image_side])
    images = np.stack([others[bounds[i] : bounds[i + 1]].mean(axis=0) for i in range(len(rows))]).astype(np.float32)
    vocabulary = sorted({c for r in rows for c in r.categories})
    return Problem(
        name="coco-mini-aligned",
        data=PairData(images, texts, np.asarray(image_index), joint_space=True),
        categories=categories,
        settings=settings or {},
        captions=captions,
        vocabulary=vocabulary,
        embed_text=lambda caps: encoder.embed_texts(caps, progress=False),
        meta={"images": len(rows), "captions": len(captions), "image_embedding": "mean MiniLM of the other captions"},
    )


def regime(name, size=None, seed=0, settings=None):
    """A regime of the varied suite (:mod:`fiftyone_ncl.datasets.regimes`):
    synthetic pairs with known shared factors, for random, near-neighbour
    and mixed swaps; ``meta["held_out"]`` says whether method defaults may be
    chosen on it."""
    from fiftyone_ncl.datasets.regimes import get_regime

    reg = get_regime(name)
    data, truth = reg.make(seed=seed, size=size)
    return Problem(
        name=name,
        data=data,
        classes=truth["classes"],
        shared=truth["shared"],
        neighbor_k=truth.get("neighbor_k", 10),
        settings=dict(settings or {}),
        meta={"held_out": reg.held_out, "axes": reg.axes(), "description": reg.description},
    )
