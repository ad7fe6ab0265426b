"""Where a sharded job lives between processes: its record (collection
``ncl_shard_jobs``), the shards' inputs and staged vectors (GridFS bucket
``ncl_shard_parts``), and the delegated operations that carry it
(:mod:`fiftyone_ncl.fo.shards` explains the design)."""
import io
import json
import logging
import os
import socket
import threading
from datetime import datetime, timezone

import numpy as np
from bson import ObjectId, json_util

import fiftyone as fo
import fiftyone.core.odm as foo
import fiftyone.core.view as fov

logger = logging.getLogger(__name__)

JOBS = "ncl_shard_jobs"
BUCKET = "ncl_shard_parts"
PLUGIN = "@fiftyone-ncl/ncl"
SHARD_OPERATOR = PLUGIN + "/score_shard"
FINALIZE_OPERATOR = PLUGIN + "/finalize_sharded_correspondence"
STALE_AFTER = 900.0  # seconds without a heartbeat before a running shard counts as lost
SIDES = ("image", "text")


class ShardedJobError(RuntimeError):
    """A sharded job cannot go on: a shard failed, is not done, or the
    collection changed since the job was queued; the message says which and
    what to do."""


def jobs_collection():
    return foo.get_db_conn()[JOBS]


def parts_bucket():
    import gridfs

    return gridfs.GridFSBucket(foo.get_db_conn(), bucket_name=BUCKET)


def utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def job_doc(job_id):
    doc = jobs_collection().find_one({"_id": ObjectId(str(job_id))})
    if doc is None:
        raise ValueError("no sharded job %s in this database (deleted, or another FIFTYONE_DATABASE_NAME?)" % job_id)
    return doc


def this_worker():
    return {"pid": os.getpid(), "host": socket.gethostname()}


def describe_worker(worker):
    return "process %s on %s" % (worker.get("pid"), worker.get("host")) if worker else "another process"


def samples_of(doc):
    """The collection a job scores: its dataset (found by id, so a rename
    does not lose it) with the job's view stages."""
    row = foo.get_db_conn().datasets.find_one({"_id": doc["dataset_id"]}, {"name": 1})
    if row is None:
        raise ShardedJobError("the dataset of sharded job %s (%r) no longer exists" % (doc["_id"], doc["dataset_name"]))
    # reloaded: a worker lives long, and other processes change the dataset between its jobs
    dataset = fo.load_dataset(row["name"], reload=True)
    if not doc.get("view"):
        return dataset
    return fov.DatasetView._build(dataset, json_util.loads(doc["view"]))


def _execute_in_thread(fn, *args, **kwargs):
    """Runs ``fn`` in a fresh thread and returns its result: FiftyOne's
    ``execute_operator`` runs its own event loop only where none runs (not
    inside a worker's operation, nor in Jupyter)."""
    out = {}

    def target():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # pylint: disable=broad-except
            out["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def queue_operation(doc, uri, params):
    """Queues a delegated operation on the job's dataset; returns its id."""
    import fiftyone.operators as foop

    ctx = {"dataset": samples_of(doc)._dataset, "params": params}
    if doc.get("delegation_target"):
        ctx["delegation_target"] = doc["delegation_target"]
    result = _execute_in_thread(foop.execute_operator, uri, ctx, request_delegation=True)
    return str(result.result["id"])


def pack(items, vectors):
    """``.npz`` bytes of ``{side: items}`` (as UTF-8 JSON) and ``{side: vectors}``."""
    buf = io.BytesIO()
    arrays = {"%s_items" % side: np.frombuffer(json.dumps(v).encode("utf-8"), dtype=np.uint8)
              for side, v in items.items()}
    arrays.update({"%s_vectors" % side: v for side, v in vectors.items()})
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack(data):
    """``{side: (items, vectors or None)}`` of :func:`_pack` bytes."""
    arrays = np.load(io.BytesIO(data), allow_pickle=False)
    out = {}
    for side in SIDES:
        if "%s_items" % side in arrays.files:
            items = json.loads(bytes(arrays["%s_items" % side]).decode("utf-8"))
            vectors = arrays["%s_vectors" % side] if "%s_vectors" % side in arrays.files else None
            out[side] = (items, vectors)
    return out


def upload(job_id, name, data, metadata):
    return parts_bucket().upload_from_stream("job-%s-%s" % (job_id, name), data, metadata=dict(metadata, job=job_id))


def download(file_id):
    return parts_bucket().open_download_stream(file_id).read()


def stage_vectors(doc, shard, attempt, staged):
    """Writes a shard's vectors to GridFS; returns the file id."""
    data = pack({side: items for side, (items, _) in staged.items()},
                 {side: vectors for side, (_, vectors) in staged.items()})
    return upload(doc["_id"], "shard-%d-attempt-%d" % (shard, attempt), data,
                   {"shard": shard, "attempt": attempt, "kind": "vectors"})


def delete_parts(part_ids):
    bucket = parts_bucket()
    for part_id in part_ids:
        try:
            bucket.delete(part_id)
        except Exception:  # pylint: disable=broad-except
            logger.debug("part %s was already gone", part_id)


def orphan_parts(job_id, keep=(), inputs=False, shard=None):
    """Ids of the job's staged vector files that no shard references
    (attempts that died while uploading, or were superseded), of one shard
    or all; with ``inputs``, its shards' input lists too."""
    files = foo.get_db_conn()["%s.files" % BUCKET]
    query = {"metadata.job": job_id}
    if not inputs:
        query["metadata.kind"] = "vectors"
    if shard is not None:
        query["metadata.shard"] = shard
    return [f["_id"] for f in files.find(query, {"_id": 1}) if f["_id"] not in set(keep)]


def shard_status(s, stale_after):
    worker = s.get("worker") or {}
    state = s["state"]
    if state == "running" and _lost(worker, s.get("heartbeat"), stale_after):
        state = "lost"
    return {
        "index": s["index"],
        "state": state,
        "progress": float(s.get("progress") or 0.0),
        "items": dict(s.get("items") or {}),
        "attempt": s["attempt"],
        "worker": describe_worker(worker) if worker else None,
        "error": s.get("error") or ("its worker process stopped without finishing it" if state == "lost" else None),
        "operation": s.get("operation"),
    }


def _lost(worker, heartbeat, stale_after):
    if worker.get("host") == socket.gethostname() and worker.get("pid"):
        try:
            os.kill(int(worker["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        if _is_zombie(int(worker["pid"])):
            return True
    return heartbeat is not None and (utcnow() - heartbeat).total_seconds() > stale_after


def _is_zombie(pid):
    try:
        import psutil

        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except Exception:  # pylint: disable=broad-except
        return False
