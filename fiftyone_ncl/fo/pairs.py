"""Reading image-caption pairs from a FiftyOne collection, with the checks
that turn bad input into an error naming the field, sample or file."""
import hashlib
import json
import unicodedata
from dataclasses import dataclass

import numpy as np

import fiftyone.core.fields as fof

_SHOW = 5  # how many offending sample ids an error message lists
# characters that show nothing though Unicode does not class them as spaces
_FILLERS = frozenset("\u115f\u1160\u2800\u3164\uffa0")
# view stages that select or order samples but never change their values
_SAFE_STAGES = frozenset((
    "Exclude", "ExcludeBy", "Exists", "GroupBy", "Limit", "Match", "MatchTags", "Select", "SelectBy",
    "Shuffle", "Skip", "SortBy", "SortBySimilarity", "Take", "SelectGroupSlices",
))


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
        caption_hash: (N,) fingerprint of each sample's caption value (to
            tell later whether the captions changed)
    """

    caption_field: str
    is_list: bool
    sample_ids: list
    filepaths: list
    captions: list
    image_index: np.ndarray
    caption_position: np.ndarray
    caption_hash: np.ndarray = None

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


def is_blank(text):
    """True when ``text`` shows nothing: empty, spaces, or only invisible
    characters (zero-width spaces and joiners, control characters...)."""
    return not any(unicodedata.category(ch)[0] not in "CZ" and ch not in _FILLERS for ch in str(text))


def caption_hashes(values):
    """A 63-bit fingerprint of each caption value (a string or a list)."""
    out = []
    for v in values:
        digest = hashlib.blake2b(json.dumps(v, ensure_ascii=False).encode(), digest_size=8).digest()
        out.append(int.from_bytes(digest, "little") & 0x7FFFFFFFFFFFFFFF)
    return out


def check_collection_kind(samples):
    """Raises a ValueError for collections whose samples are not image-caption
    pairs one by one: grouped datasets (only the active slice would be seen)."""
    if samples.media_type == "group":
        slices = ", ".join(sorted(samples.group_media_types)) if hasattr(samples, "group_media_types") else ""
        raise ValueError(
            "%r is a grouped dataset: only its active slice %r would be scored; choose the slice to "
            "score, e.g. samples.select_group_slices(%r) (slices: %s)"
            % (samples._dataset.name, samples.group_slice, samples.group_slice, slices)
        )


def _check_view_captions(samples, caption_field, sample_ids, values):
    """Raises a ValueError when the collection shows captions other than the
    stored ones (a view that slices, filters or rewrites them): results would
    be written against captions the dataset does not hold."""
    stages = getattr(samples, "_stages", None)
    if not stages or all(type(st).__name__ in _SAFE_STAGES for st in stages):
        return
    stored = samples._dataset.select(sample_ids, ordered=True).values(caption_field)
    changed = [sid for sid, a, b in zip(sample_ids, values, stored) if a != b]
    if changed:
        raise ValueError(
            "the view changes caption field %r on %d of %d samples (e.g. %s: %d captions shown, %d stored); "
            "results are written per stored caption, so score a view that does not slice, filter or "
            "rewrite %r"
            % (caption_field, len(changed), len(sample_ids), changed[0],
               *(len(v) if isinstance(v, (list, tuple)) else 1
                 for v in (values[sample_ids.index(changed[0])], stored[sample_ids.index(changed[0])])),
               caption_field)
        )


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
    check_collection_kind(samples)
    kind = caption_kind(samples, caption_field)

    sample_ids, filepaths, values = samples.values(["id", "filepath", caption_field])
    if len(set(sample_ids)) != len(sample_ids):
        seen, dup = set(), []
        for sid in sample_ids:
            if sid in seen:
                dup.append(sid)
            seen.add(sid)
        raise ValueError(
            "the collection holds %d samples more than once (e.g. %s), as concat() of overlapping "
            "views makes; each sample has one result, so score a view that holds each sample once"
            % (len(dup), ", ".join(dup[:_SHOW]))
        )
    _check_view_captions(samples, caption_field, list(sample_ids), values)
    bad = []
    captions, image_index, position = [], [], []
    for row, (sid, value) in enumerate(zip(sample_ids, values)):
        items = value if kind == "list" else [value]
        if not items or any(c is None or is_blank(c) for c in items):
            bad.append(sid)
            continue
        for pos, caption in enumerate(items):
            captions.append(" ".join(str(caption).split()))
            image_index.append(row)
            position.append(pos)
    if bad:
        raise ValueError(
            "caption field %r is None or blank on %d of %d samples (e.g. %s); fill them "
            "or leave them out, e.g. samples.match(F(%r) != None) (blank: only spaces or invisible "
            "characters such as zero-width spaces)"
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
        caption_hash=np.asarray(caption_hashes(values), dtype=np.int64),
    )
