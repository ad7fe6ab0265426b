"""Self-check: how well would a method find mismatches in *your* data?

A copy of the collection gets known swaps (random, or between samples that
share a category), is scored, and the detection quality against the
injected truth is reported. The original collection is not touched.
"""
import logging
import os
import shutil
import uuid

import numpy as np

import fiftyone as fo
import fiftyone.core.fields as fof
import fiftyone.core.labels as fol

from fiftyone_ncl.core.noise import inject_category, inject_random
from fiftyone_ncl.correspondence import compute_correspondence, evaluate
from fiftyone_ncl.fo.pairs import read_pairs
from fiftyone_ncl.fo.runs import checkpoint_path
from fiftyone_ncl.fo.vectors import read_rows

logger = logging.getLogger(__name__)

TRUTH_FIELD = "ncl_injected"


def _categories(samples, field):
    """One label list per sample from a string, list, Classification or
    Classifications field."""
    out = []
    for value in samples.values(field):
        if value is None:
            out.append([])
        elif isinstance(value, fol.Classification):
            out.append([value.label])
        elif isinstance(value, fol.Classifications):
            out.append([c.label for c in value.classifications])
        elif isinstance(value, (list, tuple)):
            out.append(list(value))
        else:
            out.append([value])
    return out


def self_check(
    samples,
    caption_field="caption",
    rate=0.2,
    kind="random",
    categories_field=None,
    seed=0,
    keep=False,
    progress=True,
    **kwargs,
):
    """Injects known mismatches into a copy of the pairs, scores it and
    reports the detection quality to expect on this data.

    Args:
        samples: the dataset or view to check (not modified)
        caption_field ("caption"): the caption field
        rate (0.2): fraction of captions to swap
        kind ("random"): ``"random"`` (NCR protocol: captions permuted among
            themselves) or ``"category"`` (each chosen caption replaced by the
            caption of another sample sharing a category: the hard case)
        categories_field (None): for ``"category"``: a string, list,
            Classification or Classifications field giving each sample's
            categories
        seed (0): seed of the injection
        keep (False): keep the scored copy (its name is returned) instead of
            deleting it
        progress (True): progress bars or a callable, as in
            :func:`~fiftyone_ncl.compute_correspondence`
        **kwargs: passed to :func:`~fiftyone_ncl.compute_correspondence`
            (method, embeddings fields or encoders, method options...).
            Precomputed caption embeddings in a field move with their captions

    Returns:
        a dict: the detection metrics (``auroc``, ``ap``,
        ``precision_at_k``...), the injection (``kind``, ``rate``,
        ``realised_rate``, ``n_noisy``) and ``dataset`` (the copy's name if
        kept)
    """
    if kind == "category" and categories_field is None:
        raise ValueError("kind='category' needs categories_field (the samples' categories)")
    pairs = read_pairs(samples, caption_field)
    if kind == "random":
        noise = inject_random(pairs.image_index, rate, seed=seed)
    elif kind == "category":
        per_sample = _categories(samples, categories_field)
        noise = inject_category(
            pairs.image_index, rate, [per_sample[i] for i in pairs.image_index], seed=seed
        )
    else:
        raise ValueError("kind must be 'random' or 'category', got %r" % kind)

    name = "ncl-self-check-%s" % uuid.uuid4().hex[:8]
    copy = samples.clone(name=name)
    try:
        ids = copy.values("id")  # clone keeps the collection's order
        new_captions = noise.apply(pairs.captions)
        truth = noise.noisy
        copy.add_sample_field(TRUTH_FIELD, fof.ListField if pairs.is_list else fof.BooleanField,
                              subfield=fof.BooleanField if pairs.is_list else None)
        if pairs.is_list:
            caps = [list(map(str, c)) for c in pairs.per_sample(np.asarray(new_captions, dtype=object))]
            flags = [list(map(bool, f)) for f in pairs.per_sample(truth)]
        else:
            caps, flags = list(new_captions), truth.tolist()
        copy.set_values(caption_field, dict(zip(ids, caps)), key_field="id")
        copy.set_values(TRUTH_FIELD, dict(zip(ids, flags)), key_field="id")
        text_field = kwargs.get("text_embeddings")
        if isinstance(text_field, str) and copy.get_field(text_field) is not None:
            _move_caption_embeddings(copy, text_field, pairs, noise.source, ids)
        kwargs.pop("run_key", None)
        kwargs["overwrite"] = True  # the copy may carry a run of that name
        if not keep:  # the copy goes at the end: its model would be an orphan file
            kwargs.setdefault("save_checkpoint", False)
        compute_correspondence(copy, caption_field, run_key="self_check", progress=progress, **kwargs)
        metrics = evaluate(copy, "self_check", TRUTH_FIELD)
    finally:
        if not keep and fo.dataset_exists(name):
            copy = fo.load_dataset(name)
            # its models, if any were saved (they are keyed by the copy's id)
            shutil.rmtree(os.path.dirname(checkpoint_path(copy, "self_check")), ignore_errors=True)
            copy.delete()
    out = dict(metrics)
    out.update(noise.to_dict())
    out["dataset"] = name if keep else None
    return out


def _move_caption_embeddings(copy, field, pairs, source, ids):
    """Stored caption embeddings follow their captions to their new pairs;
    samples whose moved rows cannot be read are cleared (then recomputed by
    the encoder that filled the field, or the one passed)."""
    counts = np.bincount(pairs.image_index, minlength=pairs.n_images) if pairs.is_list else None
    rows, missing, dims = read_rows(copy, field, counts)
    if rows is None or len(dims) > 1:
        copy.set_values(field, [None] * len(copy))
        return
    unreadable = np.isin(pairs.image_index, np.asarray(missing, dtype=np.int64))[source]
    moved = rows[source]
    if pairs.is_list:
        values = [None if bad.any() else m for m, bad in zip(pairs.per_sample(moved), pairs.per_sample(unreadable))]
    else:
        values = [None if bad else m for m, bad in zip(moved, unreadable)]
    copy.set_values(field, dict(zip(ids, values)), key_field="id")
