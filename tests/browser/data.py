"""The photo dataset the browser tests review.

Real photos with human captions, a known quarter of the captions swapped
among themselves (the mismatches to find), and precomputed embeddings that
give meaningful scores offline and in seconds:

* ``caption_embedding``: all-MiniLM-L6-v2 (bundled, offline) of the caption;
* ``image_embedding``: a stand-in for a CLIP image embedding, since no
  pretrained image model can be had offline: the mean MiniLM embedding of
  the image's *other* human captions (COCO has five per image). It lives in
  the caption space, so both fields are recorded as one space and the
  ``gmm`` baseline scores their cosine directly, with no training.

Photos come from ``../shared/data/coco-mini`` beside the repository (read in
place, never copied), keeping only the images whose Flickr licence allows
redistribution with attribution (CC BY / CC BY-SA / no known restrictions),
since screenshots of the grid are committed to ``docs/screenshots``. Without
coco-mini (``NCL_COCO_MINI`` overrides where it is looked for), the 12
scikit-image photos of ``tests/conftest.py`` are used.
"""
import json
import os
import pathlib

import numpy as np

import fiftyone as fo

REPO = pathlib.Path(__file__).resolve().parents[2]
COCO_MINI = pathlib.Path(os.environ.get("NCL_COCO_MINI", REPO.parent / "shared" / "data" / "coco-mini"))

# COCO licence ids: 4 CC BY 2.0, 5 CC BY-SA 2.0, 7 no known copyright restrictions
REDISTRIBUTABLE_LICENSES = (4, 5, 7)
SWAP_FRACTION = 0.25
SPACE = "all-MiniLM-L6-v2 (captions; images via their other captions)"


def _clean(text):
    return " ".join(text.split())


def coco_mini_records(root=COCO_MINI):
    """``(filepath, caption, other captions, credit)`` of the redistributable
    coco-mini photos, or None when coco-mini is not there."""
    pairs = root / "pairs.jsonl"
    if not pairs.is_file():
        return None
    records = []
    with open(pairs) as f:
        for line in f:
            row = json.loads(line)
            if row["license_id"] not in REDISTRIBUTABLE_LICENSES:
                continue
            path = root / row["file"]
            if not path.is_file():
                continue
            captions = [_clean(c) for c in row["captions"]]
            credit = "%s (%s), %s" % (row["file"], row["license_name"], row["flickr_url"])
            records.append((str(path), captions[0], captions[1:], credit))
    return records or None


def skimage_records(photos):
    """The same shape from the ``skimage_photos`` fixture (one caption each:
    the image side is embedded from that caption, before any swap)."""
    return [(path, caption, [caption], "scikit-image %s" % pathlib.Path(path).name) for path, caption in photos]


def swapped_indices(n, fraction=SWAP_FRACTION, seed=0):
    """Indices whose captions are rotated among themselves (a derangement)."""
    k = max(2, int(round(n * fraction)))
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def build_dataset(name, records):
    """Creates the persistent dataset ``name`` from ``records``.

    Fields: ``caption`` (StringField; swapped where ``mismatch`` is True),
    ``true_caption``, ``mismatch`` (BoolField, the ground truth),
    ``image_embedding`` and ``caption_embedding`` (VectorFields, one space).
    """
    from fiftyone_ncl.encoders.text import SentenceTransformerEncoder

    n = len(records)
    captions = [r[1] for r in records]
    swapped = swapped_indices(n)
    shown = list(captions)
    for dst, src in zip(swapped, np.roll(swapped, 1)):
        shown[dst] = captions[src]
    mismatch = np.zeros(n, bool)
    mismatch[swapped] = True

    encoder = SentenceTransformerEncoder(device="cpu")
    others = [c for r in records for c in r[2]]
    counts = [len(r[2]) for r in records]
    other_emb = encoder.embed_texts(others, progress=False)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    image_emb = np.stack([other_emb[s:s + c].mean(axis=0) for s, c in zip(starts, counts)])
    caption_emb = encoder.embed_texts(shown, progress=False)

    dataset = fo.Dataset(name)
    dataset.persistent = True
    dataset.add_samples(
        [
            fo.Sample(
                filepath=r[0],
                caption=shown[i],
                true_caption=captions[i],
                mismatch=bool(mismatch[i]),
                image_embedding=image_emb[i].astype(np.float32),
                caption_embedding=caption_emb[i].astype(np.float32),
            )
            for i, r in enumerate(records)
        ],
        progress=False,
    )
    for field in ("image_embedding", "caption_embedding"):
        f = dataset.get_field(field)
        f.info = {"ncl_space": SPACE}
        f.save()
    dataset.info["credits"] = [r[3] for r in records]
    dataset.save()
    return dataset
