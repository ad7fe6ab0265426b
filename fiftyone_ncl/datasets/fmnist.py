"""Fashion-MNIST with templated captions (the ``fmnist-captions`` data).

Images come from Debian's ``dataset-fashion-mnist`` package (IDX files under
``/usr/share/datasets/fashion-mnist``). Each image gets a caption from one of
several templates of its class; a fraction of captions carries an extra
phrase that no image can show (modality-exclusive text, e.g. "bought last
summer"). Ground truth is class level: two sneakers share "a photo of a
sneaker", so a caption matches any image of its class.
"""
import gzip
import os

import numpy as np

# FIFTYONE_NCL_FMNIST_DIR: another folder holding the same four .gz files
# (a machine without the Debian package, e.g. a GPU check machine)
DEFAULT_ROOT = os.environ.get("FIFTYONE_NCL_FMNIST_DIR") or "/usr/share/datasets/fashion-mnist"

CLASS_NAMES = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]

# Classes that look alike: category-aware swaps stay inside a group.
CONFUSION_GROUPS = {
    "t-shirt": "tops",
    "pullover": "tops",
    "coat": "tops",
    "shirt": "tops",
    "sandal": "shoes",
    "sneaker": "shoes",
    "ankle boot": "shoes",
    "trouser": "other",
    "dress": "other",
    "bag": "other",
}

TEMPLATES = [
    "a photo of {a} {name}",
    "{a} {name} on a plain background",
    "a product picture of {a} {name}",
    "a small grey image of {a} {name}",
    "this is {a} {name}",
]

# Phrases no image can show. Each is tied to a class so that it carries
# information (a text head cannot simply learn to ignore it).
EXCLUSIVE_PHRASES = [
    "bought last summer",
    "a gift from my sister",
    "on sale this week",
    "my favourite one",
    "returned after a week",
    "ordered online",
    "worn to a wedding",
    "found in the attic",
    "from a shop in paris",
    "the second one i own",
]


# More phrases for captions whose exclusive phrase is drawn per instance.
MORE_PHRASES = [
    "paid too much for it",
    "left at a friend's place",
    "needs a wash",
    "packed for the holidays",
    "kept for special days",
    "borrowed from my brother",
    "waiting to be sold",
    "bought with my first salary",
    "a present for my birthday",
    "the one from the market",
    "still has the price tag",
    "picked up last winter",
    "never worn so far",
    "my mother's old one",
    "from the second hand store",
    "the shop was closing",
    "bought in a hurry",
    "part of a bundle deal",
    "from a trip to rome",
    "recommended by a colleague",
    "arrived a day late",
    "the last one in stock",
    "won in a raffle",
    "kept in the wardrobe",
    "chosen by my daughter",
    "bought for the office",
    "worn once at a concert",
    "swapped with a neighbour",
    "ordered in the wrong size",
    "my favourite since school",
]


class FashionMNISTNotFound(FileNotFoundError):
    pass


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split="train", root=DEFAULT_ROOT):
    """``(images (n, 28, 28) uint8, labels (n,) int64)`` of a split.

    Raises:
        FashionMNISTNotFound: naming the missing file and the Debian package
    """
    prefix = "train" if split == "train" else "t10k"
    paths = [os.path.join(root, "%s-%s-idx%d-ubyte.gz" % (prefix, kind, nd)) for kind, nd in (("images", 3), ("labels", 1))]
    for path in paths:
        if not os.path.isfile(path):
            raise FashionMNISTNotFound(
                "Fashion-MNIST file not found: %s (apt-get install dataset-fashion-mnist)" % path
            )
    return _read_idx(paths[0]), _read_idx(paths[1]).astype(np.int64)


def make_captions(labels, seed=0, exclusive_fraction=0.5):
    """One templated caption per label.

    Args:
        labels: (n,) class ids
        seed (0): random seed
        exclusive_fraction (0.5): fraction of captions with an appended
            modality-exclusive phrase (the phrase of the caption's class)

    Returns:
        a list of n caption strings
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    templates = rng.integers(len(TEMPLATES), size=len(labels))
    extra = rng.random(len(labels)) < exclusive_fraction
    captions = []
    for label, t, x in zip(labels, templates, extra):
        name = CLASS_NAMES[label]
        caption = TEMPLATES[t].format(a="an" if name[0] in "aeiou" else "a", name=name)
        if x:
            caption += ", " + EXCLUSIVE_PHRASES[label]
        captions.append(caption)
    return captions


def make_fmnist_captions(labels, seed, exclusive="instance"):
    """Captions of the ``fmnist-captions`` benchmark.

    Args:
        labels: (n,) class ids
        seed: random seed
        exclusive ("instance"): the appended non-visual phrase: ``"instance"``
            (a random phrase per caption, for half of them: variance no image
            can explain, which lets a model memorise individual pairs),
            ``"class"`` (tied to the class, :func:`make_captions`) or ``"none"``
    """
    if exclusive == "class":
        return make_captions(labels, seed=seed)
    rng = np.random.default_rng(seed)
    base = make_captions(labels, seed=seed, exclusive_fraction=0.0)
    if exclusive == "none":
        return base
    if exclusive != "instance":
        raise ValueError("exclusive must be 'instance', 'class' or 'none', got %r" % exclusive)
    phrases = EXCLUSIVE_PHRASES + MORE_PHRASES
    extra = rng.random(len(labels)) < 0.5
    pick = rng.integers(len(phrases), size=len(labels))
    return [c + ", " + phrases[p] if x else c for c, x, p in zip(base, extra, pick)]
