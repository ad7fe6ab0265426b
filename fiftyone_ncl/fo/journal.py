"""Crash-consistent writes: a lock per run key, and a journal of what a write
changed, kept in FiftyOne's own database.

Every write of a run (:func:`fiftyone_ncl.compute_correspondence`,
:func:`~fiftyone_ncl.accept_suggestions`, :func:`~fiftyone_ncl.restore_captions`)
holds one document of the ``ncl_journal`` collection, ``_id =
"<dataset id>:<run key>"``. Inserting it is the lock (MongoDB's unique ``_id``
makes it atomic: a second writer of the same key gets :class:`RunBusyError`).
Before a field is touched the document records what the write is about to do:

* ``created``: fields that did not exist (undo: delete them);
* ``backups``: fields about to be overwritten or deleted, whose current values
  were first copied, server-side, into a collection of their own
  (``ncl_backup.<token>.<n>``; undo: ``$merge`` them back);
* ``deleted``: the schema of fields about to be deleted (undo: add them back);
* ``new_record``: the run record being prepared (a run document that nothing
  references until the commit);
* ``checkpoint``: the trained model's temporary and final paths.

States: ``computing`` (locked, nothing written), ``writing`` (undo restores the
dataset as it was), ``committing`` (everything is written and the new record
is ready: the rest only completes: the record is swapped in one update of the
dataset document, the old one deleted, the model moved into place). When the
write ends the document goes back to ``computing`` and is deleted when the
lock is released.

Whatever stops a write (an exception, Ctrl-C, a second Ctrl-C during the undo,
SIGKILL, a full disk), the dataset is as before, as after, or its journal
document stays: every call on that run key then raises
:class:`IncompleteRunError`, ``fiftyone-ncl runs`` and the App's run info say
so, and :func:`repair_run` rolls the write back (or completes it when it had
reached ``committing``). Each undo step is idempotent, so a repair that is
itself interrupted can simply be run again.
"""
import contextlib
import datetime
import logging
import os
import socket
import threading
import uuid

import psutil
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

logger = logging.getLogger(__name__)

COLLECTION = "ncl_journal"
BACKUP_PREFIX = "ncl_backup."
INCOMPLETE_STATES = ("writing", "committing")

_HELD = {}  # journal id -> Journal held by this process (re-entrant per thread)
_HELD_LOCK = threading.Lock()


class RunBusyError(RuntimeError):
    """Another process (or thread) is writing the same run key."""


class IncompleteRunError(RuntimeError):
    """A write of the run key was interrupted; :func:`repair_run` fixes it."""


def _db():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()


def _coll():
    return _db()[COLLECTION]


def journal_id(dataset, run_key):
    return "%s:%s" % (dataset._doc.id, run_key)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _me():
    proc = psutil.Process()
    return {"pid": proc.pid, "pid_created": proc.create_time(), "host": socket.gethostname(),
            "thread": threading.get_ident()}


def _holder_alive(doc):
    """Whether the process that wrote ``doc`` may still be running: False
    when it released the document or is gone from this host; True when it
    runs, or runs on another host (which cannot be checked from here)."""
    if doc.get("released"):
        return False
    if doc.get("host") != socket.gethostname():
        return True
    try:
        proc = psutil.Process(doc["pid"])
        return abs(proc.create_time() - doc.get("pid_created", 0)) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
        return False


def _repair_hint(doc):
    return "ncl.repair_run(fo.load_dataset(%r), %r)" % (doc.get("dataset_name"), doc.get("run_key"))


def describe(doc):
    """One line saying what a journal document means for its run key."""
    what = "%s by process %s on %s, started %s" % (
        doc.get("action", "a write"), doc.get("pid"), doc.get("host"),
        doc.get("started").strftime("%Y-%m-%d %H:%M:%S UTC") if doc.get("started") else "?",
    )
    if doc.get("state") in INCOMPLETE_STATES and not _holder_alive(doc):
        fix = "completes it (it had been recorded)" if doc["state"] == "committing" else \
            "puts the fields back as they were before it"
        return ("run %r on dataset %r is incomplete: %s was interrupted while writing; "
                "nothing can use this run key until %s %s (CLI: fiftyone-ncl repair %s %s)"
                % (doc.get("run_key"), doc.get("dataset_name"), what, _repair_hint(doc), fix,
                   doc.get("dataset_name"), doc.get("run_key")))
    other_host = doc.get("host") != socket.gethostname()
    return ("run key %r on dataset %r is being written by %s (%s); wait for it to finish or use another "
            "run_key%s" % (doc.get("run_key"), doc.get("dataset_name"), what, doc.get("state"),
                           "; if that process no longer runs, ncl.repair_run(..., force=True) frees it"
                           if other_host else ""))


def find(dataset, run_key=None):
    """Journal documents of a dataset (or of one of its run keys)."""
    if run_key is not None:
        doc = _coll().find_one({"_id": journal_id(dataset, run_key)})
        return [doc] if doc else []
    return list(_coll().find({"dataset_id": str(dataset._doc.id)}))


def status(dataset, run_key):
    """``None`` when nobody writes ``run_key``, else ``(state, message)``
    with state ``"incomplete"`` or ``"busy"``."""
    for doc in find(dataset, run_key):
        if _is_own(doc):
            return None
        if doc.get("state") in INCOMPLETE_STATES and not _holder_alive(doc):
            return "incomplete", describe(doc)
        if _holder_alive(doc):
            return "busy", describe(doc)
    return None


def check_usable(dataset, run_key):
    """Raises :class:`IncompleteRunError` when a write of ``run_key`` was
    interrupted (a run being written by another process is left alone:
    readers see its previous record until it commits)."""
    st = status(dataset, run_key)
    if st is not None and st[0] == "incomplete":
        raise IncompleteRunError(st[1])


def _is_own(doc):
    with _HELD_LOCK:
        held = _HELD.get(doc["_id"])
    return held is not None and held.token == doc.get("token")


class Journal:
    """The lock and journal of one run key, held by this process."""

    def __init__(self, dataset, run_key, token, action):
        self.dataset = dataset
        self.run_key = run_key
        self.id = journal_id(dataset, run_key)
        self.token = token
        self.action = action
        self.thread = threading.get_ident()
        self.depth = 1
        self._n_backups = 0
        self._backed_up = set()
        self._created = set()

    # the lock -------------------------------------------------------------

    @classmethod
    def acquire(cls, dataset, run_key, action):
        token = uuid.uuid4().hex
        doc = {
            "_id": journal_id(dataset, run_key),
            "dataset_id": str(dataset._doc.id),
            "dataset_name": dataset.name,
            "run_key": run_key,
            "action": action,
            "state": "computing",
            "token": token,
            "started": _now(),
            "heartbeat": _now(),
            **_me(),
        }
        coll = _coll()
        for _ in range(3):
            try:
                coll.insert_one(doc)
                return cls(dataset, run_key, token, action)
            except DuplicateKeyError:
                other = coll.find_one({"_id": doc["_id"]})
                if other is None:
                    continue  # released meanwhile
                if other.get("state") == "computing" and not _holder_alive(other):
                    # a run that stopped before writing anything: nothing to undo
                    logger.info("freeing the lock of an interrupted run: %s", describe(other))
                    coll.delete_one({"_id": other["_id"], "token": other["token"]})
                    continue
                if other.get("state") in INCOMPLETE_STATES and not _holder_alive(other):
                    raise IncompleteRunError(describe(other)) from None
                raise RunBusyError(describe(other)) from None
        raise RunBusyError("could not lock run key %r on dataset %r" % (run_key, dataset.name))

    def _update(self, update):
        res = _coll().update_one({"_id": self.id, "token": self.token}, update)
        if res.matched_count != 1:
            raise RuntimeError("the lock of run key %r on %r was taken over (ncl.repair_run(..., force=True) "
                               "from another process?); stopping" % (self.run_key, self.dataset.name))

    def heartbeat(self):
        self._update({"$set": {"heartbeat": _now()}})

    def release(self):
        """Frees the run key; when a write was left unfinished (its undo
        failed or was interrupted) the document stays, marked released, so
        that the key reads as incomplete until repaired."""
        doc = _coll().find_one({"_id": self.id, "token": self.token})
        if doc is None:
            return
        if doc.get("state") in INCOMPLETE_STATES:
            _coll().update_one({"_id": self.id, "token": self.token}, {"$set": {"released": True}})
        else:
            _coll().delete_one({"_id": self.id, "token": self.token})

    # the journal ----------------------------------------------------------

    def start_write(self, **extra):
        """Enters ``writing``: from here an interruption needs an undo."""
        self._backed_up, self._created = set(), set()
        self._update({"$set": {"state": "writing", "created": [], "backups": [], "deleted": {},
                               "heartbeat": _now(), **extra}})

    def record_created(self, field):
        if field not in self._created:
            self._update({"$addToSet": {"created": field}})
            self._created.add(field)

    def is_recorded(self, field):
        return field in self._created or field in self._backed_up

    def backup(self, fields, ids=None):
        """Copies the current values of ``fields`` (on ``ids``, or every
        sample) into a backup collection, server-side, before they change.
        Fields already backed up or created by this write are skipped."""
        fields = [f for f in dict.fromkeys(fields) if not self.is_recorded(f)]
        if not fields:
            return
        self._n_backups += 1
        name = "%s%s.%d" % (BACKUP_PREFIX, self.token, self._n_backups)
        aliases = {"f%d" % i: f for i, f in enumerate(fields)}
        # top-level fields are restored by a plain $merge (twice as fast), a
        # missing value kept as an explicit null; embedded ones by a pipeline
        plain = not any("." in f for f in fields)
        # recorded first: an interrupted copy restores values that never changed
        self._update({"$push": {"backups": {"collection": name, "fields": aliases, "plain": plain,
                                            "ids": None if ids is None else len(ids)}}})
        self._backed_up.update(fields)
        samples = _db()[self.dataset._sample_collection_name]
        if plain:
            project = {"$project": {"_id": 1, **{f: {"$ifNull": ["$" + f, None]} for f in fields}}}
        else:
            project = {"$project": {"_id": 1, **{a: "$" + f for a, f in aliases.items()}}}
        if ids is None:
            samples.aggregate([project, {"$out": name}])
            return
        out = _db()[name]
        oids = [ObjectId(i) for i in ids]
        for start in range(0, len(oids), 50_000):
            chunk = oids[start : start + 50_000]
            samples.aggregate([{"$match": {"_id": {"$in": chunk}}}, project,
                               {"$merge": {"into": name, "whenMatched": "keepExisting"}}])
        if not oids:
            out.insert_one({"_id": "empty"})  # so the collection exists

    def record_deleted(self, field, spec):
        self._update({"$set": {"deleted.%s" % field: spec}})

    def set(self, **values):
        self._update({"$set": values})

    def commit(self, **values):
        """Everything is written: from here an interruption completes."""
        self._update({"$set": {"state": "committing", "heartbeat": _now(), **values}})

    def doc(self):
        return _coll().find_one({"_id": self.id, "token": self.token})

    def rollback(self):
        """Undoes the write in progress (idempotent)."""
        _rollback(self.dataset, self.doc())
        self._update({"$set": {"state": "computing"}, "$unset": _JOURNAL_FIELDS})

    def finish(self):
        """Completes a committed write (idempotent)."""
        _complete(self.dataset, self.doc())
        self._update({"$set": {"state": "computing"}, "$unset": _JOURNAL_FIELDS})


_JOURNAL_FIELDS = {k: "" for k in ("created", "backups", "deleted", "new_record", "old_record",
                                   "checkpoint", "old_checkpoint", "old_visualizations", "released")}


@contextlib.contextmanager
def run_lock(samples, run_key, action):
    """Holds the lock of ``run_key`` on the collection's dataset (re-entrant
    within a thread); yields the :class:`Journal`."""
    dataset = samples._dataset
    jid = journal_id(dataset, run_key)
    with _HELD_LOCK:
        held = _HELD.get(jid)
    if held is not None and held.thread == threading.get_ident():
        held.depth += 1
        try:
            yield held
        finally:
            held.depth -= 1
        return
    journal = Journal.acquire(dataset, run_key, action)
    with _HELD_LOCK:
        _HELD[jid] = journal
    try:
        yield journal
    finally:
        with _HELD_LOCK:
            _HELD.pop(jid, None)
        journal.release()


# undo and completion: also run by repair_run in another process ---------------


def _restore_backups(dataset, doc):
    import fiftyone.core.odm as foo  # noqa: F401

    db = _db()
    target = dataset._sample_collection_name
    for entry in reversed(doc.get("backups") or []):
        name = entry["collection"]
        if name not in db.list_collection_names(filter={"name": name}):
            continue
        aliases = entry["fields"]
        if entry.get("plain"):
            restore = "merge"
        else:
            # $set stages keep sibling values of embedded fields; a missing
            # value (the field was unset or None) is removed again
            restore = [{"$set": {f: {"$ifNull": ["$$new." + a, "$$REMOVE"]} for a, f in aliases.items()}}]
        db[name].aggregate([
            {"$match": {"_id": {"$type": "objectId"}}},
            {"$merge": {"into": target, "on": "_id", "whenMatched": restore, "whenNotMatched": "discard"}},
        ])


def _drop_backups(doc):
    db = _db()
    for entry in doc.get("backups") or []:
        db.drop_collection(entry["collection"])


def _delete_record(record_id):
    if record_id is None:
        return
    from fiftyone.core.odm.runs import RunDocument

    run_doc = RunDocument.objects(id=record_id).first()
    if run_doc is not None:
        if run_doc.results:
            run_doc.results.delete()
        run_doc.delete()


def _rollback(dataset, doc):
    if doc is None:
        return
    import eta.core.utils as etau

    dataset.reload()
    _delete_record(doc.get("new_record"))
    ckpt = doc.get("checkpoint") or {}
    if ckpt.get("tmp") and os.path.exists(ckpt["tmp"]):
        os.remove(ckpt["tmp"])
    schema = dataset.get_field_schema()
    created = [f for f in doc.get("created") or [] if f in schema]
    if created:
        dataset.delete_sample_fields(created)
    leftover = [f for f in doc.get("created") or [] if f not in schema]
    if leftover:  # values written before the field was declared
        _db()[dataset._sample_collection_name].update_many({}, {"$unset": {f: "" for f in leftover}})
    for field, spec in (doc.get("deleted") or {}).items():
        if field not in dataset.get_field_schema():
            kwargs = {}
            if spec.get("subfield"):
                kwargs["subfield"] = etau.get_class(spec["subfield"])
            if spec.get("embedded_doc_type"):
                kwargs["embedded_doc_type"] = etau.get_class(spec["embedded_doc_type"])
            dataset.add_sample_field(field, etau.get_class(spec["ftype"]), description=spec.get("description"),
                                     info=spec.get("info"), **kwargs)
    _restore_backups(dataset, doc)
    _drop_backups(doc)
    dataset.reload()


def _complete(dataset, doc):
    if doc is None:
        return
    import fiftyone.core.brain as fobr

    dataset.reload()
    new_id = doc.get("new_record")
    if new_id is not None:
        from fiftyone.core.odm.runs import RunDocument

        new_doc = RunDocument.objects(id=new_id).first()
        if new_doc is not None:
            # the commit point: one update of the dataset document
            _db().datasets.update_one(
                {"_id": dataset._doc.id}, {"$set": {"brain_methods.%s" % doc["run_key"]: new_doc.id}}
            )
            getattr(dataset, fobr.BrainMethod._results_cache_field()).pop(doc["run_key"], None)
    dataset.reload()
    for viz_key in doc.get("old_visualizations") or []:
        if viz_key in dataset.list_brain_runs():
            dataset.delete_brain_run(viz_key)
    old_id = doc.get("old_record")
    if old_id is not None and old_id != new_id:
        _delete_record(old_id)
    ckpt = doc.get("checkpoint") or {}
    if ckpt.get("tmp") and os.path.exists(ckpt["tmp"]):
        os.makedirs(os.path.dirname(os.path.abspath(ckpt["final"])), exist_ok=True)
        os.replace(ckpt["tmp"], ckpt["final"])
    old_ckpt = doc.get("old_checkpoint")
    if old_ckpt and old_ckpt != ckpt.get("final") and os.path.isfile(old_ckpt):
        os.remove(old_ckpt)
    _drop_backups(doc)
    dataset.reload()


def repair_run(samples, run_key=None, force=False):
    """Repairs runs whose write was interrupted (a crash, SIGKILL, Ctrl-C
    during the undo, a full disk).

    A write that had not finished is rolled back: fields it created are
    deleted, fields it overwrote or deleted get their previous values, and
    the previous run record stays. A write that had finished and was being
    recorded is completed. Repairing twice is harmless.

    Args:
        samples: the dataset (or a view of it)
        run_key (None): the run key; None repairs every interrupted write on
            the dataset
        force (False): also take over a write whose process seems alive
            (only for one on another host that you know has stopped)

    Returns:
        a list of ``{"run_key", "action"}`` with action ``"rolled back"``,
        ``"completed"`` or ``"unlocked"``
    """
    dataset = samples._dataset
    done = []
    for doc in find(dataset, run_key):
        if _is_own(doc):
            raise RunBusyError("run key %r is being written by this process" % doc["run_key"])
        if _holder_alive(doc) and not force:
            raise RunBusyError(describe(doc))
        me = _me()
        token = uuid.uuid4().hex
        taken = _coll().find_one_and_update(
            {"_id": doc["_id"], "token": doc["token"]},
            {"$set": {"token": token, "action": "repair_run", "released": False, **me}},
        )
        if taken is None:
            continue  # someone else repaired it meanwhile
        state = doc.get("state")
        if state == "committing":
            _complete(dataset, doc)
            action = "completed"
        elif state == "writing":
            _rollback(dataset, doc)
            action = "rolled back"
        else:
            action = "unlocked"
        _coll().delete_one({"_id": doc["_id"], "token": token})
        logger.info("run %r on %r: %s", doc["run_key"], dataset.name, action)
        done.append({"run_key": doc["run_key"], "action": action})
    return done


def cleanup_journals():
    """Deletes journal documents and backup collections of datasets that no
    longer exist; returns how many documents were removed."""
    db = _db()
    ids = {str(d["_id"]) for d in db.datasets.find({}, {"_id": 1})}
    n = 0
    live_tokens = set()
    for doc in list(db[COLLECTION].find()):
        if doc.get("dataset_id") not in ids:
            _drop_backups(doc)
            db[COLLECTION].delete_one({"_id": doc["_id"]})
            n += 1
        else:
            live_tokens.add(doc.get("token"))
            for entry in doc.get("backups") or []:
                live_tokens.add(entry["collection"].split(".")[1])
    for name in db.list_collection_names(filter={"name": {"$regex": "^ncl_backup\\."}}):
        if name.split(".")[1] not in live_tokens:
            db.drop_collection(name)
    return n
