"""Gathering the inputs of a run by its recipe: embeddings from fields,
arrays or encoders (with optional caching into fields), pixels for a CNN, or
images and tokens for fine-tuning open_clip."""
import logging
from dataclasses import dataclass, field

import numpy as np

import fiftyone.core.fields as fof

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.vectors import normalize_rows, row_sq_norms
from fiftyone_ncl.encoders import check_media_exists, get_encoder, load_pixels
from fiftyone_ncl.fo.vectors import read_rows

logger = logging.getLogger(__name__)

_SHOW = 5
# Field info keys recording how cached embeddings were made
INFO_ENCODER = "ncl_encoder"
INFO_SPACE = "ncl_space"
INFO_CAPTION_FIELD = "ncl_caption_field"


@dataclass
class CacheWrite:
    """Embeddings to store in a field when the run is written."""

    field: str
    values: dict  # sample id -> vector (or (n_captions, d) array)
    info: dict
    array: bool = False  # ArrayField (per-caption matrices) instead of VectorField


@dataclass
class GatheredInputs:
    data: PairData
    cache_writes: list = field(default_factory=list)
    sources: dict = field(default_factory=dict)


def gather_inputs(samples, pairs, recipe, batch_size=None, progress=True):
    """Builds the :class:`~fiftyone_ncl.core.data.PairData` of a run.

    Each side (images, captions) comes from, in order: a precomputed array; a
    field name (read where present; with an encoder, missing entries are
    computed and cached into the field); an encoder. The CNN recipe reads
    pixels; the open_clip fine-tuning recipe reads images lazily and
    tokenises the captions.

    Args:
        samples: the collection
        pairs: its :class:`~fiftyone_ncl.fo.pairs.CollectionPairs`
        recipe: a :class:`~fiftyone_ncl.recipes.InputRecipe`
        batch_size (None): encoder batch size
        progress (True): progress bars or a callback

    Returns:
        a :class:`GatheredInputs`
    """
    image_encoder = get_encoder(recipe.image_encoder)
    text_encoder = get_encoder(recipe.text_encoder)
    if recipe.towers == "open_clip":
        check_media_exists(pairs.filepaths)
        images, tokens, backbone = image_encoder.training_inputs(pairs.filepaths, pairs.captions)
        sources = {"image": "files (%s, fine-tuned)" % image_encoder.name, "text": "open_clip tokens"}
        data = PairData(images, tokens, pairs.image_index, joint_space=True, meta={"sources": sources},
                        towers="open_clip", backbone=backbone)
        return GatheredInputs(data=data, sources=sources)

    writes, sources = [], {}
    if recipe.towers == "cnn":
        check_media_exists(pairs.filepaths)
        images = load_pixels(pairs.filepaths, size=image_encoder.size, grayscale=image_encoder.grayscale,
                             progress=progress)
        image_space = None
        sources["image"] = "%s (cnn tower)" % image_encoder.name
    else:
        images, image_space, sources["image"] = _gather_side(
            samples, pairs, "image", recipe.image_embeddings, image_encoder, batch_size, progress, writes
        )
    texts, text_space, sources["text"] = _gather_side(
        samples, pairs, "text", recipe.text_embeddings, text_encoder, batch_size, progress, writes
    )
    if images.ndim == 2 and images.shape[1] != texts.shape[1]:
        joint = False
    else:
        joint = image_space is not None and image_space == text_space
    data = PairData(images, texts, pairs.image_index, joint_space=joint, meta={"sources": sources})
    return GatheredInputs(data=data, cache_writes=writes, sources=sources)


def _gather_side(samples, pairs, side, given, encoder, batch_size, progress, writes):
    """Returns ``(array, space, source description)`` for one side."""
    per_caption = side == "text"
    n_rows = pairs.n_pairs if per_caption else pairs.n_images
    what = "caption" if per_caption else "image"

    if isinstance(given, np.ndarray) or (given is not None and not isinstance(given, str)):
        arr = np.array(given, dtype=np.float32)  # a copy: normalised in place below
        if arr.ndim != 2 or len(arr) != n_rows:
            raise ValueError(
                "%s embeddings array must have shape (%d, d), got %s"
                % (what, n_rows, arr.shape)
            )
        space = "array" if encoder is None else encoder.space
        return normalize_rows(arr, "the %s embeddings array" % what, copy=False), space, "array"

    if given is None:
        if encoder is None:
            raise ValueError(
                "no %s embeddings: pass %s_embeddings=<field or array> or an encoder"
                % (what, side)
            )
        arr = _compute(encoder, pairs, side, np.arange(n_rows), batch_size, progress)
        return arr, encoder.space, encoder.name

    # a field name
    field_name = given
    field = samples.get_field(field_name)
    if field is None:
        if encoder is None:
            raise ValueError(
                "%s embeddings field %r does not exist (pass an encoder to compute and "
                "store them there)" % (what, field_name)
            )
        arr = _compute(encoder, pairs, side, np.arange(n_rows), batch_size, progress)
        writes.append(_cache_write(pairs, side, field_name, arr, encoder, np.arange(pairs.n_images)))
        return arr, encoder.space, "%s -> %s" % (encoder.name, field_name)

    if not isinstance(field, (fof.VectorField, fof.ArrayField, fof.ListField)):
        raise ValueError(
            "%s embeddings field %r is a %s, not a VectorField"
            % (what, field_name, type(field).__name__)
        )
    info = field.info or {}
    recorded = info.get(INFO_ENCODER)
    if encoder is not None and recorded is not None and recorded != encoder.name:
        raise ValueError(
            "%s embeddings field %r holds embeddings from %s, not %s; pass another field "
            "name or delete it" % (what, field_name, recorded, encoder.name)
        )
    counts = np.bincount(pairs.image_index, minlength=pairs.n_images) if per_caption else None
    arr, missing_samples, dims = read_rows(samples, field_name, counts)
    if len(dims) > 1:
        raise ValueError(
            "%s embeddings field %r mixes vectors of different dimensions: %s"
            % (what, field_name, ", ".join(map(str, sorted(dims))))
        )
    if missing_samples and encoder is None and recorded is not None:
        # the field was filled by an encoder this package knows (e.g. cleared
        # where accept_suggestions changed captions): it fills the gaps
        logger.info("computing %d missing %s embeddings of field %r with %s, which filled it",
                    len(missing_samples), what, field_name, recorded)
        encoder = get_encoder(recorded)
    if missing_samples:
        if encoder is None:
            ids = [pairs.sample_ids[i] for i in missing_samples[:_SHOW]]
            raise ValueError(
                "%s embeddings field %r is missing on %d of %d samples (e.g. %s)"
                % (what, field_name, len(missing_samples), pairs.n_images, ", ".join(ids))
            )
        missing_samples = np.asarray(missing_samples, dtype=np.int64)
        missing_rows = (
            np.flatnonzero(np.isin(pairs.image_index, missing_samples)) if per_caption else missing_samples
        )
        computed = _compute(encoder, pairs, side, missing_rows, batch_size, progress)
        dim = computed.shape[1]
        if dims and dims != {dim}:
            raise ValueError(
                "%s embeddings field %r has %s-d vectors but %s gives %d-d"
                % (what, field_name, "/".join(map(str, sorted(dims))), encoder.name, dim)
            )
        if arr is None:
            arr = np.empty((n_rows, dim), dtype=np.float32)
        arr[missing_rows] = computed
        writes.append(_cache_write(pairs, side, field_name, computed, encoder, missing_samples, missing_rows))
    _check_finite(arr, "%s embeddings field %r" % (what, field_name), pairs, per_caption)
    space = encoder.space if encoder is not None else info.get(INFO_SPACE, "field")
    src = field_name if encoder is None else "%s (cache of %s)" % (field_name, encoder.name)
    where = "%s embeddings field %r" % (what, field_name)
    return normalize_rows(arr, where, labels=_row_labels(pairs, per_caption), copy=False), space, src


def _check_finite(arr, where, pairs, per_caption=False):
    # a NaN or infinite entry makes its row's squared norm non-finite
    bad = np.flatnonzero(~np.isfinite(row_sq_norms(arr)))
    if len(bad):
        rows = pairs.image_index[bad] if per_caption else bad
        ids = list(dict.fromkeys(pairs.sample_ids[r] for r in rows))
        raise ValueError("%s has NaN or infinite values in %d rows (e.g. samples %s)"
                         % (where, len(bad), ", ".join(ids[:_SHOW])))


def _row_labels(pairs, per_caption):
    """Sample ids naming the rows of one side, for error messages."""
    if per_caption:
        return [pairs.sample_ids[i] for i in pairs.image_index]
    return pairs.sample_ids


def _compute(encoder, pairs, side, rows, batch_size, progress):
    if side == "image":
        if not encoder.embeds_images:
            raise ValueError("encoder %s cannot embed images" % encoder.name)
        paths = [pairs.filepaths[i] for i in rows]
        check_media_exists(paths)
        return encoder.embed_images(paths, batch_size=batch_size, progress=progress)
    if not encoder.embeds_texts:
        raise ValueError("encoder %s cannot embed captions" % encoder.name)
    return encoder.embed_texts([pairs.captions[i] for i in rows], batch_size=batch_size, progress=progress)


def _cache_write(pairs, side, field_name, computed, encoder, sample_rows, computed_rows=None):
    info = {INFO_ENCODER: encoder.name, INFO_SPACE: encoder.space}
    if side == "image":
        values = {pairs.sample_ids[i]: vec for i, vec in zip(sample_rows, computed)}
        return CacheWrite(field_name, values, info)
    info[INFO_CAPTION_FIELD] = pairs.caption_field
    rows = np.arange(pairs.n_pairs) if computed_rows is None else np.asarray(computed_rows)
    by_sample = {}
    for r, vec in zip(rows, computed):
        by_sample.setdefault(pairs.image_index[r], []).append(vec)
    if pairs.is_list:
        values = {pairs.sample_ids[i]: np.stack(v) for i, v in by_sample.items()}
        return CacheWrite(field_name, values, info, array=True)
    values = {pairs.sample_ids[i]: v[0] for i, v in by_sample.items()}
    return CacheWrite(field_name, values, info)
