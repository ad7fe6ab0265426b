"""The global step of a sharded job: the shards' vectors handed to
:func:`fiftyone_ncl.compute_correspondence` as encoders, so that scoring,
calibration, the decision and the write are one process's code."""
import contextlib
import json
import time

import numpy as np
from bson import ObjectId

from fiftyone_ncl.encoders.base import Encoder
from fiftyone_ncl.fo.shard_store import (
    STALE_AFTER,
    ShardedJobError,
    delete_parts,
    describe_worker,
    download,
    job_doc,
    jobs_collection,
    orphan_parts,
    samples_of,
    shard_status,
    this_worker,
    unpack,
    utcnow,
)

class StagedEncoder(Encoder):
    """Vectors that shards computed, handed to the global step as an
    encoder: ``compute_correspondence`` asks it for the embeddings of file
    paths or captions and gets the shards' vectors, under the original
    encoder's name and space (so cache fields and joint-space checks read as
    if that encoder ran here).

    Asked for exactly the list the shards embedded (an encoder that embeds
    what it is given in order), it returns their vectors row for row;
    otherwise (an encoder that embeds each distinct item once) it looks each
    item up.
    """

    def __init__(self, side, name, space, items, vectors):
        self.side = side
        self.name = name
        self.space = space
        self.embeds_images = side == "image"
        self.embeds_texts = side == "text"
        self._items = list(items)
        self._vectors = vectors
        self._row = None

    def _lookup(self, items, what):
        items = list(items)
        if items == self._items:
            return self._vectors
        if self._row is None:
            self._row = {}
            for i, k in enumerate(self._items):
                self._row.setdefault(k, i)
        missing = [k for k in items if k not in self._row]
        if missing:
            raise ShardedJobError(
                "%d %s(s) were not embedded by any shard (e.g. %r): the collection changed since the job was "
                "queued (samples added, files or captions edited); queue the run again"
                % (len(missing), what, missing[0]))
        return self._vectors[[self._row[k] for k in items]]

    def embed_images(self, filepaths, batch_size=None, progress=True):
        return self._lookup(filepaths, "image file")

    def embed_texts(self, texts, batch_size=None, progress=True):
        return self._lookup(texts, "caption")


def finalize_sharded_scoring(job_id, progress=True, force=False):
    """The global step of a sharded job: scores the collection with the
    shards' vectors by :func:`fiftyone_ncl.compute_correspondence` (same
    arguments, same code as one process) and writes the run once; then
    removes the staged vectors.

    Args:
        job_id: the job's id
        progress (True): as in :func:`fiftyone_ncl.compute_correspondence`
        force (False): take over a global step that another process started
            and did not finish (it died)

    Returns:
        the run's :class:`~fiftyone_ncl.fo.runs.CorrespondenceResults`

    Raises:
        ShardedJobError: naming the shards that are not done, or when
            another process is finalizing the job
    """
    from fiftyone_ncl.correspondence import compute_correspondence
    from fiftyone_ncl.fo.runs import load_run_results
    from fiftyone_ncl.utils import to_jsonable

    jobs = jobs_collection()
    job_id = ObjectId(str(job_id))
    doc = job_doc(job_id)
    if doc["state"] == "complete":
        return load_run_results(samples_of(doc), doc["run_key"])
    pending = [shard_status(s, STALE_AFTER) for s in doc["shards"] if s["state"] != "done"]
    if pending:
        raise ShardedJobError("job %s cannot be finalized: %s" % (job_id, "; ".join(
            "shard %d is %s%s" % (s["index"], s["state"], " (%s)" % s["error"] if s.get("error") else "")
            for s in pending)) + "; rerun failed shards with job.rerun_shard(i)")
    # "sharding" too: a shard's worker may die between its commit and moving the job on
    allowed = ["sharding", "sharded", "finalize_queued", "failed"] + (["finalizing"] if force else [])
    claimed = jobs.find_one_and_update(
        {"_id": job_id, "state": {"$in": allowed}},
        {"$set": {"state": "finalizing", "finalize.state": "running", "finalize.worker": this_worker(),
                  "finalize.started_at": utcnow(), "finalize.error": None, "updated_at": utcnow()}},
        return_document=True,
    )
    if claimed is None:
        doc = job_doc(job_id)
        raise ShardedJobError("job %s is %s%s" % (job_id, doc["state"], " by %s" % describe_worker(doc["finalize"].get("worker"))
                                                 if doc["state"] == "finalizing" else "") +
                              ("; pass force=True if that process is gone" if doc["state"] == "finalizing" else ""))
    cpu = time.process_time()
    try:
        samples = samples_of(claimed)
        kwargs = json.loads(claimed["kwargs"])
        kwargs.pop("encoder", None)
        for side, (keys, vectors) in _gather_parts(claimed).items():
            info = claimed["sides"][side]
            kwargs["%s_encoder" % side] = StagedEncoder(side, info["name"], info["space"], keys, vectors)
        with _torch_threads(claimed.get("global_threads")):
            results = compute_correspondence(samples, claimed["caption_field"], run_key=claimed["run_key"],
                                             progress=_finalize_progress(job_id, progress), **kwargs)
    except BaseException as e:
        jobs.update_one({"_id": job_id}, {"$set": {"state": "failed", "finalize.state": "failed",
                                                   "finalize.error": "%s: %s" % (type(e).__name__, e),
                                                   "finalize.ended_at": utcnow(), "updated_at": utcnow()}})
        raise
    jobs.update_one({"_id": job_id}, {"$set": dict(
        {"shards.%d.part" % i: None for i in range(len(claimed["shards"]))},
        **{"shards.%d.input" % i: None for i in range(len(claimed["shards"]))},
        state="complete", updated_at=utcnow(), **{"finalize.state": "done", "finalize.progress": 1.0,
                                                "finalize.cpu_s": time.process_time() - cpu,
                                                "finalize.ended_at": utcnow(),
                                                "finalize.summary": to_jsonable(results.summary())})})
    delete_parts(orphan_parts(job_id, inputs=True))  # the staged vectors and inputs are spent
    return results


@contextlib.contextmanager
def _torch_threads(threads):
    """torch's CPU threads and the BLAS / OpenMP pools numpy and
    scikit-learn use, set to ``threads`` for a while (None: as they are)."""
    import torch
    from threadpoolctl import threadpool_limits

    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        with threadpool_limits(limits=int(threads)):
            yield
    finally:
        torch.set_num_threads(before)


def _gather_parts(doc):
    """The staged vectors of every shard, per side, in shard order (the
    order of the work list): ``{side: (items, vectors)}``."""
    items = {side: [] for side in doc["sides"]}
    arrays = {side: [] for side in doc["sides"]}
    for shard in doc["shards"]:
        for side, (k, v) in unpack(download(shard["part"])).items():
            if len(k):
                items[side].extend(k)
                arrays[side].append(v)
    return {side: (items[side], np.concatenate(arrays[side]) if arrays[side] else np.zeros((0, 0), np.float32))
            for side in items}


def _finalize_progress(job_id, progress):
    """A progress callable that records the global step's progress on the
    job (at most once a second) and forwards it to ``progress`` when that
    is a callable (bars are not drawn: the job's status shows it)."""
    last = [0.0]

    def report(fraction, label):
        now = time.monotonic()
        if now - last[0] >= 1.0 or fraction >= 1.0:
            last[0] = now
            jobs_collection().update_one({"_id": job_id}, {"$set": {"finalize.progress": float(fraction),
                                                          "finalize.label": label}})
        if callable(progress):
            progress(fraction, label)

    return report
