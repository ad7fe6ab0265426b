"""The SDK: score a collection's image-caption pairs and review the result.

Shaped like ``fiftyone.brain``: one public function per task, runs recorded on
the dataset under a key, results loadable later.
"""
import logging
import os

import numpy as np

import fiftyone as fo
import fiftyone.core.fields as fof

from fiftyone_ncl.core.methods import CorrespondenceMethod, build_method, get_method_class
from fiftyone_ncl.core.metrics import detection_metrics
from fiftyone_ncl.core.suggestions import suggest_captions, suggestion_candidates
from fiftyone_ncl.fo.embeddings import gather_inputs
from fiftyone_ncl.fo.pairs import read_pairs
from fiftyone_ncl.fo.progress import PhasedProgress
from fiftyone_ncl.fo.runs import (
    Correspondence,
    CorrespondenceConfig,
    CorrespondenceResults,
    check_run,
    field_name,
    list_runs,
)
from fiftyone_ncl.fo.writer import FieldWriter
from fiftyone_ncl.utils import to_jsonable

logger = logging.getLogger(__name__)

DEFAULT_METHOD = "gmm"


def checkpoint_path(samples, run_key):
    """Where a run's trained model is saved by default."""
    return os.path.join(
        fo.config.default_dataset_dir,
        "__ncl_checkpoints__",
        samples._dataset.name,
        "%s.safetensors" % run_key,
    )


def _check_new_run_key(samples, run_key, overwrite):
    if not isinstance(run_key, str) or not run_key.isidentifier():
        raise ValueError("run key %r must be a valid Python identifier, e.g. 'ncl'" % (run_key,))
    if run_key in samples.list_brain_runs():
        if not overwrite:
            raise ValueError(
                "a run with key %r already exists on %r; pass overwrite=True to replace it "
                "or choose another run_key" % (run_key, samples._dataset.name)
            )
        check_run(samples, run_key)
        return
    schema = samples._dataset.get_field_schema()
    taken = [field_name(run_key, s) for s in ("confidence", "noisy", "similarity") if field_name(run_key, s) in schema]
    if taken:
        raise ValueError(
            "fields %s already exist and do not belong to a run; choose another run_key"
            % ", ".join(taken)
        )


def _resolve_method(method, model, method_kwargs):
    """Builds (or loads) the method; returns ``(method, loaded_from)``."""
    if model is None:
        return build_method(method or DEFAULT_METHOD, **method_kwargs), None
    if isinstance(model, CorrespondenceMethod):
        if method is not None and method != model.name:
            raise ValueError("model is a %r method but method=%r" % (model.name, method))
        return model, None
    path = str(model)
    if not os.path.isfile(path):
        raise FileNotFoundError("model checkpoint not found: %s" % path)
    overrides = {k: v for k, v in method_kwargs.items() if k in ("device", "eval_batch_size", "amp")}
    loaded = CorrespondenceMethod.load(path, **overrides)
    if method is not None and method != loaded.name:
        raise ValueError("checkpoint %s holds a %r model but method=%r" % (path, loaded.name, method))
    return loaded, path


def compute_correspondence(
    samples,
    caption_field="caption",
    method=None,
    run_key="ncl",
    image_embeddings=None,
    text_embeddings=None,
    encoder=None,
    image_encoder=None,
    text_encoder=None,
    model=None,
    threshold=0.5,
    suggest=True,
    max_suggestions=10_000,
    max_suggestion_candidates=100_000,
    save_checkpoint=None,
    store_embeddings=False,
    visualize=False,
    overwrite=False,
    batch_size=None,
    image_size=28,
    progress=True,
    **method_kwargs,
):
    """Scores every image-caption pair of a collection and writes the result.

    Writes, per sample (``key`` = ``run_key``): ``{key}_confidence`` (float,
    probability the pair is clean), ``{key}_noisy`` (bool, confidence below
    ``threshold``), ``{key}_similarity`` (float), ``{key}_suggestion`` and
    ``{key}_suggestion_id`` (for flagged samples, the best-matching caption
    of another sample and that sample's id), ``{key}_label`` for methods
    with soft labels (CRCL), and method embeddings (``{key}_mii_image``...)
    for methods that produce them. With a list-of-captions field the
    per-sample values summarise the worst caption (lowest confidence, any
    noisy) and ``{key}_caption_confidence`` etc. hold per-caption lists.
    The run is recorded as a brain run under ``run_key``.

    Nothing is written unless the whole computation succeeds; a failure while
    writing restores the previous state.

    Args:
        samples: a FiftyOne dataset or view
        caption_field ("caption"): a StringField or a ListField of strings
        method (None): ``"cosine"``, ``"gmm"`` (default), ``"crcl"``,
            ``"disncl"`` (see :func:`fiftyone_ncl.list_methods`)
        run_key ("ncl"): key of the run and prefix of its fields
        image_embeddings (None): a VectorField name or an (N, d) array; with an
            encoder, a field name caches the computed embeddings
        text_embeddings (None): the same for captions ((P, d) for arrays; an
            ArrayField of (n_captions, d) per sample for list captions)
        encoder (None): one encoder for both sides, e.g.
            ``"open_clip:ViT-B-32:laion2b_s34b_b79k"``; with no embeddings and
            no encoder at all that model is used
        image_encoder, text_encoder (None): per-side encoders, e.g.
            ``"pixels"`` and ``"sentence-transformers"``
        model (None): a checkpoint saved by an earlier run (or a fitted
            method object) to score with, without training
        threshold (0.5): pairs with confidence below it are flagged noisy
        suggest (True): compute ``{key}_suggestion`` for flagged samples
        max_suggestions (10000): suggest for at most this many flagged
            samples, the least confident first (None: all); the search costs
            flagged x candidates dot products
        max_suggestion_candidates (100000): bound on the captions searched for
            suggestions (all flagged ones plus a seeded random subset of the
            others)
        save_checkpoint (None): where to save a trained model; None = under
            the FiftyOne dataset dir, False = do not save
        store_embeddings (False): also store the method's image and caption
            embeddings as ``{key}_emb_image`` / ``{key}_emb_text`` (for
            :func:`fiftyone_ncl.compute_visualizations`)
        visualize (False): after the run, compute UMAP maps of its stored
            embedding spaces for the App's Embeddings panel (True: all of
            them, or a list such as ``["mii_image", "mei_image"]``); see
            :func:`fiftyone_ncl.compute_visualizations`
        overwrite (False): replace an existing run with the same key
        batch_size (None): encoder batch size
        image_size (28): image side for pixel towers (``towers="cnn"``)
        progress (True): True for progress bars, False for none, or a
            callable ``fn(fraction, label)``
        **method_kwargs: options of the method (e.g. ``epochs``, ``device``)

    Returns:
        a :class:`~fiftyone_ncl.fo.runs.CorrespondenceResults`
    """
    _check_new_run_key(samples, run_key, overwrite)
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError("threshold must be in [0, 1], got %r" % threshold)

    ncl_method, loaded_from = _resolve_method(method, model, method_kwargs)
    towers = getattr(ncl_method.config, "towers", "frozen")
    pairs = read_pairs(samples, caption_field)
    phases = PhasedProgress(progress, {"embed": 2, "train": 6 if ncl_method.trains else 0.2, "score": 1, "write": 1})

    gathered = gather_inputs(
        samples,
        pairs,
        image_embeddings=image_embeddings,
        text_embeddings=text_embeddings,
        encoder=encoder,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        towers=towers,
        image_size=image_size,
        clip_model=getattr(ncl_method.config, "clip_model", None),
        clip_pretrained=getattr(ncl_method.config, "clip_pretrained", None),
        batch_size=batch_size,
        progress=phases.phase("embed"),
    )
    data = gathered.data
    phases.done("embed", "embeddings ready")

    if not ncl_method.fitted:
        ncl_method.fit(data, progress=phases.phase("train"))
    phases.done("train", "trained")
    scores = ncl_method.score(data, progress=phases.phase("score"))
    _check_scores(scores, data.n_pairs)
    phases.done("score", "scored")

    confidence = np.asarray(scores.confidence, dtype=np.float64)
    noisy = confidence < threshold
    suggestion_index = None
    if suggest:
        suggestion_index = _suggestions(pairs, scores, confidence, noisy, max_suggestions, max_suggestion_candidates)

    ckpt = None
    trained = loaded_from is None and bool(ncl_method.state_dict())
    if trained and save_checkpoint is not False:
        ckpt = save_checkpoint or checkpoint_path(samples, run_key)
    elif loaded_from is not None:
        ckpt = loaded_from

    config = CorrespondenceConfig(
        caption_field=caption_field,
        method_name=ncl_method.name,
        method_config=to_jsonable(ncl_method.config_dict()),
        threshold=float(threshold),
        caption_list=pairs.is_list,
        sources=gathered.sources,
        checkpoint=ckpt,
    )
    results = CorrespondenceResults(
        samples,
        config,
        run_key,
        sample_ids=np.asarray(pairs.sample_ids),
        image_index=pairs.image_index,
        caption_position=pairs.caption_position,
        confidence=confidence.astype(np.float32),
        similarity=np.asarray(scores.similarity, dtype=np.float32),
        noisy=noisy,
        label=None if scores.label is None else np.asarray(scores.label, dtype=np.float32),
        suggestion_index=suggestion_index,
        calibration_score=None if scores.calibration_score is None else np.asarray(scores.calibration_score, dtype=np.float32),
        info=to_jsonable(scores.info),
    )
    if store_embeddings:
        scores.vectors = dict(scores.vectors or {})
        scores.vectors.setdefault("emb_image", scores.image_embeddings)
        scores.vectors.setdefault("emb_text", scores.text_embeddings)
    _write_run(samples, run_key, pairs, scores, results, gathered, ncl_method, ckpt, loaded_from)
    phases.done("write", "written")
    if visualize:
        from fiftyone_ncl.visualize import compute_visualizations

        spaces = None if visualize is True else list(visualize)
        try:
            results.config.visualization_keys = compute_visualizations(samples, run_key, spaces=spaces)
        except Exception as e:
            # the run itself is complete and kept; only the optional maps failed
            raise RuntimeError(
                "run %r was written, but computing its maps failed: %s; retry with "
                "fiftyone_ncl.compute_visualizations(samples, %r)" % (run_key, e, run_key)
            ) from e
    logger.info(
        "run %r: %d of %d pairs flagged (confidence < %.2f)",
        run_key, results.n_noisy, results.n_pairs, threshold,
    )
    return results


def _check_scores(scores, n_pairs):
    for name in ("confidence", "similarity"):
        arr = np.asarray(getattr(scores, name))
        if arr.shape != (n_pairs,):
            raise RuntimeError("method returned %s of shape %s for %d pairs" % (name, arr.shape, n_pairs))
        if not np.all(np.isfinite(arr)):
            raise RuntimeError(
                "method produced non-finite %s for %d pairs (training diverged?)"
                % (name, int((~np.isfinite(arr)).sum()))
            )


def _suggestions(pairs, scores, confidence, noisy, max_queries, max_candidates):
    """(N,) pair row of the suggested caption per sample, -1 where none."""
    out = np.full(pairs.n_images, -1, dtype=np.int64)
    if not noisy.any():
        return out
    # each flagged sample, ranked by its least confident caption
    worst = np.full(pairs.n_images, np.inf)
    np.minimum.at(worst, pairs.image_index[noisy], confidence[noisy])
    flagged_samples = np.flatnonzero(np.isfinite(worst))
    flagged_samples = flagged_samples[np.argsort(worst[flagged_samples], kind="stable")][:max_queries]
    best, _ = suggest_captions(
        scores.image_embeddings,
        scores.text_embeddings,
        pairs.image_index,
        flagged_samples,
        candidates=suggestion_candidates(noisy, max_candidates),
    )
    out[flagged_samples] = best
    return out


def _per_sample(pairs, values, reduce):
    """Per-sample values from per-pair ones: the value itself for string
    captions; for list captions ``reduce(list)`` and the list."""
    if not pairs.is_list:
        return values.tolist(), None
    lists = pairs.per_sample(values)
    return [reduce(v) for v in lists], [v.tolist() for v in lists]


def _write_run(samples, run_key, pairs, scores, results, gathered, ncl_method, ckpt, loaded_from):
    ids = pairs.sample_ids
    conf = results.confidence.astype(np.float64)
    sim = results.similarity.astype(np.float64)
    # for list captions, the per-sample summary follows the worst caption
    worst = None
    if pairs.is_list:
        worst = np.array([np.argmin(c) for c in pairs.per_sample(conf)])
    fields = {}  # suffix -> (values, ftype, subfield, description)

    def add(suffix, per_pair, ftype, reduce, description, subfield):
        summary, lists = _per_sample(pairs, per_pair, reduce)
        fields[suffix] = (summary, ftype, None, description)
        if lists is not None:
            fields["caption_" + suffix] = (lists, fof.ListField, subfield, description + " (per caption)")

    add("confidence", conf, fof.FloatField, min, "probability that the pair is matched", fof.FloatField)
    add("noisy", results.noisy, fof.BooleanField, any, "flagged as mismatched", fof.BooleanField)
    if pairs.is_list:
        sim_summary = [float(s[w]) for s, w in zip(pairs.per_sample(sim), worst)]
        fields["similarity"] = (sim_summary, fof.FloatField, None, "similarity of the worst caption")
        fields["caption_similarity"] = (
            [s.tolist() for s in pairs.per_sample(sim)], fof.ListField, fof.FloatField, "similarity per caption",
        )
    else:
        fields["similarity"] = (sim.tolist(), fof.FloatField, None, "similarity of the pair")
    if results.label is not None:
        add("label", results.label.astype(np.float64), fof.FloatField, min, "soft correspondence label", fof.FloatField)
    if results.suggestion_index is not None:
        sugg_text = [pairs.captions[j] if j >= 0 else None for j in results.suggestion_index]
        sugg_id = [ids[pairs.image_index[j]] if j >= 0 else None for j in results.suggestion_index]
        fields["suggestion"] = (sugg_text, fof.StringField, None, "best-matching caption of another sample")
        fields["suggestion_id"] = (sugg_id, fof.StringField, None, "sample the suggestion comes from")

    vectors = {}
    for name, arr in (scores.vectors or {}).items():
        arr = np.asarray(arr, dtype=np.float32)
        if name.endswith("_image"):
            vectors[name] = (list(arr), fof.VectorField)
        elif pairs.is_list:
            vectors[name] = ([a for a in pairs.per_sample(arr)], fof.ArrayField)
        else:
            vectors[name] = (list(arr), fof.VectorField)

    results.config.fields = list(fields) + list(vectors)
    old_fields = []
    is_view = len(samples) != len(samples._dataset)
    if run_key in samples.list_brain_runs():
        old_fields = [field_name(run_key, s) for s in samples.get_brain_info(run_key).config.fields]

    schema = samples._dataset.get_field_schema()
    clash = [
        field_name(run_key, s) for s in results.config.fields
        if field_name(run_key, s) in schema and field_name(run_key, s) not in old_fields
    ]
    if clash:
        raise ValueError(
            "fields %s already exist and do not belong to run %r; choose another run_key"
            % (", ".join(clash), run_key)
        )

    tmp_ckpt = None
    if ckpt is not None and loaded_from is None:
        os.makedirs(os.path.dirname(os.path.abspath(ckpt)), exist_ok=True)
        tmp_ckpt = ckpt + ".tmp"
        ncl_method.save(tmp_ckpt)

    try:
        with FieldWriter(samples) as writer:
            for cache in gathered.cache_writes:
                ftype = fof.ArrayField if cache.array else fof.VectorField
                writer.set(cache.field, cache.values, ftype, info=cache.info)
            columns = {field_name(run_key, s): v for s, v in fields.items()}
            columns.update(
                (field_name(run_key, s), (values, ftype, None, None)) for s, (values, ftype) in vectors.items()
            )
            writer.set_many(ids, columns)
            written = {field_name(run_key, s) for s in results.config.fields}
            for old in old_fields:
                if old not in written:
                    writer.delete(old)
            if is_view and old_fields:
                for f in written:
                    writer.clear_outside(f, ids)
            _register(samples, run_key, results)
            writer.commit()
    except BaseException:
        if tmp_ckpt is not None and os.path.exists(tmp_ckpt):
            os.remove(tmp_ckpt)
        raise
    if tmp_ckpt is not None:
        os.replace(tmp_ckpt, ckpt)


def _register(samples, run_key, results):
    """Records the run (replacing an existing one); if that fails midway the
    previous record is put back."""
    previous = None
    if run_key in samples.list_brain_runs():
        previous = (samples.get_brain_info(run_key).config, samples.load_brain_results(run_key))
    method = Correspondence(results.config)
    try:
        method.register_run(samples, run_key, overwrite=True, cleanup=False)
        method.save_run_results(samples, run_key, results)
    except BaseException:
        if run_key in samples.list_brain_runs():
            Correspondence.delete_run(samples, run_key, cleanup=False)
        if previous is not None:
            old = Correspondence(previous[0])
            old.register_run(samples, run_key, overwrite=True, cleanup=False)
            old.save_run_results(samples, run_key, previous[1])
        raise


def load_run_results(samples, run_key="ncl"):
    """The :class:`~fiftyone_ncl.fo.runs.CorrespondenceResults` of a run."""
    check_run(samples, run_key)
    return samples.load_brain_results(run_key)


def get_run_info(samples, run_key="ncl"):
    """A JSON-friendly description of a run: config, time, counts, metrics."""
    check_run(samples, run_key)
    info = samples.get_brain_info(run_key)
    out = {
        "run_key": run_key,
        "timestamp": str(info.timestamp),
        "version": info.version,
        "config": info.config.serialize(),
    }
    results = samples.load_brain_results(run_key)
    if results is not None:
        out.update(results.summary())
        out["info"] = results.info
    return out


def rename_run(samples, run_key, new_run_key):
    """Renames a run and the fields it wrote."""
    config = check_run(samples, run_key)
    if not isinstance(new_run_key, str) or not new_run_key.isidentifier():
        raise ValueError("run key %r must be a valid Python identifier" % (new_run_key,))
    if new_run_key in samples.list_brain_runs():
        raise ValueError("a run with key %r already exists" % new_run_key)
    schema = samples._dataset.get_field_schema()
    clash = [field_name(new_run_key, s) for s in config.fields if field_name(new_run_key, s) in schema]
    if clash:
        raise ValueError("cannot rename to %r: fields %s already exist" % (new_run_key, ", ".join(clash)))
    Correspondence(config).rename(samples, run_key, new_run_key)
    samples._dataset.rename_brain_run(run_key, new_run_key)


def delete_run(samples, run_key="ncl"):
    """Deletes a run, the fields it wrote and its visualizations."""
    check_run(samples, run_key)
    samples._dataset.delete_brain_run(run_key)


def evaluate(samples, run_key, truth_field):
    """Detection quality of a run against known mismatches.

    Args:
        samples: the dataset or view the run scored
        run_key: the run
        truth_field: a BooleanField (or list of booleans parallel to a list
            caption field) that is True where the pair is known to be noisy

    Returns:
        the :func:`~fiftyone_ncl.core.metrics.detection_metrics` dict, which
        is also stored on the run's results
    """
    config = check_run(samples, run_key)
    results = samples.load_brain_results(run_key)
    dataset = samples._dataset
    if dataset.get_field(truth_field) is None:
        raise ValueError("truth field %r does not exist" % truth_field)
    ids, truth = dataset.select(list(results.sample_ids), ordered=True).values(["id", truth_field])
    if list(ids) != list(results.sample_ids):
        raise ValueError("samples of run %r no longer exist" % run_key)
    flat = []
    for sid, value, n in zip(ids, truth, np.bincount(results.image_index, minlength=len(ids))):
        items = value if isinstance(value, (list, tuple)) else [value] * n
        if value is None or len(items) != n:
            raise ValueError("truth field %r has no value for every pair on sample %s" % (truth_field, sid))
        flat.extend(bool(v) for v in items)
    metrics = detection_metrics(np.asarray(flat), results.confidence, threshold=config.threshold)
    results.metrics = metrics
    Correspondence.save_run_results(dataset, run_key, results)
    return metrics


__all__ = [
    "compute_correspondence",
    "load_run_results",
    "get_run_info",
    "rename_run",
    "delete_run",
    "list_runs",
    "evaluate",
    "get_method_class",
]
