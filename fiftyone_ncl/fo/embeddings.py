"""Gathering the inputs of a run: embeddings from fields, arrays or encoders
(with optional caching into fields), or pixels for end-to-end towers."""
import logging
from dataclasses import dataclass, field

import numpy as np

import fiftyone.core.fields as fof

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.encoders import get_encoder, load_pixels
from fiftyone_ncl.encoders.openclip import DEFAULT_MODEL, DEFAULT_PRETRAINED, OpenClipEncoder
from fiftyone_ncl.fo.pairs import check_media_exists
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


def default_encoder():
    """The encoder used when a run names no embeddings and no encoder: open_clip
    ViT-B-32 with LAION-2B weights (downloaded on first use)."""
    return OpenClipEncoder(DEFAULT_MODEL, DEFAULT_PRETRAINED)


def gather_inputs(
    samples,
    pairs,
    image_embeddings=None,
    text_embeddings=None,
    encoder=None,
    image_encoder=None,
    text_encoder=None,
    towers="frozen",
    image_size=28,
    clip_model=None,
    clip_pretrained=None,
    batch_size=None,
    progress=True,
):
    """Builds the :class:`~fiftyone_ncl.core.data.PairData` of a run.

    Each side (images, captions) comes from, in order: a precomputed array; a
    field name (read where present; with an encoder, missing entries are
    computed and cached into the field); an encoder. ``encoder`` sets both
    sides at once; with nothing given at all, :func:`default_encoder` is used.
    ``towers="cnn"`` reads pixels; ``towers="open_clip"`` reads images lazily
    and tokenises captions for the ``clip_model`` being fine-tuned.

    Returns:
        a :class:`GatheredInputs`
    """
    encoder = get_encoder(encoder)
    image_encoder = get_encoder(image_encoder) or encoder
    text_encoder = get_encoder(text_encoder) or encoder
    nothing_given = all(
        x is None for x in (image_embeddings, text_embeddings, image_encoder, text_encoder)
    )
    if nothing_given and towers == "frozen":
        image_encoder = text_encoder = default_encoder()
    elif nothing_given:
        from fiftyone_ncl.encoders import SentenceTransformerEncoder

        text_encoder = SentenceTransformerEncoder()

    writes, sources = [], {}
    if towers == "open_clip":
        return _open_clip_inputs(pairs, image_embeddings, text_embeddings, clip_model, clip_pretrained)
    if towers == "cnn":
        if image_embeddings is not None:
            raise ValueError(
                "towers='cnn' trains its own image tower on pixels; do not pass image_embeddings"
            )
        check_media_exists(pairs.filepaths)
        images = load_pixels(pairs.filepaths, size=image_size, progress=progress)
        image_space = None
        sources["image"] = "pixels:%d (cnn tower)" % image_size
    else:
        images, image_space, src = _gather_side(
            samples, pairs, "image", image_embeddings, image_encoder, batch_size, progress, writes
        )
        sources["image"] = src
    texts, text_space, src = _gather_side(
        samples, pairs, "text", text_embeddings, text_encoder, batch_size, progress, writes
    )
    sources["text"] = src

    if images.ndim == 2 and images.shape[1] != texts.shape[1]:
        joint = False
    elif image_space is not None and text_space is not None:
        joint = image_space == text_space
    else:
        joint = False
    data = PairData(
        images=images,
        texts=texts,
        image_index=pairs.image_index,
        joint_space=joint,
        meta={"sources": sources},
    )
    return GatheredInputs(data=data, cache_writes=writes, sources=sources)


def _open_clip_inputs(pairs, image_embeddings, text_embeddings, clip_model, clip_pretrained):
    """Lazily loaded images and caption token ids for fine-tuning open_clip."""
    from fiftyone_ncl.core.towers import LazyImages, open_clip_backbone

    if image_embeddings is not None or text_embeddings is not None:
        raise ValueError(
            "towers='open_clip' fine-tunes the model on images and captions; "
            "do not pass image_embeddings / text_embeddings"
        )
    check_media_exists(pairs.filepaths)
    # the preprocessing and tokenizer only: the weights are the method's
    model, preprocess, tokenizer = open_clip_backbone(clip_model, None)
    size = getattr(model.visual, "image_size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    del model
    images = LazyImages(pairs.filepaths, preprocess, image_size=size)
    texts = tokenizer(list(pairs.captions)).numpy().astype(np.int64)
    sources = {"image": "files (open_clip %s, fine-tuned)" % clip_model, "text": "open_clip tokens"}
    data = PairData(images=images, texts=texts, image_index=pairs.image_index, joint_space=True, meta={"sources": sources})
    return GatheredInputs(data=data, sources=sources)


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
        _check_finite(arr, "the %s embeddings array" % what, None)
        space = "array" if encoder is None else encoder.space
        return _normalize(arr, "the %s embeddings array" % what), space, "array"

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
    return _normalize(arr, "%s embeddings field %r" % (what, field_name)), space, src


def _row_sq_norms(arr, chunk=65536):
    """Squared row norms in float64, chunk by chunk: no full-size temporary
    (``np.linalg.norm`` would make one as large as the embeddings)."""
    out = np.empty(len(arr), dtype=np.float64)
    for start in range(0, len(arr), chunk):
        block = arr[start : start + chunk].astype(np.float64)
        out[start : start + chunk] = np.einsum("ij,ij->i", block, block)
    return out


def _check_finite(arr, where, pairs, per_caption=False):
    # a NaN or infinite entry makes its row's squared norm non-finite
    bad = np.flatnonzero(~np.isfinite(_row_sq_norms(arr)))
    if len(bad):
        if pairs is not None:
            rows = pairs.image_index[bad] if per_caption else bad
            ids = list(dict.fromkeys(pairs.sample_ids[r] for r in rows))
            detail = "samples " + ", ".join(ids[:_SHOW])
        else:
            detail = "rows " + ", ".join(map(str, bad[:_SHOW]))
        raise ValueError("%s has NaN or infinite values in %d rows (e.g. %s)" % (where, len(bad), detail))


def _normalize(arr, where, chunk=65536):
    """Scales rows to unit norm in place."""
    norms = np.sqrt(_row_sq_norms(arr))
    zero = np.flatnonzero(norms == 0)
    if len(zero):
        raise ValueError("%s has %d all-zero vectors" % (where, len(zero)))
    for start in range(0, len(arr), chunk):
        arr[start : start + chunk] /= norms[start : start + chunk, None].astype(np.float32)
    return arr


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
