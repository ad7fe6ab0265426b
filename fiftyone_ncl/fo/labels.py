"""Reading a person's judgements of pairs (the ``labels`` argument of
:func:`fiftyone_ncl.compute_correspondence`) as one value per pair:
1.0 = the caption matches, 0.0 = it does not, NaN = nobody said."""
import numpy as np

import fiftyone.core.fields as fof

_SHOW = 5


def read_pair_labels(samples, pairs, labels):
    """The (P,) judgements of the collection's pairs.

    Args:
        samples: the collection scored
        pairs: its :class:`~fiftyone_ncl.fo.pairs.CollectionPairs`
        labels: one of

            * the name of a BooleanField: True where the sample's caption
              matches, False where it does not, None where unknown (for a
              list caption field every caption of the sample gets the value),
              or of a ListField of booleans parallel to a list caption field
            * a dict of sample tags ``{"matched": tag(s), "mismatched":
              tag(s)}`` (either key may be left out): a sample carrying a
              ``mismatched`` tag is wrong, one carrying a ``matched`` tag is
              right (a sample with both is refused)
            * an array of one value per pair (P,): 1 / True right, 0 / False
              wrong, -1 / NaN / None unknown

    Returns:
        (P,) float64 array of 1.0, 0.0 and NaN
    """
    if isinstance(labels, str):
        return _from_field(samples, pairs, labels)
    if isinstance(labels, dict):
        return _from_tags(samples, pairs, labels)
    try:
        values = [np.nan if v is None else v for v in labels]
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            "labels must be a BooleanField name, a dict of tags {'matched': ..., 'mismatched': ...} or one "
            "value per pair (1 right, 0 wrong, -1 unknown), got %r" % (type(labels).__name__,)
        ) from None
    if arr.shape != (pairs.n_pairs,):
        raise ValueError("labels must give one value per pair (%d), got shape %s" % (pairs.n_pairs, arr.shape))
    known = np.isfinite(arr) & (arr >= 0)
    if not np.all(np.isin(arr[known], (0.0, 1.0))):
        raise ValueError("labels must be 1 (right), 0 (wrong) or -1 / NaN (unknown)")
    return np.where(known, arr, np.nan)


def _from_field(samples, pairs, name):
    field = samples.get_field(name)
    if field is None:
        raise ValueError("labels field %r does not exist on %r" % (name, samples._dataset.name))
    per_caption = isinstance(field, fof.ListField) and isinstance(field.field, fof.BooleanField)
    if not (isinstance(field, fof.BooleanField) or per_caption):
        raise ValueError("labels field %r is a %s; expected a BooleanField (True = the caption matches) or a "
                         "list of booleans parallel to the captions" % (name, type(field).__name__))
    if per_caption and not pairs.is_list:
        raise ValueError("labels field %r holds lists but caption field %r holds one caption per sample"
                         % (name, pairs.caption_field))
    values = samples._dataset.select(pairs.sample_ids, ordered=True).values(name)
    counts = np.bincount(pairs.image_index, minlength=pairs.n_images)
    out = np.full(pairs.n_pairs, np.nan)
    bad = []
    start = 0
    for sid, value, n in zip(pairs.sample_ids, values, counts):
        if per_caption:
            if value is not None and len(value) != n:
                bad.append(sid)
            elif value is not None:
                out[start : start + n] = [np.nan if v is None else float(bool(v)) for v in value]
        elif value is not None:
            out[start : start + n] = float(bool(value))
        start += n
    if bad:
        raise ValueError("labels field %r has %s values where the sample has another number of captions "
                         "(e.g. %s)" % (name, len(bad), ", ".join(bad[:_SHOW])))
    return out


def _tags(value, key):
    if value is None:
        return set()
    if isinstance(value, str):
        return {value}
    if isinstance(value, (list, tuple, set)) and all(isinstance(t, str) for t in value):
        return set(value)
    raise ValueError("labels[%r] must be a tag or a list of tags, got %r" % (key, value))


def _from_tags(samples, pairs, labels):
    unknown = sorted(set(labels) - {"matched", "mismatched"})
    if unknown:
        raise ValueError("labels as tags takes the keys 'matched' and 'mismatched', got %s" % ", ".join(unknown))
    right, wrong = _tags(labels.get("matched"), "matched"), _tags(labels.get("mismatched"), "mismatched")
    if not right and not wrong:
        raise ValueError("labels as tags needs a 'matched' or a 'mismatched' tag")
    tags = samples._dataset.select(pairs.sample_ids, ordered=True).values("tags")
    per_sample = np.full(pairs.n_images, np.nan)
    both = []
    for i, (sid, t) in enumerate(zip(pairs.sample_ids, tags)):
        t = set(t or ())
        is_right, is_wrong = bool(t & right), bool(t & wrong)
        if is_right and is_wrong:
            both.append(sid)
        elif is_right or is_wrong:
            per_sample[i] = 1.0 if is_right else 0.0
    if both:
        raise ValueError("%d samples carry both a 'matched' and a 'mismatched' tag (e.g. %s)"
                         % (len(both), ", ".join(both[:_SHOW])))
    return per_sample[pairs.image_index]

