"""Reviewing a run: tag suspects, look at them, accept or undo corrections.

Only samples the run scored are ever selected (a sample without a confidence
is never "below the threshold"); tags and saved views a run made are recorded
on it and go with it (:func:`~fiftyone_ncl.delete_run`); suggestions are
refused on samples whose captions changed since the run scored them.
"""
import math
import numbers
import warnings

import fiftyone.core.fields as fof
from fiftyone import ViewField as F

from fiftyone_ncl.fo.embeddings import INFO_CAPTION_FIELD
from fiftyone_ncl.fo.fields import field_name
from fiftyone_ncl.fo.journal import run_lock
from fiftyone_ncl.fo.runs import Correspondence, check_run, stale_samples
from fiftyone_ncl.fo.writer import FieldWriter

DEFAULT_TAG = "suspected_mismatch"
ORIGINAL_SUFFIX = "_original"


def tag_mismatches(samples, run_key="ncl", threshold=None, top_k=None, tag=DEFAULT_TAG):
    """Tags the samples a run judged mismatched.

    Args:
        samples: a dataset or view (only its samples are tagged)
        run_key ("ncl"): the run
        threshold (None): tag samples whose confidence is below this; default
            the run's own decision (``{key}_noisy``, whatever its mode:
            :func:`fiftyone_ncl.decide` changes it)
        top_k (None): instead, tag the ``top_k`` lowest-confidence samples
        tag ("suspected_mismatch"): the tag

    Returns:
        the number of samples selected (all now carry the tag)
    """
    check_run(samples, run_key)  # refuses an unknown or unfinished run
    conf = field_name(run_key, "confidence")
    if top_k is not None and threshold is not None:
        raise ValueError("pass either threshold or top_k, not both")
    if not isinstance(tag, str) or not tag.strip():
        raise ValueError("tag must be a non-empty string, got %r" % (tag,))
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
            raise ValueError("top_k must be a whole number >= 1, got %r" % (top_k,))
        selected = _scored(samples, run_key).sort_by(conf).limit(int(top_k))
    else:
        selected = _flagged(samples, run_key, threshold)
    ids = selected.values("id")
    with run_lock(samples, run_key, "tag_mismatches"):
        selected.tag_samples(tag)
        _record(samples, run_key, tagged={tag: ids})
    return len(ids)


def check_threshold(threshold):
    """``threshold`` as a float in [0, 1]; a ValueError otherwise (NaN, a
    string, 5...)."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) \
            or math.isnan(float(threshold)) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError("threshold must be a number in [0, 1], got %r" % (threshold,))
    return float(threshold)


def _flagged(samples, run_key, threshold=None):
    """The samples the run flagged (its ``noisy`` field), or those whose
    confidence is below ``threshold`` when one is given."""
    if threshold is None:
        return _scored(samples, run_key).match(F(field_name(run_key, "noisy")) == True)  # noqa: E712
    return _scored(samples, run_key).match(F(field_name(run_key, "confidence")) < check_threshold(threshold))


def _scored(samples, run_key):
    """The samples the run scored (its confidence field is set): a sample
    outside the run (another view, added later) is never selected, since a
    missing value sorts below every number in MongoDB."""
    return samples.exists(field_name(run_key, "confidence"))


def _record(samples, run_key, tagged=None, saved_view=None):
    """Notes on the run the tags and saved views it made, so that they go
    with it."""
    dataset = samples._dataset
    if tagged:
        results = dataset.load_brain_results(run_key)
        for tag, ids in tagged.items():
            known = results.tagged.get(tag, [])
            results.tagged[tag] = known + sorted(set(ids) - set(known))
        Correspondence.save_run_results(dataset, run_key, results)
    if saved_view:
        config = dataset.get_brain_info(run_key).config
        views = [v for v in config.saved_views if (v["name"] if isinstance(v, dict) else v) != saved_view["name"]]
        config.saved_views = views + [saved_view]
        Correspondence.update_run_config(dataset, run_key, config)


def untag_mismatches(samples, tag=DEFAULT_TAG):
    """Removes ``tag`` from the samples; returns how many carried it."""
    tagged = samples.match_tags(tag)
    n = len(tagged)
    tagged.untag_samples(tag)
    return n


def suspects_view(samples, run_key="ncl", threshold=None):
    """The flagged samples of a run (its decision, or confidence below
    ``threshold``), surest first: by margin to the decision's cut where the
    run has one (confidence saturates at 0 for many pairs), else by
    confidence."""
    check_run(samples, run_key)
    margin = field_name(run_key, "margin")
    order = margin if samples._dataset.has_sample_field(margin) else field_name(run_key, "confidence")
    return _flagged(samples, run_key, threshold).sort_by(order)


def save_suspects_view(samples, run_key="ncl", name=None, threshold=None):
    """Saves :func:`suspects_view` as a named view of the dataset (replacing
    one of the same name); returns the name."""
    name = name or "%s-suspects" % run_key.replace("_", "-")
    view = suspects_view(samples, run_key, threshold=threshold)
    with run_lock(samples, run_key, "save_suspects_view"):
        samples._dataset.save_view(
            name,
            view,
            description="Pairs flagged by run '%s', lowest confidence first" % run_key,
            overwrite=True,
        )
        _record(samples, run_key, saved_view={"name": name, "threshold": threshold})
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

    Suggestions apply to the captions the run scored: a sample whose
    captions changed since (an earlier accept, an edit) is refused with an
    error naming it, since the run's per-caption flags would hit the wrong
    captions; re-run the method first. A single caption that already is the
    suggestion is left as it is.

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

    stale = set(stale_samples(samples, run_key, ids))
    if not config.caption_list:  # already accepted: nothing to do there
        done = {sid for sid, c, s in zip(ids, captions, suggestions) if sid in stale and c == s}
        stale -= done
    else:
        done = set()
    if stale:
        first = next(i for i in ids if i in stale)
        raise ValueError(
            "the captions of %d samples changed since run %r scored them (e.g. %s%s); its suggestions%s "
            "no longer apply there: re-run compute_correspondence(..., run_key=%r, overwrite=True) first"
            % (len(stale), run_key, first, ", by an earlier accept_suggestions" if has_original else "",
               " and per-caption flags" if config.caption_list else "", run_key)
        )

    new_captions, keep = {}, {}
    for i, sid in enumerate(ids):
        if sid in done:
            continue
        if config.caption_list:
            flags = values[3][i] or []
            kept = [c for c, bad in zip(captions[i], flags) if not bad]
            new_captions[sid] = kept + ([suggestions[i]] if suggestions[i] not in kept else [])
        else:
            new_captions[sid] = suggestions[i]
        if originals[i] is None:
            keep[sid] = captions[i]

    if not new_captions:
        return 0
    ids = list(new_captions)
    caption_type = dataset.get_field(caption_field)
    with run_lock(samples, run_key, "accept_suggestions"), \
            run_lock(samples, _captions_key(caption_field), "accept_suggestions") as journal:
        with FieldWriter(samples, journal) as writer:
            if config.caption_list:
                writer.set(original, keep, fof.ListField, subfield=fof.StringField)
            else:
                writer.set(original, keep, type(caption_type))
            writer.set(caption_field, new_captions)
            _invalidate_text_caches(writer, dataset, caption_field, ids)
            writer.commit()
    dataset.select(ids).untag_samples(tag)
    _warn_user_text_field(dataset, config, run_key, len(ids))
    return len(ids)


def _warn_user_text_field(dataset, config, run_key, n):
    """Caption embeddings the user stored cannot be recomputed here: say
    that they now describe the old captions."""
    field = str((config.sources or {}).get("text", "")).split(" ")[0]
    f = dataset.get_field(field) if field else None
    if f is not None and not (f.info or {}).get(INFO_CAPTION_FIELD):
        warnings.warn(
            "caption embeddings field %r (used by run %r) was filled outside fiftyone-ncl and still holds "
            "the embeddings of the old captions of the %d changed samples; recompute them before scoring again"
            % (field, run_key, n),
            UserWarning,
            stacklevel=3,
        )


def _captions_key(caption_field):
    """Lock name of a caption field (accept and restore both write it)."""
    return "captions:%s" % caption_field


def restore_captions(samples, caption_field=None):
    """Undoes :func:`accept_suggestions`: puts ``{caption_field}_original``
    back where it is set and clears it; returns the number of samples.

    Args:
        samples: the dataset or view to restore
        caption_field (None): the caption field; None = the one field that
            has a ``{field}_original`` beside it (an error names them when
            there are several)
    """
    dataset = samples._dataset
    schema = dataset.get_field_schema()
    if caption_field is None:
        accepted = [f[: -len(ORIGINAL_SUFFIX)] for f in schema
                    if f.endswith(ORIGINAL_SUFFIX) and f[: -len(ORIGINAL_SUFFIX)] in schema]
        if not accepted:
            return 0
        if len(accepted) > 1:
            raise ValueError("suggestions were accepted on several caption fields (%s); pass caption_field"
                             % ", ".join(accepted))
        caption_field = accepted[0]
    elif caption_field not in schema:
        raise ValueError("caption field %r does not exist on %r" % (caption_field, dataset.name))
    original = caption_field + ORIGINAL_SUFFIX
    if dataset.get_field(original) is None:
        return 0
    view = samples.exists(original)
    ids, values = view.values(["id", original])
    if not ids:
        return 0
    with run_lock(samples, _captions_key(caption_field), "restore_captions") as journal:
        with FieldWriter(samples, journal) as writer:
            writer.set(caption_field, dict(zip(ids, values)))
            writer.set(original, {i: None for i in ids})
            _invalidate_text_caches(writer, dataset, caption_field, ids)
            writer.commit()
    return len(ids)
