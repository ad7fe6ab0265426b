"""A shard of a sharded job, on a delegated-operation worker: embeds its
part of the images and captions and stages the vectors; the last shard to
finish moves the job on to its global step."""
import time

import numpy as np
from bson import ObjectId

from fiftyone_ncl.encoders import get_encoder
from fiftyone_ncl.fo.shard_store import (
    FINALIZE_OPERATOR,
    ShardedJobError,
    delete_parts,
    download,
    job_doc,
    jobs_collection,
    queue_operation,
    stage_vectors,
    this_worker,
    unpack,
    utcnow,
)

_ENCODERS = {}  # spec -> encoder, reused by the shards one worker process runs


def run_shard(job_id, shard, progress=None):
    """Computes one shard of a sharded job (what the ``score_shard``
    operation runs on a worker): embeds its samples' images and captions
    and stages the vectors. The samples are not written. A shard that is
    already done is left as it is.

    Args:
        job_id: the job's id
        shard: the shard's index
        progress (None): ``fn(fraction, label)``

    Returns:
        a dict: the shard's index, state, and items embedded per side

    Raises:
        ShardedJobError: if the shard is running elsewhere or failed (rerun
            it with :meth:`ShardedJob.rerun_shard`)
    """
    jobs = jobs_collection()
    job_id = ObjectId(str(job_id))
    shard = int(shard)
    doc = job_doc(job_id)
    if not 0 <= shard < len(doc["shards"]):
        raise ValueError("job %s has shards 0 to %d, not %d" % (job_id, len(doc["shards"]) - 1, shard))
    key = "shards.%d." % shard
    claimed = jobs.find_one_and_update(
        {"_id": job_id, key + "state": "queued"},
        {"$set": {key + "state": "running", key + "worker": this_worker(), key + "started_at": utcnow(),
                  key + "heartbeat": utcnow(), key + "progress": 0.0, key + "error": None, "updated_at": utcnow()}},
        return_document=True,
    )
    if claimed is None:
        current = doc["shards"][shard]
        if current["state"] == "done":
            return {"shard": shard, "state": "done", "note": "already done"}
        raise ShardedJobError("shard %d of job %s is %s%s; rerun it with ncl.load_sharded_job(%r).rerun_shard(%d)"
                              % (shard, job_id, current["state"],
                                 ": %s" % current["error"] if current.get("error") else "", str(job_id), shard))
    attempt = claimed["shards"][shard]["attempt"]
    mine = {"_id": job_id, key + "attempt": attempt, key + "state": "running"}
    part_id = None
    cpu = time.process_time()
    try:
        staged = _embed_shard(claimed, shard, lambda f, label: _beat(mine, key, f, label, progress))
        part_id = stage_vectors(claimed, shard, attempt, staged)
        done = jobs.update_one(mine, {"$set": {key + "state": "done", key + "part": part_id, key + "progress": 1.0,
                                               key + "ended_at": utcnow(), key + "cpu_s": time.process_time() - cpu,
                                               "updated_at": utcnow()}})
        if done.modified_count == 0:
            raise ShardedJobError("shard %d of job %s was re-queued while this attempt (%d) ran; its vectors are "
                                  "discarded" % (shard, job_id, attempt))
    except BaseException as e:
        if part_id is not None:
            delete_parts([part_id])
        jobs.update_one(mine, {"$set": {key + "state": "failed", key + "error": "%s: %s" % (type(e).__name__, e),
                                        key + "ended_at": utcnow(), "updated_at": utcnow()}})
        raise
    if callable(progress):
        progress(1.0, "shard %d staged" % shard)
    _after_shard(job_id)
    return {"shard": shard, "state": "done", "embedded": {side: len(items) for side, (items, _) in staged.items()}}


def _beat(mine, key, fraction, label, progress):
    """Records a shard's progress and heartbeat (only while this attempt owns it)."""
    jobs_collection().update_one(mine, {"$set": {key + "progress": float(fraction), key + "heartbeat": utcnow()}})
    if callable(progress):
        progress(fraction, label)


def _embed_shard(doc, shard, beat):
    """``{side: (items, vectors)}``: the shard's items (file paths or
    captions) embedded by the side's encoder, in chunks of whole batches."""
    info = doc["shards"][shard]
    inputs = unpack(download(info["input"]))
    total = float(sum(len(items) for items, _ in inputs.values())) or 1.0
    delay = doc.get("chunk_delay") or 0.0
    out, done = {}, 0
    beat(0.0, "shard %d: starting" % shard)
    for side, (items, _) in inputs.items():
        side_info = doc["sides"][side]
        encoder = _encoder(side_info["encoder"])
        batch = side_info["batch_size"]
        chunk = max(1, doc["chunk_size"] // batch) * batch
        embed = encoder.embed_images if side == "image" else encoder.embed_texts
        parts = []
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            parts.append(np.asarray(embed(part, batch_size=batch, progress=False), dtype=np.float32))
            done += len(part)
            if delay:
                time.sleep(delay)
            beat(done / total, "shard %d: %d of %d %s" % (shard, start + len(part), len(items),
                                                          "images" if side == "image" else "captions"))
        out[side] = (items, np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))
    return out


def _encoder(spec):
    if spec not in _ENCODERS:
        _ENCODERS[spec] = get_encoder(spec)
    return _ENCODERS[spec]


def _after_shard(job_id):
    """Moves a job whose shards are all done on to its global step, in one
    atomic update (of the shards finishing together, one makes the move);
    the one that does queues the global step when the job finalizes by
    itself."""
    jobs = jobs_collection()
    probe = jobs.find_one({"_id": job_id}, {"auto_finalize": 1})
    auto = bool(probe and probe.get("auto_finalize"))
    doc = jobs.find_one_and_update(
        {"_id": job_id, "state": "sharding", "shards": {"$not": {"$elemMatch": {"state": {"$ne": "done"}}}}},
        {"$set": {"state": "finalize_queued" if auto else "sharded", "finalize.state": "queued" if auto else None,
                  "updated_at": utcnow()}},
        return_document=True,
    )
    if doc is None or not auto:
        return
    try:
        op_id = queue_operation(doc, FINALIZE_OPERATOR, {
            "job_id": str(job_id), "label": "ncl global step of run %r (job %s)" % (doc["run_key"], job_id)})
    except Exception as e:  # pylint: disable=broad-except
        jobs.update_one({"_id": job_id}, {"$set": {"state": "sharded", "finalize.state": None,
                                                   "finalize.error": "could not queue: %s" % e}})
        raise
    jobs.update_one({"_id": job_id}, {"$set": {"finalize.operation": op_id}})
