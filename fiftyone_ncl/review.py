"""Reviewing a run: tag suspects, look at them, accept or undo corrections."""
import fiftyone.core.fields as fof
from fiftyone import ViewField as F

from fiftyone_ncl.fo.embeddings import INFO_CAPTION_FIELD
from fiftyone_ncl.fo.fields import field_name
from fiftyone_ncl.fo.runs import check_run
from fiftyone_ncl.fo.writer import FieldWriter

DEFAULT_TAG = "suspected_mismatch"
ORIGINAL_SUFFIX = "_original"


def tag_mismatches(samples, run_key="ncl", threshold=None, top_k=None, tag=DEFAULT_TAG):
    """Tags the samples a run judged mismatched.

    Args:
        samples: a dataset or view (only its samples are tagged)
        run_key ("ncl"): the run
        threshold (None): tag samples whose confidence is below this; default
            the run's threshold
        top_k (None): instead, tag the ``top_k`` lowest-confidence samples
        tag ("suspected_mismatch"): the tag

    Returns:
        the number of samples selected (all now carry the tag)
    """
    config = check_run(samples, run_key)
    conf = field_name(run_key, "confidence")
    if top_k is not None and threshold is not None:
        raise ValueError("pass either threshold or top_k, not both")
    if top_k is not None:
        if int(top_k) < 1:
            raise ValueError("top_k must be a positive integer, got %r" % top_k)
        selected = samples.exists(conf).sort_by(conf).limit(int(top_k))
    else:
        thr = config.threshold if threshold is None else float(threshold)
        selected = samples.match(F(conf) < thr)
    selected.tag_samples(tag)
    return len(selected)


def untag_mismatches(samples, tag=DEFAULT_TAG):
    """Removes ``tag`` from the samples; returns how many carried it."""
    tagged = samples.match_tags(tag)
    n = len(tagged)
    tagged.untag_samples(tag)
    return n


def suspects_view(samples, run_key="ncl", threshold=None):
    """The flagged samples of a run, lowest confidence first."""
    config = check_run(samples, run_key)
    conf = field_name(run_key, "confidence")
    thr = config.threshold if threshold is None else float(threshold)
    return samples.match(F(conf) < thr).sort_by(conf)


def save_suspects_view(samples, run_key="ncl", name=None, threshold=None):
    """Saves :func:`suspects_view` as a named view of the dataset (replacing
    one of the same name); returns the name."""
    name = name or "%s-suspects" % run_key.replace("_", "-")
    view = suspects_view(samples, run_key, threshold=threshold)
    samples._dataset.save_view(
        name,
        view,
        description="Pairs flagged by run '%s', lowest confidence first" % run_key,
        overwrite=True,
    )
    return name


def _invalidate_text_caches(writer, dataset, caption_field, ids):
    """Cached caption embeddings of changed captions are stale: clear them."""
    for name, f in dataset.get_field_schema().items():
        if (f.info or {}).get(INFO_CAPTION_FIELD) == caption_field:
            writer.set(name, {i: None for i in ids})


def accept_suggestions(samples, run_key="ncl", tag=DEFAULT_TAG):
    """Replaces flagged captions with the run's suggestion.

    The caption before the first accepted change is kept in
    ``{caption_field}_original`` (undo with :func:`restore_captions`). For
    list caption fields the captions flagged noisy are removed and the
    suggestion is appended. The suspect tag is removed from changed samples.

    Args:
        samples: the samples to correct (e.g. the App's selection); those
            without a suggestion are left alone
        run_key ("ncl"): the run whose suggestions to accept
        tag ("suspected_mismatch"): tag to remove from corrected samples

    Returns:
        the number of samples changed
    """
    config = check_run(samples, run_key)
    dataset = samples._dataset
    caption_field = config.caption_field
    original = caption_field + ORIGINAL_SUFFIX
    suggestion = field_name(run_key, "suggestion")
    view = samples.exists(suggestion)
    if not len(view):
        return 0
    fields = ["id", caption_field, suggestion]
    if config.caption_list:
        fields.append(field_name(run_key, "caption_noisy"))
    values = view.values(fields)
    ids, captions, suggestions = values[0], values[1], values[2]
    has_original = dataset.get_field(original) is not None
    originals = view.values(original) if has_original else [None] * len(ids)

    new_captions, keep = {}, {}
    for i, sid in enumerate(ids):
        if config.caption_list:
            flags = values[3][i] or []
            kept = [c for c, bad in zip(captions[i], flags) if not bad]
            new_captions[sid] = kept + ([suggestions[i]] if suggestions[i] not in kept else [])
        else:
            new_captions[sid] = suggestions[i]
        if originals[i] is None:
            keep[sid] = captions[i]

    caption_type = dataset.get_field(caption_field)
    with FieldWriter(samples) as writer:
        if config.caption_list:
            writer.set(original, keep, fof.ListField, subfield=fof.StringField)
        else:
            writer.set(original, keep, type(caption_type))
        writer.set(caption_field, new_captions)
        _invalidate_text_caches(writer, dataset, caption_field, ids)
        writer.commit()
    dataset.select(ids).untag_samples(tag)
    return len(ids)


def restore_captions(samples, caption_field="caption"):
    """Undoes :func:`accept_suggestions`: puts ``{caption_field}_original``
    back where it is set and clears it; returns the number of samples."""
    original = caption_field + ORIGINAL_SUFFIX
    dataset = samples._dataset
    if dataset.get_field(original) is None:
        return 0
    view = samples.exists(original)
    ids, values = view.values(["id", original])
    if not ids:
        return 0
    with FieldWriter(samples) as writer:
        writer.set(caption_field, dict(zip(ids, values)))
        writer.set(original, {i: None for i in ids})
        _invalidate_text_caches(writer, dataset, caption_field, ids)
        writer.commit()
    return len(ids)
