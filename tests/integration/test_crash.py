"""Whatever stops a write (an exception, one or two Ctrl-C, SIGKILL, a full
disk), the dataset is as before, as after, or its run key is marked
incomplete until ``ncl.repair_run`` puts it right; a run key has one writer."""
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fiftyone as fo
from pymongo.errors import BulkWriteError

import fiftyone_ncl as ncl
from fiftyone_ncl import cli
from fiftyone_ncl.fo import journal as fojournal
from fiftyone_ncl.fo.writer import FieldWriter

from .conftest import snapshot

pytestmark = pytest.mark.integration

FIELDS = dict(image_embeddings="img", text_embeddings="txt", progress=False)


def _score(ds, **kwargs):
    return ncl.compute_correspondence(ds, "caption", **dict(FIELDS, **kwargs))


def _journal_docs():
    import fiftyone.core.odm as foo

    db = foo.get_db_conn()
    return list(db[fojournal.COLLECTION].find()), db.list_collection_names(filter={"name": {"$regex": "^ncl_backup"}})


def _assert_consistent(ds, key="ncl"):
    """The fields of the run agree with its record."""
    results = ncl.load_run_results(ds, key)
    conf = np.array(ds.select(list(results.sample_ids), ordered=True).values("%s_confidence" % key))
    np.testing.assert_allclose(conf, results.confidence, atol=1e-6)


def _interrupt_at_chunk(monkeypatch, n, exc):
    monkeypatch.setattr("fiftyone_ncl.fo.writer._CHUNK", 10)
    original = FieldWriter._write_chunk
    calls = {"n": 0}

    def interrupted(self, ops, ids):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return original(self, ops, ids)

    monkeypatch.setattr(FieldWriter, "_write_chunk", interrupted)
    return calls


def test_two_ctrl_c_leave_the_run_marked_and_repair_restores_it(make_dataset, monkeypatch):
    ds = make_dataset(n=60, n_swapped=10)
    _score(ds, method="cosine")
    before = snapshot(ds)
    _interrupt_at_chunk(monkeypatch, 3, KeyboardInterrupt)
    # the second Ctrl-C arrives while the first one's undo restores values
    real_restore = fojournal._restore_backups

    def second_ctrl_c(dataset, doc):
        raise KeyboardInterrupt

    monkeypatch.setattr(fojournal, "_restore_backups", second_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        _score(ds, method="cca", overwrite=True)  # other values than the cosine run's
    monkeypatch.setattr(fojournal, "_restore_backups", real_restore)
    assert snapshot(ds) != before  # half undone

    # every call on the key says so, in this very process too
    message = r"run 'ncl' on dataset '%s' is incomplete: .*ncl.repair_run" % ds.name
    with pytest.raises(ncl.IncompleteRunError, match=message):
        _score(ds, method="gmm", overwrite=True)
    with pytest.raises(ncl.IncompleteRunError, match=message):
        ncl.tag_mismatches(ds, "ncl")
    assert ncl.get_run_info(ds, "ncl")["state"] == "incomplete"
    assert "ncl" in ncl.list_incomplete_runs(ds)
    assert "repair" in ncl.validate_run_key(ds, "ncl", overwrite=True)
    # and the App's run info
    import fiftyone.operators as foo

    from ..conftest import PLUGIN

    info = foo.execute_operator("%s/get_correspondence_info" % PLUGIN,
                                dict(dataset=ds, params={"run_key": "ncl"})).result
    assert info["state"] == "incomplete" and "ncl.repair_run" in info["message"]

    assert ncl.repair_run(ds, "ncl") == [{"run_key": "ncl", "action": "rolled back"}]
    assert snapshot(ds) == before
    assert ncl.get_run_info(ds, "ncl")["state"] == "complete"
    assert ncl.repair_run(ds) == []  # repairing twice is harmless
    docs, backups = _journal_docs()
    assert not [d for d in docs if d["dataset_id"] == str(ds._doc.id)] and not backups


def test_full_disk_while_saving_the_model_or_writing_fields_changes_nothing(make_dataset, monkeypatch, tmp_path):
    ds = make_dataset(n=60, n_swapped=10)
    _score(ds, method="cosine")
    before = snapshot(ds)

    from fiftyone_ncl.core.methods.base import CorrespondenceMethod

    def no_space(self, path):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    with monkeypatch.context() as m:
        m.setattr(CorrespondenceMethod, "save", no_space)
        with pytest.raises(OSError, match="No space left"):
            _score(ds, method="gmm", train_heads=True, epochs=1, overwrite=True)
    assert snapshot(ds) == before
    assert not list(tmp_path.iterdir())

    # MongoDB refusing a write (its disk full) halfway through the fields
    _interrupt_at_chunk(monkeypatch, 4, BulkWriteError({"writeErrors": [{"errmsg": "disk full"}]}))
    with pytest.raises(BulkWriteError):
        _score(ds, method="gmm", overwrite=True, store_embeddings=True)
    assert snapshot(ds) == before
    assert ncl.get_run_info(ds)["state"] == "complete"


def test_an_interruption_after_the_commit_point_is_completed_by_repair(make_dataset, monkeypatch):
    ds = make_dataset(n=60, n_swapped=10)
    _score(ds, method="cosine")
    with monkeypatch.context() as m:
        m.setattr(fojournal, "_complete", lambda dataset, doc: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            _score(ds, method="gmm", overwrite=True)
    info = ncl.get_run_info(ds)
    assert info["state"] == "incomplete" and "completes it" in info["message"]
    assert ncl.repair_run(ds) == [{"run_key": "ncl", "action": "completed"}]
    assert ds.get_brain_info("ncl").config.method_name == "gmm"
    _assert_consistent(ds)


def test_an_interrupted_accept_suggestions_restores_the_captions(make_dataset, monkeypatch):
    ds = make_dataset(n=60, n_swapped=12)
    _score(ds, method="gmm")
    before = snapshot(ds)
    real_set_values = fo.Dataset.set_values
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # after the originals were saved, before the captions
            raise KeyboardInterrupt
        return real_set_values(self, *args, **kwargs)

    monkeypatch.setattr(fo.Dataset, "set_values", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ncl.accept_suggestions(ds, "ncl")
    monkeypatch.setattr(fo.Dataset, "set_values", real_set_values)
    assert snapshot(ds) == before


# other processes ---------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import fiftyone as fo
    import fiftyone_ncl as ncl
    from fiftyone_ncl.fo import journal, writer

    mode = sys.argv[2]
    writer._CHUNK = 200
    original = writer.FieldWriter._write_chunk
    calls = {"n": 0}

    def chunk(self, ops, ids):
        original(self, ops, ids)
        calls["n"] += 1
        print("CHUNK", calls["n"], flush=True)
        if mode == "kill-mid-write" and calls["n"] == 3:
            time.sleep(600)

    writer.FieldWriter._write_chunk = chunk
    if mode == "kill-after-commit":
        real = journal._complete

        def complete(dataset, doc):
            print("COMMITTED", flush=True)
            time.sleep(600)

        journal._complete = complete
    if mode == "hold":
        import fiftyone_ncl.correspondence as c
        real_gather = c.gather_inputs

        def gather(*args, **kwargs):
            print("LOCKED", flush=True)
            while not os.path.exists(sys.argv[3]):
                time.sleep(0.1)
            return real_gather(*args, **kwargs)

        c.gather_inputs = gather
    ds = fo.load_dataset(sys.argv[1])
    ncl.compute_correspondence(ds, "caption", method="cca", image_embeddings="img", text_embeddings="txt",
                               overwrite=True, progress=False)  # other values than the cosine run's
    print("DONE", flush=True)
    """
)


def _child(ds, mode, *extra):
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, ds.name, mode, *map(str, extra)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


def _wait_for(proc, word, timeout=240):
    start = time.time()
    lines = []
    while time.time() - start < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(word):
            return lines
    proc.kill()
    raise AssertionError("child never printed %s: %s %s" % (word, lines, proc.stderr.read()[-3000:]))


@pytest.fixture
def persistent_dataset(make_dataset):
    ds = make_dataset(n=1000, n_swapped=200)
    ds.persistent = True  # other processes load it by name
    return ds


def test_sigkill_mid_write_marks_the_run_and_repair_restores_it(persistent_dataset, capsys):
    ds = persistent_dataset
    _score(ds, method="cosine")
    before = snapshot(ds)
    child = _child(ds, "kill-mid-write")
    _wait_for(child, "CHUNK 3")
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    ds.reload()

    # 600 of 1000 samples hold the new values: mixed, but marked
    assert snapshot(ds) != before
    message = r"run 'ncl' on dataset '%s' is incomplete: compute_correspondence by process %d" % (ds.name, child.pid)
    with pytest.raises(ncl.IncompleteRunError, match=message):
        _score(ds, method="cosine", overwrite=True)
    with pytest.raises(ncl.IncompleteRunError, match=message):
        ncl.load_run_results(ds, "ncl")
    assert ncl.get_run_info(ds)["state"] == "incomplete"
    assert cli.main(["runs", ds.name]) == 0
    out, err = capsys.readouterr()
    assert "ncl  INCOMPLETE" in out and "fiftyone-ncl repair %s ncl" % ds.name in err

    assert cli.main(["repair", ds.name]) == 0
    assert "ncl: rolled back" in capsys.readouterr().out
    assert snapshot(ds) == before
    assert ds.get_brain_info("ncl").config.method_name == "cosine"


def test_sigkill_after_the_commit_point_is_completed(persistent_dataset):
    ds = persistent_dataset
    _score(ds, method="cosine")
    child = _child(ds, "kill-after-commit")
    _wait_for(child, "COMMITTED")
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    assert ncl.get_run_info(ds)["state"] == "incomplete"
    assert ncl.repair_run(ds, "ncl") == [{"run_key": "ncl", "action": "completed"}]
    assert ds.get_brain_info("ncl").config.method_name == "cca"
    _assert_consistent(ds)
    assert ds.count_values("ncl_noisy")[True] == ncl.load_run_results(ds, "ncl").n_noisy


def test_a_second_writer_of_the_same_run_key_gets_a_clear_error(persistent_dataset, tmp_path):
    ds = persistent_dataset
    _score(ds, method="cosine")
    go = tmp_path / "go"
    child = _child(ds, "hold", go)
    _wait_for(child, "LOCKED")
    before = snapshot(ds)
    message = r"run key 'ncl' on dataset '%s' is being written by compute_correspondence by process %d" % (
        ds.name, child.pid)
    with pytest.raises(ncl.RunBusyError, match=message):
        _score(ds, method="gmm", overwrite=True)
    with pytest.raises(ncl.RunBusyError, match=message):
        ncl.tag_mismatches(ds, "ncl")
    assert snapshot(ds) == before
    assert "is being written by" in ncl.validate_run_key(ds, "ncl", overwrite=True)  # the App's form says so
    # readers see the previous run until the writer commits
    assert ncl.get_run_info(ds)["state"] == "being written"
    assert ncl.load_run_results(ds, "ncl").config.method_name == "cosine"
    # another key is free
    _score(ds, method="cosine", run_key="other")

    go.touch()
    _wait_for(child, "DONE")
    assert child.wait(60) == 0
    # no reload needed: the SDK sees that another process replaced the run
    results = ncl.load_run_results(ds, "ncl")
    assert results.config.method_name == "cca"  # the child's run, not the cosine one
    _assert_consistent(ds)
    _score(ds, method="cosine", overwrite=True)  # free again
