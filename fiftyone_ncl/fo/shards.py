"""Sharded scoring: a run's per-sample encoder work split over FiftyOne
delegated-operation workers, then one global step.

FiftyOne open source runs each queued operation on one worker (a worker
claims it atomically: ``set_running(required_state=QUEUED)``), and several
``fiftyone delegated launch`` workers share one queue; splitting one
operation across workers is Enterprise-only. So a sharded run is N queued
operations plus one more::

    queue_sharded_scoring(samples, shards=N, **compute_correspondence args)
        checks the arguments as compute_correspondence would, records a job
        document (collection ``ncl_shard_jobs``) and queues N ``score_shard``
        operations
    each shard (run_shard)                       on any worker, in parallel
        embeds its part of the images and captions with the run's encoders
        and stages the vectors in GridFS (bucket ``ncl_shard_parts``);
        nothing is written to the samples
    the global step (finalize_sharded_scoring)   queued by the last shard
        runs :func:`fiftyone_ncl.compute_correspondence` with the staged
        vectors in place of the encoders: the same code as one process
        (method, calibration, decision, mismatch estimate, suggestions), the
        fields written once by its journaled writer

What is split is what costs per sample: the encoders (image decoding and the
image and text towers). Scoring with a fitted model over those embeddings
(heads, calibration, decoys, the decision) needs every pair and runs in the
global step. A shard that fails or is killed leaves the samples untouched;
:meth:`ShardedJob.rerun_shard` runs it again, alone; the global step refuses
to start until every shard is done.

The partition: per side, the list one process would hand the encoder in one
call (file paths or captions, in collection order, or each distinct caption
once in sorted order for encoders that embed them so), cut into N ranges of
whole encoder batches. Each item is then embedded in the very batch one
process would embed it in, so the vectors, and the fields written from
them, are the same to the bit (batched text models round differently when a
batch pads to another length). The lists are fixed when the job is queued.
"""
import inspect
import json
import logging
import os
import time

import numpy as np
from bson import ObjectId, json_util

import fiftyone as fo
import fiftyone.core.view as fov

from fiftyone_ncl.encoders import get_encoder
from fiftyone_ncl.fo.pairs import read_pairs
from fiftyone_ncl.fo.shard_global import finalize_sharded_scoring
from fiftyone_ncl.fo.shard_store import (
    FINALIZE_OPERATOR,
    SHARD_OPERATOR,
    SIDES,
    STALE_AFTER,
    ShardedJobError,
    delete_parts,
    job_doc,
    jobs_collection,
    orphan_parts,
    pack,
    queue_operation,
    shard_status,
    upload,
    utcnow,
)
from fiftyone_ncl.fo.shard_worker import run_shard

logger = logging.getLogger(__name__)

__all__ = ["ShardedJob", "ShardedJobError", "finalize_sharded_scoring", "list_sharded_jobs", "load_sharded_job",
           "queue_sharded_scoring", "run_shard"]

DEFAULT_CHUNK = 1024  # items a shard embeds between progress reports (rounded to whole batches)
# arguments of compute_correspondence that a job cannot carry to a worker
_NOT_SHIPPABLE = ("samples", "progress", "caption_field", "run_key", "brain_key")


def queue_sharded_scoring(samples, caption_field="caption", shards=2, run_key="ncl", finalize=True,
                          delegation_target=None, global_threads=None, chunk_size=DEFAULT_CHUNK, chunk_delay=0.0,
                          **kwargs):
    """Queues a correspondence run as ``shards`` delegated operations plus a
    global step, for ``fiftyone delegated launch`` workers sharing this
    database.

    Each shard embeds its part of the images and captions (whole encoder
    batches of the list one process would embed, see the module's notes)
    with the run's encoders and stages the vectors; nothing is written to
    the samples. When the last shard is done, the global step runs
    :func:`fiftyone_ncl.compute_correspondence` with those vectors and
    writes the fields, as one process would have, to the bit.

    Args:
        samples: a dataset or view (persistent, so workers can load it)
        caption_field ("caption"): as in :func:`fiftyone_ncl.compute_correspondence`
        shards (2): number of shard operations (at most the number of
            encoder batches; ``batch_size`` sets their size)
        run_key ("ncl"): the run's key
        finalize (True): queue the global step when the last shard is done;
            False leaves it to :meth:`ShardedJob.finalize`
        delegation_target (None): the orchestrator to queue on, if any
        global_threads (None): CPU threads (torch, BLAS) of the global step
            wherever it runs; None = this process's torch thread count, so
            that a global step on a worker computes what this process would
            (CPU kernels may round differently with another count). Shards
            run with their worker's threads (``OMP_NUM_THREADS``)
        chunk_size (1024): items a shard embeds between progress reports
            (rounded down to whole batches)
        chunk_delay (0.0): seconds a shard sleeps after each chunk; a test
            hook that makes shards slow deterministically
        **kwargs: every other argument of
            :func:`fiftyone_ncl.compute_correspondence` (``method``,
            ``model``, ``recipe``, ``encoder``, ``image_encoder``,
            ``text_encoder``, ``image_embeddings``, ``text_embeddings``,
            ``decision``, options...). Encoders are spec strings (each worker
            builds its own); embeddings are field names (a field with an
            encoder caches: shards embed only the samples missing there);
            a model is a checkpoint path

    Returns:
        a :class:`ShardedJob`

    Raises:
        ValueError: before anything is queued, for arguments that
            :func:`fiftyone_ncl.compute_correspondence` would refuse, for
            arguments a worker cannot receive, when no side has encoder work
            to split, or when the operators are not installed
    """
    run_key = kwargs.pop("brain_key", None) or run_key
    kwargs.pop("progress", None)
    n_shards = _check_shards(shards, chunk_size, chunk_delay)
    global_threads = _check_threads(global_threads)
    sides, pairs = _check_run(samples, caption_field, run_key, kwargs)
    for uri in (SHARD_OPERATOR, FINALIZE_OPERATOR):
        _require_operator(uri)
    work = {side: _work_list(samples, pairs, side, info) for side, info in sides.items()}
    if "image" in work:
        from fiftyone_ncl.encoders import check_media_exists

        check_media_exists(work["image"])  # a missing file fails now, not in a shard
    batches = {side: -(-len(work[side]) // info["batch_size"]) for side, info in sides.items()}
    most = max(batches.values())
    if most == 0:
        raise ValueError("nothing to shard: every embedding is already cached in %s; run compute_correspondence "
                         "directly" % " and ".join(repr(i["field"]) for i in sides.values()))
    if n_shards > most:
        raise ValueError("shards=%d: the encoders have %d batches of work (%s); use at most %d shards, or a "
                         "smaller batch_size" % (n_shards, most, ", ".join(
                             "%s: %d items in batches of %d" % (side, len(work[side]), sides[side]["batch_size"])
                             for side in sides), most))
    dataset = samples._dataset
    if not dataset.persistent:
        logger.warning("dataset %r is not persistent: workers find it only while this process keeps it alive "
                       "(set dataset.persistent = True)", dataset.name)
    now = utcnow()
    doc = {
        "_id": ObjectId(),
        "dataset_id": dataset._doc.id,
        "dataset_name": dataset.name,
        "view": json_util.dumps(samples._serialize()) if isinstance(samples, fov.DatasetView) else None,
        "caption_field": caption_field,
        "run_key": run_key,
        "kwargs": json.dumps(kwargs),
        "sides": {side: dict(info, items=len(work[side]), batches=batches[side]) for side, info in sides.items()},
        "n_samples": pairs.n_images,
        "chunk_size": int(chunk_size),
        "chunk_delay": float(chunk_delay),
        "auto_finalize": bool(finalize),
        "global_threads": global_threads,
        "delegation_target": delegation_target,
        "state": "sharding",
        "created_at": now,
        "updated_at": now,
        "shards": [],
        "finalize": {"state": None, "operation": None, "error": None, "progress": 0.0},
    }
    for i in range(n_shards):
        ranges = {side: _batch_range(i, n_shards, batches[side], sides[side]["batch_size"], len(work[side]))
                  for side in sides}
        inputs = {side: work[side][lo:hi] for side, (lo, hi) in ranges.items()}
        doc["shards"].append({
            "index": i, "ranges": ranges, "items": {side: len(v) for side, v in inputs.items()},
            "input": upload(doc["_id"], "input-%d" % i, pack(inputs, {}), {"shard": i, "kind": "input"}),
            "state": "queued", "attempt": 1, "progress": 0.0, "operation": None, "part": None, "error": None,
        })
    jobs_collection().insert_one(doc)
    for i in range(n_shards):
        try:
            _queue_shard(doc, i)
        except Exception as e:
            failed = {}
            for k in range(i, n_shards):
                failed.update({"shards.%d.state" % k: "failed", "shards.%d.error" % k: "could not be queued: %s" % e})
            jobs_collection().update_one({"_id": doc["_id"]}, {"$set": failed})
            raise ShardedJobError("job %s: shards %d to %d could not be queued (%s); queue them with "
                                  "job.rerun_shard(i)" % (doc["_id"], i, n_shards - 1, e)) from e
    logger.info("sharded job %s: %d shards queued for run %r (%s)", doc["_id"], n_shards, run_key,
                ", ".join("%s: %d items" % (side, len(work[side])) for side in sides))
    return ShardedJob(doc["_id"])


def _batch_range(i, n_shards, n_batches, batch_size, n_items):
    """Items ``[lo, hi)`` of shard ``i``: whole encoder batches, so that every
    item is embedded in the very batch one process would embed it in."""
    lo = (i * n_batches // n_shards) * batch_size
    hi = ((i + 1) * n_batches // n_shards) * batch_size
    return [min(lo, n_items), min(hi, n_items)]


def _check_shards(shards, chunk_size, chunk_delay):
    for name, value in (("shards", shards), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError("%s must be a whole number >= 1, got %r" % (name, value))
    if isinstance(chunk_delay, bool) or not isinstance(chunk_delay, (int, float)) or chunk_delay < 0:
        raise ValueError("chunk_delay must be a number of seconds >= 0, got %r" % (chunk_delay,))
    return int(shards)


def _check_threads(threads):
    import torch

    if threads is None:
        return int(torch.get_num_threads())
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError("global_threads must be a whole number >= 1 (or None), got %r" % (threads,))
    return int(threads)


def _check_run(samples, caption_field, run_key, kwargs):
    """Checks that a run can be sharded, as
    :func:`fiftyone_ncl.compute_correspondence` checks its arguments (run
    key, method, options, recipe, decision, labels, captions), plus what a
    worker needs: spec-string encoders that give the same vectors in every
    process, field names or encoders for the embeddings, a checkpoint path
    for a model, JSON-friendly arguments.

    Returns:
        ``(sides, pairs)``: what the shards compute per side
        (``{"image": {...}, "text": {...}}``: encoder spec, name, space,
        cache field, batching) and the collection's pairs

    Raises:
        ValueError: naming the argument, field or sample at fault
    """
    from fiftyone_ncl.core.methods.base import CorrespondenceMethod

    bad = sorted(set(kwargs) & set(_NOT_SHIPPABLE))
    if bad:
        raise TypeError("unexpected argument(s) %s" % ", ".join(bad))
    model = kwargs.get("model")
    if isinstance(model, CorrespondenceMethod):
        raise ValueError("model: a fitted method object cannot be sent to a worker; save it "
                         "(method.save(path)) and pass the checkpoint path")
    for side in SIDES:
        given = kwargs.get("%s_embeddings" % side)
        if given is not None and not isinstance(given, str):
            raise ValueError("%s_embeddings: an array cannot be sent to the shard workers; store it in a "
                             "vector field and pass the field name" % side)
    for name in ("encoder", "image_encoder", "text_encoder"):
        if kwargs.get(name) is not None and not isinstance(kwargs[name], str):
            raise ValueError("%s: pass an encoder spec string (e.g. 'open_clip:ViT-B-32:<weights>'), "
                             "from which each worker builds its own encoder" % name)
    for name in ("model", "save_checkpoint"):  # paths the workers open: absolute
        if isinstance(kwargs.get(name), str) and os.path.exists(kwargs[name]):
            kwargs[name] = os.path.abspath(kwargs[name])
    try:
        json.dumps(kwargs)
    except TypeError as e:
        raise ValueError("sharded scoring sends its arguments to workers as JSON: %s" % e) from e

    # the checks compute_correspondence makes before reading anything
    from fiftyone_ncl.correspondence import compute_correspondence, plan_run

    # arguments of the run itself that are not checked in advance (batch_size, visualize...)
    later = set(inspect.signature(compute_correspondence).parameters) - set(inspect.signature(plan_run).parameters)
    recipe = plan_run(samples, caption_field, run_key=run_key,
                      **{k: v for k, v in kwargs.items() if k not in later}).recipe
    if recipe.towers != "frozen":
        raise ValueError(
            "recipe with %r towers: the method itself reads pixels or images and trains end to end, which "
            "shards do not split; run compute_correspondence (delegated) instead" % recipe.towers)
    pairs = read_pairs(samples, caption_field)  # missing or blank captions fail here, naming the samples

    sides = {}
    for side in SIDES:
        spec = getattr(recipe, "%s_encoder" % side)
        field = getattr(recipe, "%s_embeddings" % side)
        if spec is None:
            continue  # read from its field by the global step
        sides[side] = _side(samples, side, spec, field, kwargs.get("batch_size"))
    if not sides:
        raise ValueError("nothing to shard: both sides come from stored embedding fields, and shards split "
                         "encoder work; run compute_correspondence directly")
    return sides, pairs


def _side(samples, side, spec, field, batch_size):
    """What the shards compute for one side, checked before anything is queued."""
    from fiftyone_ncl.encoders import OpenClipEncoder, PixelEncoder, SentenceTransformerEncoder
    from fiftyone_ncl.fo.embeddings import INFO_ENCODER

    encoder = get_encoder(spec)
    if isinstance(encoder, OpenClipEncoder) and encoder.pretrained is None:
        raise ValueError("%s encoder %s has random weights, drawn anew in every worker: shards would embed in "
                         "different spaces; pass pretrained weights or a checkpoint file" % (side, encoder.name))
    if not (encoder.embeds_images if side == "image" else encoder.embeds_texts):
        raise ValueError("encoder %s cannot embed %s" % (encoder.name, "images" if side == "image" else "captions"))
    if field is not None:
        existing = samples.get_field(field)
        recorded = ((existing.info or {}).get(INFO_ENCODER) if existing is not None else None)
        if recorded is not None and recorded != encoder.name:
            raise ValueError("%s embeddings field %r holds embeddings from %s, not %s; pass another field name "
                             "or delete it" % (side, field, recorded, encoder.name))
    # how the encoder batches a list it is given in one call: a shard must
    # cut the list where one process would, or rows may round differently
    if isinstance(encoder, (SentenceTransformerEncoder, PixelEncoder)):
        order = "unique"  # embeds each distinct item once, in sorted order (pixels: row by row)
    else:
        order = "as_given"
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError("batch_size must be a whole number >= 1, got %r" % (batch_size,))
    batch = batch_size or getattr(encoder, "batch_size", None) or 512
    return {"encoder": spec, "name": encoder.name, "space": encoder.space, "field": field, "order": order,
            "batch_size": int(batch)}


def _work_list(samples, pairs, side, info):
    """What one process would hand the side's encoder in one call (file paths
    or captions, of every sample or only of those missing from the cache
    field, as :func:`fiftyone_ncl.fo.embeddings.gather_inputs` reads them),
    in the order the encoder embeds it."""
    from fiftyone_ncl.fo.vectors import read_rows

    rows = np.arange(pairs.n_images if side == "image" else pairs.n_pairs)
    field = info["field"]
    if field is not None and samples.get_field(field) is not None:
        counts = np.bincount(pairs.image_index, minlength=pairs.n_images) if side == "text" else None
        missing = np.asarray(read_rows(samples, field, counts)[1], dtype=np.int64)
        rows = missing if side == "image" else np.flatnonzero(np.isin(pairs.image_index, missing))
    items = [pairs.filepaths[r] for r in rows] if side == "image" else [pairs.captions[r] for r in rows]
    if info["order"] == "unique":
        items = sorted(set(items))
    return items


def _require_operator(uri):
    import fiftyone.operators as foop

    if not foop.operator_exists(uri):
        raise ValueError("operator %s is not available in this process: install the fiftyone-ncl plugin in "
                         "FiftyOne's plugins dir (%s); the workers need it there too" % (uri, fo.config.plugins_dir))


def _queue_shard(doc, index):
    shard = doc["shards"][index]
    label = "ncl shard %d/%d of run %r (job %s)" % (index + 1, len(doc["shards"]), doc["run_key"], doc["_id"])
    op_id = queue_operation(doc, SHARD_OPERATOR, {"job_id": str(doc["_id"]), "shard": index, "label": label})
    jobs_collection().update_one({"_id": doc["_id"], "shards.%d.attempt" % index: shard["attempt"]},
                       {"$set": {"shards.%d.operation" % index: op_id, "updated_at": utcnow()}})
    return op_id


class ShardedJob:
    """A handle on a sharded run (:func:`queue_sharded_scoring`,
    :func:`load_sharded_job`)."""

    def __init__(self, job_id):
        self.id = str(job_id)

    def __repr__(self):
        st = self.status()
        return "<ShardedJob %s: run %r on %r, %s, %d shards, %.0f%%>" % (
            self.id, st["run_key"], st["dataset"], st["state"], len(st["shards"]), 100 * st["progress"])

    def status(self, stale_after=STALE_AFTER):
        """Where the job stands, per shard and overall.

        A running shard whose worker process is gone (same host) or silent
        for ``stale_after`` seconds shows as ``"lost"``.

        Returns:
            a dict: ``job_id``, ``dataset``, ``run_key``, ``state``
            (``"sharding"``, ``"sharded"``, ``"finalize_queued"``,
            ``"finalizing"``, ``"complete"``, ``"failed"``), ``progress``
            (0..1 overall), ``shards`` (``index``, ``state``: queued /
            running / done / failed / lost, ``progress``, ``items``
            (images and captions it embeds), ``attempt``, ``worker``,
            ``error``, ``operation``), ``finalize`` and ``message`` (what to
            do next, if anything)
        """
        doc = job_doc(self.id)
        shards = [shard_status(s, stale_after) for s in doc["shards"]]
        total = float(sum(sum(s["items"].values()) for s in shards)) or 1.0
        embedded = sum(sum(s["items"].values()) * s["progress"] for s in shards) / total
        fin = doc.get("finalize") or {}
        overall = 1.0 if doc["state"] == "complete" else 0.9 * embedded + 0.1 * float(fin.get("progress") or 0.0)
        return {
            "job_id": self.id,
            "dataset": doc["dataset_name"],
            "run_key": doc["run_key"],
            "state": doc["state"],
            "progress": overall,
            "samples": doc["n_samples"],
            "shards": shards,
            "finalize": {k: fin.get(k) for k in ("state", "progress", "operation", "error", "summary")},
            "message": _next_step(doc, shards),
        }

    def wait(self, timeout=None, poll=1.0, stale_after=STALE_AFTER):
        """Waits until the job is complete.

        Returns:
            the final :meth:`status`

        Raises:
            ShardedJobError: when a shard fails or is lost, or the global
                step fails (the message names them)
            TimeoutError: after ``timeout`` seconds
        """
        start = time.monotonic()
        while True:
            st = self.status(stale_after=stale_after)
            if st["state"] == "complete":
                return st
            broken = [s for s in st["shards"] if s["state"] in ("failed", "lost")]
            if broken or st["state"] == "failed":
                raise ShardedJobError("job %s: %s" % (self.id, st["message"]))
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError("job %s is not complete after %ss: %s" % (self.id, timeout, _brief(st)))
            time.sleep(poll)

    def rerun_shard(self, shard, delegate=True, force=False, stale_after=STALE_AFTER):
        """Runs one shard again, alone: its earlier attempt's staged vectors
        are discarded and its operation marked failed.

        Args:
            shard: the shard's index
            delegate (True): queue it for a worker; False runs it here
            force (False): rerun a shard that is done, or that seems to be
                running (its worker is on another host and still beats)

        Returns:
            the queued operation's id (``delegate=True``), or the shard's
            :func:`run_shard` summary
        """
        doc = job_doc(self.id)
        shard = int(shard)
        if not 0 <= shard < len(doc["shards"]):
            raise ValueError("job %s has shards 0 to %d, not %d" % (self.id, len(doc["shards"]) - 1, shard))
        current = shard_status(doc["shards"][shard], stale_after)
        if doc["state"] in ("finalizing", "complete"):
            raise ShardedJobError("job %s is %s: its shards can no longer change" % (self.id, doc["state"]))
        if current["state"] in ("done", "running", "queued") and not force:
            raise ShardedJobError("shard %d is %s%s; pass force=True to run it again anyway"
                                  % (shard, current["state"], " in %s" % current["worker"] if current["worker"]
                                     else ""))
        _fail_operation(doc["shards"][shard].get("operation"), "superseded by a rerun of shard %d" % shard)
        if doc["state"] == "finalize_queued":  # a queued global step would only find the shard pending
            _fail_operation((doc.get("finalize") or {}).get("operation"), "shard %d was re-queued" % shard)
        key = "shards.%d." % shard
        old = doc["shards"][shard]
        moved = jobs_collection().find_one_and_update(
            {"_id": doc["_id"], key + "attempt": old["attempt"]},
            {"$set": {key + "state": "queued", key + "attempt": old["attempt"] + 1, key + "progress": 0.0,
                      key + "error": None, key + "part": None, key + "operation": None,
                      "state": "sharding", "finalize.state": None, "updated_at": utcnow()}},
            return_document=True,
        )
        if moved is None:
            raise ShardedJobError("shard %d changed while it was being re-queued; look at job.status()" % shard)
        delete_parts(orphan_parts(moved["_id"], shard=shard))  # the earlier attempts' vectors
        if not delegate:
            return run_shard(self.id, shard)
        return _queue_shard(moved, shard)

    def finalize(self, progress=True, force=False):
        """Runs the global step in this process (see
        :func:`finalize_sharded_scoring`); returns the run's results."""
        return finalize_sharded_scoring(self.id, progress=progress, force=force)

    def delete(self):
        """Removes the job's record and staged vectors (not the run it wrote)."""
        doc = job_doc(self.id)
        delete_parts(orphan_parts(doc["_id"], inputs=True))
        jobs_collection().delete_one({"_id": doc["_id"]})


def _next_step(doc, shards):
    broken = [s for s in shards if s["state"] in ("failed", "lost")]
    if broken:
        return "; ".join("shard %d is %s: %s" % (s["index"], s["state"], s["error"]) for s in broken) + \
            "; rerun it with job.rerun_shard(i) (the samples are unchanged)"
    if doc["state"] == "sharded":
        return "every shard is done; run job.finalize() to score and write the run"
    if doc["state"] == "failed":
        return "the global step failed: %s; fix it and run job.finalize() again" % doc["finalize"].get("error")
    if doc["state"] == "complete":
        return "run %r is written" % doc["run_key"]
    waiting = [s["index"] for s in shards if s["state"] == "queued"]
    if waiting and not any(s["state"] == "running" for s in shards):
        return "shards %s are queued: start workers with `fiftyone delegated launch`" % waiting
    return None


def _brief(st):
    return ", ".join("shard %d %s %.0f%%" % (s["index"], s["state"], 100 * s["progress"]) for s in st["shards"]) + \
        ", job %s" % st["state"]


def _fail_operation(op_id, why):
    """Marks a delegated operation failed if it is still queued or running."""
    if not op_id:
        return
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionResult, ExecutionRunState

    service = DelegatedOperationService()
    try:
        op = service.get(ObjectId(op_id))
    except Exception:  # pylint: disable=broad-except
        return
    if op is not None and op.run_state in (ExecutionRunState.QUEUED, ExecutionRunState.RUNNING):
        service.set_failed(op.id, result=ExecutionResult(error=why), required_state=op.run_state)


def load_sharded_job(job_id):
    """The :class:`ShardedJob` with this id."""
    job_doc(job_id)
    return ShardedJob(job_id)


def list_sharded_jobs(samples):
    """The sharded jobs of a collection's dataset, newest first, as
    :meth:`ShardedJob.status` dicts."""
    dataset = samples._dataset
    docs = jobs_collection().find({"dataset_id": dataset._doc.id}, {"_id": 1}).sort("created_at", -1)
    return [ShardedJob(d["_id"]).status() for d in docs]
