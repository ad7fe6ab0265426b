"""coco-mini: 258 real COCO photos with 5 human captions each and their COCO
categories, read in place from ``../shared/data/coco-mini`` beside the
repository (never copied)."""
import json
import os
from dataclasses import dataclass


@dataclass
class CocoMiniRecord:
    """One photo: its file, its human captions (whitespace-normalised), its
    COCO categories, and licence and credit data."""

    filepath: str
    captions: list
    categories: list
    license_id: int
    credit: str


def coco_mini_root():
    """``../shared/data/coco-mini`` beside the repository, or
    ``$NCL_COCO_MINI``, if present; None otherwise."""
    env = os.environ.get("NCL_COCO_MINI")
    here = os.path.dirname(os.path.abspath(__file__))
    root = env or os.path.normpath(os.path.join(here, "..", "..", "..", "shared", "data", "coco-mini"))
    return root if os.path.isfile(os.path.join(root, "pairs.jsonl")) else None


def load_coco_mini(root=None, licenses=None):
    """The coco-mini photos as :class:`CocoMiniRecord` objects.

    Args:
        root (None): the coco-mini folder (default :func:`coco_mini_root`)
        licenses (None): keep only these COCO licence ids (e.g. the ones that
            allow redistribution, for screenshots)

    Raises:
        FileNotFoundError: if the data is not there
    """
    root = root or coco_mini_root()
    if root is None or not os.path.isfile(os.path.join(root, "pairs.jsonl")):
        raise FileNotFoundError("coco-mini not found beside the repository (../shared/data/coco-mini)")
    records = []
    with open(os.path.join(root, "pairs.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if licenses is not None and row["license_id"] not in licenses:
                continue
            records.append(
                CocoMiniRecord(
                    filepath=os.path.join(root, row["file"]),
                    captions=[" ".join(c.split()) for c in row["captions"]],
                    categories=list(row["categories"]),
                    license_id=int(row["license_id"]),
                    credit="%s (%s), %s" % (row["file"], row["license_name"], row["flickr_url"]),
                )
            )
    return records
