"""Sharded scoring on real ``fiftyone delegated launch`` workers sharing the
test database: the fields equal one process's, to the bit; a shard killed
mid-way leaves the dataset as it was, and re-running that shard alone
completes the run."""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from bson import ObjectId

import fiftyone as fo
import fiftyone.core.odm as foo
import fiftyone.operators as fop
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionRunState

import fiftyone_ncl as ncl
from fiftyone_ncl.datasets.fmnist import load_fashion_mnist, make_fmnist_captions
from fiftyone_ncl.demo import write_images
from fiftyone_ncl.fo import shard_store
from fiftyone_ncl.fo.runs import checkpoint_path

from ..conftest import PLUGIN
from .conftest import snapshot

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

N_SAMPLES = 96
# pixels and the bundled MiniLM: offline, and the same vectors in every
# process; small batches so that a 96-sample collection has batches to share
ENCODERS = dict(image_encoder="pixels:28", text_encoder="sentence-transformers", batch_size=8)
FIFTYONE = os.path.join(os.path.dirname(sys.executable), "fiftyone")
WORKER_READY = "Delegated operation service running"


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A persistent dataset of Fashion-MNIST photos (12 captions swapped),
    a checkpoint trained on it, and the single-process run scored with it
    (key ``single``)."""
    images, labels = load_fashion_mnist("test")
    directory = tmp_path_factory.mktemp("shard-images")
    paths = write_images(images[:N_SAMPLES], str(directory), ids=range(N_SAMPLES))
    captions = make_fmnist_captions(labels[:N_SAMPLES], seed=3)
    captions[:12] = captions[1:12] + captions[:1]
    ds = fo.Dataset(persistent=True)  # the workers load it by name
    ds.add_samples([fo.Sample(filepath=p, caption=c) for p, c in zip(paths, captions)], progress=False)
    ncl.compute_correspondence(ds, method="gmm", train_heads=True, epochs=3, run_key="trained", progress=False,
                               **ENCODERS)
    ckpt = checkpoint_path(ds, "trained")
    ncl.compute_correspondence(ds, model=ckpt, run_key="single", progress=False, **ENCODERS)
    yield ds, ckpt
    DelegatedOperationService().delete_for_dataset(ds._doc.id)
    ds.delete()


class Workers:
    """``fiftyone delegated launch`` processes with the test's environment
    (database name, plugins dir, dataset dir), killed at the end."""

    def __init__(self, directory):
        self.directory = directory
        self.procs = []

    def start(self, n):
        started = []
        for _ in range(n):
            log = self.directory / ("worker-%d.log" % len(self.procs))
            with open(log, "w") as out:
                proc = subprocess.Popen([FIFTYONE, "delegated", "launch"], env=dict(os.environ), stdout=out,
                                        stderr=subprocess.STDOUT)
            proc.log = log
            self.procs.append(proc)
            started.append(proc)
        deadline = time.monotonic() + 120
        while not all(WORKER_READY in p.log.read_text() for p in started):
            dead = [p for p in started if p.poll() is not None]
            assert not dead and time.monotonic() < deadline, self.logs()
            time.sleep(0.5)
        return started

    def pids(self):
        return {p.pid for p in self.procs if p.poll() is None}

    def kill(self, pid):
        proc = next(p for p in self.procs if p.pid == pid)  # only a worker this test started
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    def logs(self):
        return "\n".join("--- %s\n%s" % (p.log.name, p.log.read_text()[-3000:]) for p in self.procs)


@pytest.fixture(scope="module")
def workers(scored, tmp_path_factory):
    # the database is up (the dataset exists) before the workers attach to it
    pool = Workers(tmp_path_factory.mktemp("shard-workers"))
    try:
        pool.start(2)
        yield pool
    finally:
        pool.stop()


def _same_fields(ds, key, reference="single"):
    """Asserts that run ``key`` wrote the fields of run ``reference``, value
    for value (floats to the bit)."""
    ds.reload()
    suffixes = ds.get_brain_info(reference).config.fields
    assert ds.get_brain_info(key).config.fields == suffixes
    for suffix in suffixes:
        ours, theirs = ds.values("%s_%s" % (key, suffix)), ds.values("%s_%s" % (reference, suffix))
        same = [np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b for a, b in zip(ours, theirs)]
        assert all(same), "%s_%s differs from %s_%s on %d samples" % (key, suffix, reference, suffix,
                                                                     len(same) - sum(same))


def _staged_files(job_id):
    return foo.get_db_conn()["%s.files" % shard_store.BUCKET].count_documents({"metadata.job": job_id})


def _op_state(op_id):
    return DelegatedOperationService().get(ObjectId(op_id)).run_state


def test_bad_input_is_refused_before_anything_is_queued(scored):
    ds, ckpt = scored
    jobs = foo.get_db_conn()[shard_store.JOBS]
    before = (jobs.count_documents({}), len(DelegatedOperationService().list_operations(dataset_name=ds.name)))
    cases = [
        (dict(image_embeddings=np.zeros((N_SAMPLES, 4)), text_encoder="sentence-transformers"),
         "image_embeddings: an array cannot be sent"),
        (dict(encoder="open_clip:ViT-B-32:random"), "random weights, drawn anew in every worker"),
        (dict(ENCODERS, shards=40), "shards=40: the encoders have 12 batches of work"),
        (dict(ENCODERS, run_key="single"), "a run with key 'single' already exists"),
        (dict(ENCODERS, caption_field="nope"), "caption field 'nope' does not exist"),
        (dict(recipe="cnn_minilm"), "'cnn' towers"),
        (dict(ENCODERS, model=ckpt, epochs=3), "options epochs would change the trained model"),
        (dict(ENCODERS, shards=0), "shards must be a whole number >= 1"),
    ]
    for kwargs, message in cases:
        kwargs = dict(kwargs)
        with pytest.raises(ValueError, match=message):
            ncl.queue_sharded_scoring(ds, shards=kwargs.pop("shards", 2), **kwargs)
    after = (jobs.count_documents({}), len(DelegatedOperationService().list_operations(dataset_name=ds.name)))
    assert after == before
    assert "single" in ds.list_brain_runs() and not [r for r in ds.list_brain_runs() if r.startswith("sharded")]


def test_two_workers_score_shards_into_the_fields_of_one_process(scored, workers):
    ds, ckpt = scored
    # the App's choice: the compute form plus a number of shards
    queued = fop.execute_operator(
        "%s/queue_sharded_correspondence" % PLUGIN,
        {"dataset": ds, "params": dict(caption_field="caption", recipe="pixels_minilm", image_encoder="pixels:28",
                                       model=ckpt, run_key="sharded", shards=3, encoder_batch_size=8,
                                       chunk_size=8, chunk_delay=0.3)},
    )
    job = ncl.load_sharded_job(queued.result["job_id"])
    try:
        status = job.wait(timeout=150)
    except (TimeoutError, ncl.ShardedJobError) as e:
        pytest.fail("%s\n%s" % (e, workers.logs()))
    assert status["state"] == "complete" and status["progress"] == 1.0
    assert [s["state"] for s in status["shards"]] == ["done"] * 3
    assert sum(s["items"]["image"] for s in status["shards"]) == N_SAMPLES
    # the shards ran on both workers, each shard and the global step as a completed delegated operation
    ran_on = {s["worker"] for s in status["shards"]}
    assert ran_on <= {"process %d on %s" % (pid, socket.gethostname()) for pid in workers.pids()}
    assert len(ran_on) == 2, ran_on
    ops = [s["operation"] for s in status["shards"]] + [status["finalize"]["operation"]]
    assert [_op_state(op) for op in ops] == [ExecutionRunState.COMPLETED] * 4
    _same_fields(ds, "sharded")
    assert ncl.load_run_results(ds, "sharded").summary()["flagged"] == \
        ncl.load_run_results(ds, "single").summary()["flagged"]
    assert _staged_files(ObjectId(job.id)) == 0  # the staged vectors are removed once written
    assert ncl.list_sharded_jobs(ds)[0]["job_id"] == job.id
    # the App's job view builds its form and runs (a generator: its result does not reach the SDK)
    fop.execute_operator("%s/sharded_correspondence_jobs" % PLUGIN,
                         {"dataset": ds, "params": {"job_id": job.id, "action": "status"}}).raise_exceptions()


def test_a_killed_shard_leaves_the_dataset_unchanged_and_reruns_alone(scored, workers):
    ds, _ = scored
    # the workers saw this run's fields (the previous test); deleted here, the key is free again for them
    if "sharded" in ds.list_brain_runs():
        ncl.delete_run(ds, "sharded")
    before = snapshot(ds)
    # a training-free method this time; shards slowed down (a test hook) so one can be killed mid-way
    job = ncl.queue_sharded_scoring(ds, shards=2, method="cca", run_key="sharded", chunk_size=8, chunk_delay=0.5,
                                    **ENCODERS)
    deadline = time.monotonic() + 90
    while True:
        running = [s for s in job.status()["shards"] if s["state"] == "running" and s["progress"] > 0]
        if running:
            break
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.2)
    victim = running[0]
    pid = int(victim["worker"].split()[1])
    workers.kill(pid)

    st = job.status()
    assert st["shards"][victim["index"]]["state"] == "lost"
    assert 0 < st["shards"][victim["index"]]["progress"] < 1
    with pytest.raises(ncl.ShardedJobError, match="shard %d is lost" % victim["index"]):
        job.wait(timeout=5)
    with pytest.raises(ncl.ShardedJobError, match="cannot be finalized: .*shard %d is lost" % victim["index"]):
        job.finalize()
    other = 1 - victim["index"]
    deadline = time.monotonic() + 90
    while job.status()["shards"][other]["state"] != "done":
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.5)
    assert job.status()["state"] == "sharding"  # the global step waits for the lost shard
    assert snapshot(ds) == before  # nothing of the run on the samples

    killed_op = victim["operation"]
    job.rerun_shard(victim["index"])  # the worker that is left runs it, then the global step
    assert _op_state(killed_op) == ExecutionRunState.FAILED
    try:
        status = job.wait(timeout=150)
    except (TimeoutError, ncl.ShardedJobError) as e:
        pytest.fail("%s\n%s" % (e, workers.logs()))
    assert status["shards"][victim["index"]]["attempt"] == 2
    assert [s["state"] for s in status["shards"]] == ["done", "done"]
    ncl.compute_correspondence(ds, method="cca", run_key="single_cca", progress=False, **ENCODERS)
    _same_fields(ds, "sharded", reference="single_cca")
    assert _staged_files(ObjectId(job.id)) == 0

    # the key is free again once the run is deleted here: the worker that wrote it sees it gone
    ncl.delete_run(ds, "sharded")
    again = ncl.queue_sharded_scoring(ds, shards=1, method="cca", run_key="sharded", **ENCODERS)
    try:
        again.wait(timeout=120)
    except (TimeoutError, ncl.ShardedJobError) as e:
        pytest.fail("%s\n%s" % (e, workers.logs()))
    _same_fields(ds, "sharded", reference="single_cca")
