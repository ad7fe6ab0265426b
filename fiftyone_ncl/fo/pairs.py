"""Reading image-caption pairs from a FiftyOne collection, with the checks
that turn bad input into an error naming the field, sample or file."""
from dataclasses import dataclass

import numpy as np

import fiftyone.core.fields as fof

_SHOW = 5  # how many offending sample ids an error message lists


@dataclass
class CollectionPairs:
    """Captions of a collection, flattened to one row per pair.

    Attributes:
        caption_field: the caption field
        is_list: whether the field holds a list of captions per sample
        sample_ids: (N,) sample ids, in collection order
        filepaths: (N,) media paths
        captions: (P,) caption strings
        image_index: (P,) sample row of each caption
        caption_position: (P,) index of the caption in its sample's list
    """

    caption_field: str
    is_list: bool
    sample_ids: list
    filepaths: list
    captions: list
    image_index: np.ndarray
    caption_position: np.ndarray

    @property
    def n_images(self):
        return len(self.sample_ids)

    @property
    def n_pairs(self):
        return len(self.captions)

    def per_sample(self, values):
        """Splits a (P,) per-pair array into one list per sample (for list
        caption fields), in sample order."""
        values = np.asarray(values)
        bounds = np.searchsorted(self.image_index, np.arange(self.n_images + 1))
        return [values[bounds[i] : bounds[i + 1]] for i in range(self.n_images)]


def caption_fields(samples):
    """Names of the collection's caption-like fields: strings or lists of strings."""
    names = []
    for name, field in samples.get_field_schema().items():
        if _caption_kind(field) is not None and name not in ("filepath", "tags"):
            names.append(name)
    return names


def _caption_kind(field):
    if isinstance(field, fof.StringField):
        return "string"
    if isinstance(field, fof.ListField) and isinstance(field.field, fof.StringField):
        return "list"
    return None


def caption_kind(samples, caption_field):
    """``"string"`` or ``"list"``: the kind of caption field; a ValueError
    naming the field when it is missing or not text."""
    field = samples.get_field(caption_field)
    if field is None:
        options = caption_fields(samples)
        raise ValueError(
            "caption field %r does not exist on %r; its text fields are: %s"
            % (caption_field, samples._dataset.name, ", ".join(options) or "none")
        )
    kind = _caption_kind(field)
    if kind is None:
        raise ValueError(
            "caption field %r is a %s, not a string field or a list of strings"
            % (caption_field, type(field).__name__)
        )
    return kind


def check_collection_size(samples):
    """Raises a ValueError for an empty or one-sample collection."""
    n = len(samples)
    if n == 0:
        raise ValueError("the collection is empty: there are no pairs to score")
    if n == 1:
        raise ValueError(
            "the collection has only one sample: scoring needs at least 2 images, "
            "since every method compares a pair with the others"
        )


def read_pairs(samples, caption_field):
    """Reads the pairs of a collection.

    Args:
        samples: a FiftyOne collection
        caption_field: a StringField, or a ListField of strings

    Returns:
        a :class:`CollectionPairs`

    Raises:
        ValueError: if the collection is empty or has one sample, the field is
            missing or not text, or a caption is None or blank
    """
    check_collection_size(samples)
    kind = caption_kind(samples, caption_field)

    sample_ids, filepaths, values = samples.values(["id", "filepath", caption_field])
    bad = []
    captions, image_index, position = [], [], []
    for row, (sid, value) in enumerate(zip(sample_ids, values)):
        items = value if kind == "list" else [value]
        if not items or any(c is None or not str(c).strip() for c in items):
            bad.append(sid)
            continue
        for pos, caption in enumerate(items):
            captions.append(" ".join(str(caption).split()))
            image_index.append(row)
            position.append(pos)
    if bad:
        raise ValueError(
            "caption field %r is None or blank on %d of %d samples (e.g. %s); fill them "
            "or leave them out, e.g. samples.match(F(%r) != None)"
            % (caption_field, len(bad), len(sample_ids), ", ".join(bad[:_SHOW]), caption_field)
        )
    return CollectionPairs(
        caption_field=caption_field,
        is_list=kind == "list",
        sample_ids=list(sample_ids),
        filepaths=list(filepaths),
        captions=captions,
        image_index=np.asarray(image_index, dtype=np.int64),
        caption_position=np.asarray(position, dtype=np.int64),
    )
