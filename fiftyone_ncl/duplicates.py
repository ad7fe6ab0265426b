"""Reviewing a run's duplicate groups: pipeline bugs fixed a group at a time.

Every run writes ``{key}_duplicate_group`` (see
:func:`fiftyone_ncl.compute_correspondence`): ``caption-<i>`` for a caption
pasted onto many unrelated images ("stock photo, all rights reserved", an
unfilled template), ``image-<i>`` for copies of one image whose captions
contradict each other. Here a curator lists the groups, opens one as a view,
and fixes it at once: tags its samples, or replaces (or removes) the grouped
captions, undoable like accepted suggestions
(:func:`fiftyone_ncl.restore_captions`).
"""
import fiftyone.core.fields as fof
from fiftyone import ViewField as F

from fiftyone_ncl.fo.fields import field_name
from fiftyone_ncl.fo.journal import run_lock
from fiftyone_ncl.fo.pairs import is_blank
from fiftyone_ncl.fo.runs import check_run, stale_samples
from fiftyone_ncl.fo.writer import FieldWriter
from fiftyone_ncl.review import ORIGINAL_SUFFIX, _captions_key, _invalidate_text_caches, _record

DUPLICATE_TAG = "duplicate_caption"


def duplicate_groups(samples, run_key="ncl"):
    """The duplicate groups a run found, largest first.

    Returns:
        a list of dicts: ``id`` (the value of ``{key}_duplicate_group``),
        ``kind`` (``"caption"``: one caption pasted onto unrelated images;
        ``"image"``: copies of one image with contradicting captions),
        ``size`` (images), ``pairs`` (captions), ``caption`` (the shared
        caption) or ``captions`` (some of the contradicting ones), ``reason``
        and the statistic behind it (``coherence``: 0 = the images are as
        unrelated as random ones; ``agreement``: 0 = the captions agree no
        more than random ones). A run written before duplicate groups
        existed has none. The run's info lists at most 1000 groups; the
        field holds every group
    """
    check_run(samples, run_key)
    results = samples.load_brain_results(run_key)
    return list(((results.info or {}).get("duplicates") or {}).get("groups") or [])


def _group_field(samples, run_key, config):
    name = field_name(run_key, "caption_duplicate_group" if config.caption_list else "duplicate_group")
    if samples._dataset.get_field(name) is None:
        raise ValueError(
            "run %r has no duplicate groups (field %s is missing; runs written before duplicate "
            "groups existed have none): re-run it with overwrite=True" % (run_key, name)
        )
    return name


def _as_groups(samples, name, group, config, required):
    if group is None:
        if required:
            raise ValueError("pass the group(s) to change, e.g. group='caption-0' (see duplicate_groups())")
        return None
    groups = [group] if isinstance(group, str) else list(group)
    if not groups or not all(isinstance(g, str) for g in groups):
        raise ValueError("group must be a group id such as 'caption-0' or a list of them, got %r" % (group,))
    known = set(samples._dataset.distinct(name)) - {"", None}
    unknown = [g for g in groups if g not in known]
    if unknown:
        some = sorted(known)[:8]
        raise ValueError("run has no duplicate group %s; its groups: %s"
                         % (", ".join(map(repr, unknown)), ", ".join(some) or "none"))
    return groups


def duplicate_group_view(samples, run_key="ncl", group=None):
    """The samples of one duplicate group (or of several, or of every group
    when ``group`` is None, ordered by group), as a view.

    Args:
        samples: a dataset or view
        run_key ("ncl"): the run
        group (None): a group id (``"caption-0"``), a list of them, or None
            for all
    """
    config = check_run(samples, run_key)
    name = _group_field(samples, run_key, config)
    groups = _as_groups(samples, name, group, config, required=False)
    per_sample = field_name(run_key, "duplicate_group")
    if groups is None:
        if config.caption_list:
            return samples.exists(name).sort_by(per_sample)
        return samples.exists(per_sample).sort_by(per_sample)
    if config.caption_list:
        return samples.match(F(name).contains(groups))
    return samples.match(F(per_sample).is_in(groups))


def tag_duplicate_group(samples, run_key="ncl", group=None, tag=DUPLICATE_TAG):
    """Tags the samples of duplicate group(s) (all groups when ``group`` is
    None); the tags are recorded on the run and removed with it
    (:func:`fiftyone_ncl.delete_run`); :func:`fiftyone_ncl.untag_mismatches`
    with ``tag=`` removes them. Returns the number of samples tagged."""
    if not isinstance(tag, str) or not tag.strip():
        raise ValueError("tag must be a non-empty string, got %r" % (tag,))
    view = duplicate_group_view(samples, run_key, group)
    ids = view.values("id")
    with run_lock(samples, run_key, "tag_duplicate_group"):
        view.tag_samples(tag)
        _record(samples, run_key, tagged={tag: ids})
    return len(ids)


def replace_duplicate_captions(samples, run_key="ncl", group=None, caption=None):
    """Replaces the grouped captions of duplicate group(s) with ``caption``,
    or removes them (``caption=None``): a pasted caption says nothing about
    its images, so the usual fix is to drop it (the samples then have no
    caption until someone writes one; a later run asks to leave them out).

    For a list caption field only the grouped captions of each sample are
    replaced (or removed); its other captions stay. The caption before the
    first change is kept in ``{caption_field}_original``:
    :func:`fiftyone_ncl.restore_captions` undoes this. Samples whose captions
    changed since the run scored them are refused (re-run first).

    Args:
        samples: a dataset or view (only its samples change)
        run_key ("ncl"): the run
        group: a group id (``"caption-0"``) or a list of them (required)
        caption (None): the new caption, or None to remove the grouped ones

    Returns:
        the number of samples changed
    """
    config = check_run(samples, run_key)
    if caption is not None and (not isinstance(caption, str) or is_blank(caption)):
        raise ValueError("caption must be a non-blank string, or None to remove the grouped captions")
    name = _group_field(samples, run_key, config)
    groups = set(_as_groups(samples, name, group, config, required=True))
    view = duplicate_group_view(samples, run_key, sorted(groups))
    caption_field = config.caption_field
    dataset = samples._dataset
    ids = view.values("id")
    if not ids:
        return 0
    stale = stale_samples(samples, run_key, ids)
    if stale:
        raise ValueError(
            "the captions of %d samples of this group changed since run %r scored them (e.g. %s): re-run "
            "compute_correspondence(..., run_key=%r, overwrite=True) first" % (len(stale), run_key, stale[0], run_key)
        )
    original = caption_field + ORIGINAL_SUFFIX
    has_original = dataset.get_field(original) is not None
    captions = view.values(caption_field)
    marks = view.values(name)
    originals = view.values(original) if has_original else [None] * len(ids)
    new, keep = {}, {}
    for sid, value, mark, orig in zip(ids, captions, marks, originals):
        if config.caption_list:
            out = []
            for c, g in zip(value or [], mark or []):
                if g not in groups:
                    out.append(c)
                elif caption is not None and caption not in out:
                    out.append(caption)
            new[sid] = out
        else:
            new[sid] = caption
        if orig is None:
            keep[sid] = value
    caption_type = dataset.get_field(caption_field)
    with run_lock(samples, run_key, "replace_duplicate_captions"), \
            run_lock(samples, _captions_key(caption_field), "replace_duplicate_captions") as journal:
        with FieldWriter(samples, journal) as writer:
            if config.caption_list:
                writer.set(original, keep, fof.ListField, subfield=fof.StringField)
            else:
                writer.set(original, keep, type(caption_type))
            writer.set(caption_field, new)
            _invalidate_text_caches(writer, dataset, caption_field, list(new))
            writer.commit()
    return len(new)
