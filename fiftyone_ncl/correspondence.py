"""The SDK entry point: score a collection's image-caption pairs.

Shaped like ``fiftyone.brain``: one public function per task, runs recorded on
the dataset under a key, results loadable later. :func:`compute_correspondence`
only orchestrates; data flows one way::

    arguments -> method + input recipe          (core.registry, recipes)
    collection -> pairs -> inputs               (fo.pairs, fo.embeddings)
    inputs -> fit -> scores                     (core.methods)
    scores -> decision -> suggestions           (core)
    -> fields + run record -> maps              (fo.fields, fo.runs, visualize)
"""
import collections
import logging
import numbers

import numpy as np

from fiftyone_ncl.core.checkpoint import read_header
from fiftyone_ncl.core.duplicates import find_duplicate_groups
from fiftyone_ncl.core.health import assess
from fiftyone_ncl.core.judge import judge, judge_cross_fitted
from fiftyone_ncl.core.methods.base import CorrespondenceMethod
from fiftyone_ncl.core.metrics import detection_metrics
from fiftyone_ncl.core.registry import build_method, load_method
from fiftyone_ncl.core.suggestions import suggest_captions, suggestion_candidates
from fiftyone_ncl.fo.embeddings import gather_inputs
from fiftyone_ncl.fo.fields import planned_suffixes, run_columns, vector_space_info
from fiftyone_ncl.fo.labels import read_pair_labels
from fiftyone_ncl.fo.pairs import caption_kind, read_pairs
from fiftyone_ncl.fo.progress import PhasedProgress
from fiftyone_ncl.fo.runs import (
    Correspondence,
    CorrespondenceConfig,
    CorrespondenceResults,
    check_new_run_key,
    check_run,
    checkpoint_path,
    locks_run_key,
    write_run,
)
from fiftyone_ncl.recipes import make_recipe
from fiftyone_ncl.utils import to_jsonable

logger = logging.getLogger(__name__)

# chosen on the regime suite (README): gmm ranked below a linear CCA on every
# regime; auto trials cca, gmm and CCA-started crcl on the user's own pairs
DEFAULT_METHOD = "auto"
# options a loaded checkpoint may take (they do not change its network)
_RUNTIME_OPTIONS = ("device", "eval_batch_size", "amp")
# former arguments, now part of the input recipe
_RECIPE_OPTIONS = ("towers", "clip_model", "clip_pretrained", "image_size")


@locks_run_key("compute_correspondence")
def compute_correspondence(
    samples,
    caption_field="caption",
    method=None,
    run_key="ncl",
    recipe=None,
    image_embeddings=None,
    text_embeddings=None,
    encoder=None,
    image_encoder=None,
    text_encoder=None,
    model=None,
    labels=None,
    decision="probability",
    level=None,
    threshold=0.5,
    folds=None,
    suggest=True,
    max_suggestions=10_000,
    max_suggestion_candidates=100_000,
    save_checkpoint=None,
    store_embeddings=False,
    visualize=False,
    overwrite=False,
    batch_size=None,
    progress=True,
    brain_key=None,
    **options,
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
    Every run also groups pipeline bugs, training-free:
    ``{key}_duplicate_group`` (a group id, None outside groups) marks a
    caption pasted onto many unrelated images (``caption-<i>``) and copies
    of one image with contradicting captions (``image-<i>``); the run's info
    lists the groups (``get_run_info(...)["info"]["duplicates"]``,
    :func:`fiftyone_ncl.duplicate_groups`).
    The run is recorded as a brain run under ``run_key``.

    Nothing is written unless the whole computation succeeds; a failure while
    writing restores the previous state. Bad arguments, run keys and fields
    are refused before anything is read or trained.

    Args:
        samples: a FiftyOne dataset or view
        caption_field ("caption"): a StringField or a ListField of strings
        method (None): ``"auto"`` (default), ``"cosine"``, ``"gmm"``, ``"cca"``,
            ``"crcl"``, ``"disncl"``, ``"neighbors"`` (training-free
            multimodal neighbours), ``"ensemble"`` (rank consensus, default
            gmm + neighbors) (see :func:`fiftyone_ncl.list_methods`).
            ``"auto"``: each of cca, gmm and crcl (CCA-started linear heads)
            is fitted on a copy of the pairs with 20 % known random swaps,
            and the one that finds them best runs (the trial's AUROCs are
            in ``results.summary()["auto"]``); gmm without a trial on
            inputs that train image towers or under 200 pairs
        run_key ("ncl"): key of the run and prefix of its fields
            (``brain_key`` is accepted as another name for it)
        recipe (None): where the inputs come from: a preset name
            (:func:`fiftyone_ncl.list_recipes`: ``"open_clip"``, ``"fields"``,
            ``"pixels_minilm"``, ``"cnn_minilm"``, ``"open_clip_finetune"``), an
            :class:`~fiftyone_ncl.recipes.InputRecipe`, or None to decide
            from the arguments below (with none of them: ``"open_clip"``)
        image_embeddings (None): a VectorField name or an (N, d) array; with an
            encoder, a field name caches the computed embeddings
        text_embeddings (None): the same for captions ((P, d) for arrays; an
            ArrayField of (n_captions, d) per sample for list captions)
        encoder (None): one encoder for both sides, e.g.
            ``"open_clip:ViT-B-32:laion2b_s34b_b79k"``
        image_encoder, text_encoder (None): per-side encoders, e.g.
            ``"pixels:32:rgb"`` and ``"sentence-transformers"``
        labels (None): pairs a person judged, for methods that learn from
            them (``neighbors`` fits its weights, ``ensemble`` passes them
            on; :func:`fiftyone_ncl.method_capabilities` says
            ``uses_labels``): the name of a BooleanField (True = the caption
            matches, False = it does not, None = unknown; or a list of
            booleans parallel to a list caption field), a dict of sample
            tags ``{"matched": "verified", "mismatched": "wrong_caption"}``,
            or one value per pair (1 right, 0 wrong, -1 unknown). Needs at
            least one right and one wrong pair
        model (None): a checkpoint saved by an earlier run (or a fitted
            method object) to score with, without training
        decision ("probability"): how pairs are flagged
            (:func:`fiftyone_ncl.decide` re-decides later without
            retraining): ``"probability"`` (confidence below ``level``,
            default ``threshold``), ``"fdr"`` (the largest set whose estimated
            share of matched pairs is at most ``level``, default 0.1),
            ``"top_k"`` (the ``level`` least confident pairs), ``"fraction"``
            (that fraction of the pairs, least confident first) or ``"f1"``
            (the cut that best separates the pairs ``labels`` marks right
            and wrong). ``"probability"`` and ``"fdr"`` flag nothing when
            the scores show no population of mismatches
        level (None): the decision's level (see ``decision``)
        threshold (0.5): the level of the ``"probability"`` decision
        folds (None): decide on out-of-sample statistics: the images are
            split into this many folds, a fresh model fitted without each
            fold scores it beside decoys of the fold (``folds`` + 1 fits;
            see :func:`fiftyone_ncl.core.judge.judge_cross_fitted`). A
            trained model partly memorises the swaps it trained on, which
            in-sample hides them from the estimate and the decision; the
            run's other outputs come from the model fitted on everything
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
            them, or a list such as ``["mii_image", "mei_image"]``)
        overwrite (False): replace an existing run with the same key
        batch_size (None): encoder batch size
        progress (True): True for progress bars, False for none, or a
            callable ``fn(fraction, label)``
        **options: options of the method (e.g. ``epochs``, ``device``; see
            :func:`fiftyone_ncl.method_capabilities`)

    Returns:
        a :class:`~fiftyone_ncl.fo.runs.CorrespondenceResults`
    """
    plan = plan_run(samples, caption_field, method=method, run_key=run_key, recipe=recipe,
                    image_embeddings=image_embeddings, text_embeddings=text_embeddings, encoder=encoder,
                    image_encoder=image_encoder, text_encoder=text_encoder, model=model, labels=labels,
                    decision=decision, level=level, threshold=threshold, folds=folds, suggest=suggest,
                    store_embeddings=store_embeddings, overwrite=overwrite, brain_key=brain_key, **options)
    run_key, threshold, recipe, options = plan.run_key, plan.threshold, plan.recipe, plan.options
    auto, ncl_method, loaded_from = plan.auto, plan.method, plan.loaded_from

    pairs = read_pairs(samples, caption_field)
    phases = PhasedProgress(progress, {"embed": 2, "train": 6 if ncl_method.trains else 0.2, "score": 1, "write": 1})
    gathered = gather_inputs(samples, pairs, recipe, batch_size=batch_size, progress=phases.phase("embed"))
    data = gathered.data
    if labels is not None:
        data = data.replace(labels=read_pair_labels(samples, pairs, labels))
    phases.done("embed", "embeddings ready")

    auto_report = None
    if auto:
        ncl_method, auto_report = _choose(data, options, phases.phase("train"))
    if ncl_method.fitted:
        ncl_method.check_inputs(data)
    else:
        ncl_method.fit(data, progress=phases.phase("train"))
    phases.done("train", "trained")
    scores = ncl_method.score(data, progress=phases.phase("score"))
    _check_scores(scores, data.n_pairs)
    # pasted captions and contradicted duplicate images, on every run
    duplicates = find_duplicate_groups(pairs.captions, pairs.image_index, scores.image_embeddings,
                                       scores.text_embeddings, device=_search_device(),
                                       copy_embeddings=_input_image_embeddings(data))
    scores.info = dict(scores.info or {}, duplicates=duplicates.summary())
    phases.done("score", "scored")

    # the decision layer: the method's ranking statistic next to decoy pairs'
    marks = data.labels if decision == "f1" else None
    decide_at = dict(
        mode=decision, level=threshold if decision == "probability" and level is None else level,
        marked_right=None if marks is None else marks == 1, marked_wrong=None if marks is None else marks == 0,
        seed=getattr(ncl_method.config, "seed", 0),
    )
    if folds:
        chosen, chosen_options = ncl_method.name, ncl_method.config_dict()
        verdict = judge_cross_fitted(lambda: build_method(chosen, **chosen_options), data, folds,
                                     progress=phases.phase("score"), **decide_at)
    else:
        verdict = judge(ncl_method, data, **decide_at)
    confidence = verdict.decision.confidence
    noisy = verdict.decision.flags
    health = _health(ncl_method, data, verdict, scores)
    suggestion_index = None
    if suggest:
        suggestion_index = _suggestions(pairs, scores, confidence, noisy, max_suggestions, max_suggestion_candidates)

    checkpoint = loaded_from
    trained = loaded_from is None and bool(ncl_method.state_dict())
    if trained and save_checkpoint is not False:
        checkpoint = save_checkpoint or checkpoint_path(samples, run_key)
    config = CorrespondenceConfig(
        caption_field=caption_field,
        method_name=ncl_method.name,
        method_config=to_jsonable(ncl_method.config_dict()),
        threshold=threshold,
        decision=decision,
        level=verdict.decision.info["level"],
        caption_list=pairs.is_list,
        sources=gathered.sources,
        checkpoint=checkpoint,
        recipe=to_jsonable(recipe.describe()),
    )
    results = CorrespondenceResults(
        samples,
        config,
        run_key,
        sample_ids=np.asarray(pairs.sample_ids),
        image_index=pairs.image_index,
        caption_position=pairs.caption_position,
        caption_hash=pairs.caption_hash,
        confidence=confidence.astype(np.float32),
        similarity=np.asarray(scores.similarity, dtype=np.float32),
        noisy=noisy,
        label=None if scores.label is None else np.asarray(scores.label, dtype=np.float32),
        suggestion_index=suggestion_index,
        calibration_score=None if scores.calibration_score is None else np.asarray(scores.calibration_score, dtype=np.float32),
        margin=verdict.decision.margin.astype(np.float32),
        statistic=verdict.statistic,
        null_statistic=verdict.null,
        info=to_jsonable(dict(scores.info or {}, decision=verdict.decision.info, null=verdict.info, health=health,
                              **({"auto": auto_report} if auto_report else {}))),
    )
    vectors = dict(scores.vectors or {})
    if store_embeddings:
        vectors.setdefault("emb_image", scores.image_embeddings)
        vectors.setdefault("emb_text", scores.text_embeddings)
    write_run(
        samples, run_key, run_columns(run_key, pairs, results, vectors, duplicate_group=duplicates.row_group),
        results, gathered.cache_writes,
        save_model=ncl_method.save if trained and checkpoint else None, checkpoint=checkpoint if trained else None,
        field_info=vector_space_info(samples._dataset._doc.id, run_key, vectors),
    )
    phases.done("write", "written")
    if visualize:
        _visualize(samples, run_key, results, visualize)
    logger.info("run %r: %d of %d pairs flagged (%s)", run_key, results.n_noisy, results.n_pairs, decision)
    if health["verdict"] != "ok":
        logger.warning("run %r: %s", run_key, health["summary"])
    return results


RunPlan = collections.namedtuple("RunPlan", "run_key threshold auto candidates method loaded_from recipe options")


def plan_run(samples, caption_field="caption", method=None, run_key="ncl", recipe=None, image_embeddings=None,
             text_embeddings=None, encoder=None, image_encoder=None, text_encoder=None, model=None, labels=None,
             decision="probability", level=None, threshold=0.5, folds=None, suggest=True, store_embeddings=False,
             overwrite=False, brain_key=None, **options):
    """Every check :func:`compute_correspondence` makes before it reads or
    trains anything (run key, method and options, checkpoint, recipe,
    decision, labels, fields the run would write), for callers that run
    it elsewhere later (sharded scoring) and must refuse bad arguments now.

    Returns:
        a ``RunPlan``: ``run_key``, ``threshold``, ``auto`` (the auto
        trial will choose), ``candidates`` (the methods built: the auto
        trial's, or the one method), ``method`` (the first of them),
        ``loaded_from`` (a checkpoint path or None), ``recipe`` (the
        :class:`~fiftyone_ncl.recipes.InputRecipe`), ``options`` (the
        method options, former recipe options removed)

    Raises:
        ValueError: naming the argument, option, field or file at fault
    """
    run_key = _one_key(run_key, brain_key)
    threshold = _check_threshold(threshold)
    _check_folds(folds, model)
    legacy = {k: options.pop(k) for k in _RECIPE_OPTIONS if k in options}
    auto = (method or (DEFAULT_METHOD if model is None else None)) == "auto"
    if auto:
        # every candidate is built now, so bad options fail before any data is read
        candidates = _auto_candidates(model, options)
        first, loaded_from = candidates[0], None
    else:
        first, loaded_from = _resolve_method(method, model, options)
        candidates = [first]
    recipe = make_recipe(
        recipe, image_embeddings, text_embeddings, encoder, image_encoder, text_encoder,
        checkpoint_spec=first.input_spec() if first.fitted else None, **legacy,
    )
    is_list = caption_kind(samples, caption_field) == "list"
    suffixes = list(dict.fromkeys(
        s for m in candidates for s in planned_suffixes(type(m), is_list, suggest, store_embeddings)))
    check_new_run_key(samples, run_key, overwrite, suffixes)
    _check_decision(decision, level)
    for candidate in candidates:
        _check_labels_apply(candidate, labels, decision)
    return RunPlan(run_key, threshold, auto, candidates, first, loaded_from, recipe, options)


def _one_key(run_key, brain_key):
    if brain_key is None:
        return run_key
    if run_key not in ("ncl", brain_key):
        raise ValueError("pass run_key or brain_key (the same thing), not both")
    return brain_key


def _check_decision(decision, level):
    """Refuses an unknown mode or a level outside its range before anything runs."""
    from fiftyone_ncl.core.decision import check_level

    check_level(decision, level)


def _check_folds(folds, model):
    if folds is None:
        return
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
        raise ValueError("folds must be an integer >= 2 (or None), got %r" % (folds,))
    if model is not None:
        raise ValueError("folds refits the method on parts of the data; a trained model (model=) is not refitted: "
                         "drop folds or model")


def _check_threshold(threshold):
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError("threshold must be a number in [0, 1], got %r" % (threshold,))
    return float(threshold)


def _resolve_method(method, model, options):
    """Builds (or loads) the method before any data is read; returns
    ``(method, checkpoint it was loaded from or None)``."""
    if model is None:
        return build_method(method or DEFAULT_METHOD, **options), None
    if isinstance(model, CorrespondenceMethod):
        if method is not None and method != model.name:
            raise ValueError("model is a %r method but method=%r" % (model.name, method))
        return model, None
    path = str(model)
    header = read_header(path)  # a missing, foreign or damaged file fails here, naming it
    if method is not None and method != header["method"]:
        raise ValueError("checkpoint %s holds a %r model but method=%r" % (path, header["method"], method))
    extra = sorted(set(options) - set(_RUNTIME_OPTIONS))
    if extra:
        raise ValueError(
            "options %s would change the trained model in %s; a checkpoint only takes %s"
            % (", ".join(extra), path, ", ".join(_RUNTIME_OPTIONS))
        )
    return load_method(path, **options), path


def _auto_candidates(model, options):
    """``method="auto"``: the candidates, built with the user's options (to
    refuse bad ones before reading data)."""
    from fiftyone_ncl.core.auto import CANDIDATES, FALLBACK, accepted_options

    if model is not None:
        raise ValueError("method='auto' chooses and trains a method; it takes no model= (name the method instead)")
    unknown = set(options)
    built = []
    for name, own in dict(CANDIDATES, **{FALLBACK: CANDIDATES.get(FALLBACK, {})}).items():
        taken = accepted_options(build_method, name, options)
        unknown -= set(taken)
        built.append(build_method(name, **dict(taken, **own)))
    if unknown:
        raise ValueError("method='auto': no candidate (%s) takes the options %s"
                         % (", ".join(CANDIDATES), ", ".join(sorted(unknown))))
    return built


def _choose(data, options, progress):
    """Runs the auto trial and builds the chosen method; returns ``(method, report)``."""
    from fiftyone_ncl.core.auto import CANDIDATES, FALLBACK, accepted_options, choose_method, fallback_reason

    seed = options.get("seed", 0)
    reason = fallback_reason(data)
    if reason is not None:
        logger.info("method='auto' runs %s without a trial: %s", FALLBACK, reason)
        report = {"chosen": FALLBACK, "reason": reason}
        return build_method(FALLBACK, **dict(accepted_options(build_method, FALLBACK, options),
                                             **CANDIDATES.get(FALLBACK, {}))), report
    name, own, report = choose_method(data, build_method, options, seed=seed, progress=progress)

    logger.info("method='auto' chose %s (trial AUROC on %.0f%% injected swaps: %s)", name, 100 * report["rate"],
                ", ".join("%s %.3f" % kv for kv in report["auroc"].items()))
    return build_method(name, **dict(accepted_options(build_method, name, options), **own)), report


def _health(method, data, verdict, scores):
    """The run's label-free health checks (:mod:`fiftyone_ncl.core.health`);
    a method on embeddings is held to a linear CCA of the same embeddings,
    judged the same way."""
    baseline = None
    # every method but the CCA itself: gmm / cosine / neighbors train heads on
    # unaligned inputs, and their decisions fail like the trained methods'
    if method.name != "cca" and data.towers == "frozen" and data.n_pairs >= 50:
        cca = build_method("cca", seed=getattr(method.config, "seed", 0))
        cca.fit(data, progress=False)
        judged = judge(cca, data, seed=getattr(method.config, "seed", 0))
        baseline = {"name": "cca", "rate": judged.rate, "statistic": judged.statistic}
    labels = None if scores.label is None else np.asarray(scores.label)
    return assess(verdict.rate, labels=labels, baseline=baseline, method=method.name,
                  statistic=verdict.statistic, label_info=(scores.info or {}).get("label_stats"))


def _input_image_embeddings(data):
    """The run's input image embeddings when it has them (N, D), the space
    where copies of one image are searched; None for pixels and images."""
    images = data.images
    if data.towers == "frozen" and getattr(images, "ndim", 0) == 2:
        return images
    return None


def _search_device():
    """Where the duplicate groups' neighbour search runs: the GPU when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else None


def _check_labels_apply(method, labels, decision):
    if labels is None:
        if decision == "f1":
            raise ValueError("decision='f1' needs labels: the pairs a person marked right and wrong")
        return
    if decision == "f1" and not getattr(method, "uses_labels", False):
        return  # the labels set the decision's cut only
    if not getattr(method, "uses_labels", False):
        raise ValueError("method %r does not learn from labels; methods that do: neighbors, ensemble" % method.name)
    if method.fitted:
        raise ValueError("labels are learned when the method is fitted; a trained model (model=) keeps "
                         "what it learned, so pass labels without model=")


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


def _visualize(samples, run_key, results, visualize):
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
    check_run(samples, run_key)
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
    # ranked by the method's statistic (the confidence is monotone in it but
    # saturates, and is flat where the scores show no mismatch population);
    # the decision is the run's own flags, whatever its mode
    rank = results.statistic if results.statistic is not None else results.confidence
    metrics = detection_metrics(np.asarray(flat), rank, flags=results.noisy)
    rate = results.mismatch_rate
    if rate:
        metrics.update(estimated_rate=rate.get("rate"), estimated_low=rate.get("low"),
                       estimated_high=rate.get("high"))
    results.metrics = metrics
    Correspondence.save_run_results(dataset, run_key, results)
    return metrics
