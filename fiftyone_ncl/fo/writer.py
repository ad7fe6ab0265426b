"""Writing fields so that whatever stops the write leaves the dataset as it
was, as it is meant to be after, or marked for :func:`~fiftyone_ncl.repair_run`.

Fields are written with keyed ``set_values`` (:meth:`FieldWriter.set`) or,
for a run's many per-sample fields, one bulk update per sample carrying all
of them (:meth:`FieldWriter.set_many`). Before a field changes, the writer
records in the run key's journal (:mod:`fiftyone_ncl.fo.journal`, in the
database) that it creates it, or copies its current values server-side. If
anything raises (including KeyboardInterrupt) before :meth:`commit`, the
journal is undone: created fields deleted, others restored. If the process
dies instead, the journal stays and the run key reads as incomplete.
"""
import logging
from datetime import datetime

from bson import ObjectId
from pymongo import UpdateOne

import fiftyone.core.fields as fof

_CHUNK = 10_000  # update operations sent per bulk write

logger = logging.getLogger(__name__)


def field_spec(field):
    """A field's schema entry as a dict (to add it back after a delete)."""
    import fiftyone.core.odm.dataset as food

    spec = dict(food.SampleFieldDocument.from_field(field).to_dict())
    spec.pop("created_at", None)
    return spec


class FieldWriter:
    """Journaled field writes on a collection's dataset.

    Use as a context manager, with the :class:`~fiftyone_ncl.fo.journal.Journal`
    of the run key (:func:`~fiftyone_ncl.fo.journal.run_lock`)::

        with run_lock(samples, "ncl", "my write") as journal:
            with FieldWriter(samples, journal) as writer:
                writer.set("ncl_confidence", {id: 0.9, ...}, fof.FloatField)
                ...
                writer.commit()
    """

    def __init__(self, samples, journal):
        self.samples = samples
        self.dataset = samples._dataset
        self.journal = journal
        self._committed = False

    def _existing(self):
        return self.dataset.get_field_schema()

    def backup(self, field, ids=None):
        """Records ``field`` before it changes: its current values (on
        ``ids``, or every sample) are copied to the journal, or, when it does
        not exist, it is recorded as created by this write."""
        self.backup_many([field], ids)

    def backup_many(self, fields, ids=None):
        """:meth:`backup` of several fields in one pass over the samples."""
        todo = [f for f in fields if not self.journal.is_recorded(f)]
        if not todo:
            return
        schema = self._existing()
        existing = [f for f in todo if f in schema]
        for f in todo:
            if f not in schema:
                self.journal.record_created(f)
        if existing:
            self.journal.backup(existing, ids)

    def declare(self, field, ftype, subfield=None, info=None, description=None, ids=None):
        """Declares ``field`` with an explicit type if it does not exist."""
        self.backup(field, ids)
        if field not in self._existing():
            kwargs = {}
            if subfield is not None:
                kwargs["subfield"] = subfield
            self.dataset.add_sample_field(field, ftype, info=info, description=description, **kwargs)
        elif info is not None:
            f = self.dataset.get_field(field)
            f.info = {**(f.info or {}), **info}
            f.save()

    def set(self, field, values_by_id, ftype=None, subfield=None, info=None, description=None):
        """Writes ``{sample_id: value}`` into ``field``."""
        ids = list(values_by_id)
        if ftype is not None:
            self.declare(field, ftype, subfield=subfield, info=info, description=description, ids=ids)
        else:
            self.backup(field, ids)
        if values_by_id:
            self.dataset.set_values(field, values_by_id, key_field="id", validate=False)

    def set_many(self, ids, columns):
        """Writes several fields in one pass over the samples.

        ``set_values`` makes one update per sample per field; here each
        sample gets one update setting all fields (and ``last_modified_at``,
        as FiftyOne does), which is several times faster for a run's five or
        more fields.

        Args:
            ids: sample ids
            columns: dict field -> ``(values, ftype, subfield, description)``
                with ``values`` aligned with ``ids``
        """
        self.backup_many(list(columns))
        for field, (_, ftype, subfield, description) in columns.items():
            self.declare(field, ftype, subfield=subfield, description=description)
        schema = self.dataset.get_field_schema()
        names = list(columns)
        cols = [columns[f][0] for f in names]
        # vectors are stored serialised; plain values go as they are
        encoders = [
            schema[f].to_mongo if isinstance(schema[f], (fof.VectorField, fof.ArrayField)) else None
            for f in names
        ]
        now = datetime.utcnow()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            ops = []
            for i, _id in enumerate(chunk, start):
                update = {"last_modified_at": now}
                for f, col, enc in zip(names, cols, encoders):
                    v = col[i]
                    update[f] = enc(v) if enc is not None and v is not None else v
                ops.append(UpdateOne({"_id": ObjectId(_id)}, {"$set": update}))
            self._write_chunk(ops, chunk)
            self.journal.heartbeat()

    def _write_chunk(self, ops, ids):
        self.dataset._bulk_write(ops, ids=ids)

    def clear_outside(self, field, keep_ids):
        """Sets ``field`` to None on every sample not in ``keep_ids`` (stale
        values of a previous run on a different view)."""
        self.backup(field)
        stale = self.dataset.exists(field).exclude(list(keep_ids))
        if len(stale):
            stale.set_field(field, None).save()

    def delete(self, field):
        """Deletes ``field`` (restored on rollback)."""
        if field in self._existing():
            self.backup(field)
            self.journal.record_deleted(field, field_spec(self.dataset.get_field(field)))
            self.dataset.delete_sample_field(field)

    def commit(self, **record):
        """Marks every write done: from here an interruption completes the
        write instead of undoing it. ``record`` goes to the journal (e.g. the
        prepared run record)."""
        self.journal.commit(**record)
        self._committed = True

    def rollback(self):
        """Undoes every write: created fields are deleted, others restored."""
        self.journal.rollback()

    def __enter__(self):
        self.journal.start_write()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and not self._committed:
            self.commit()
        if self._committed:
            self.journal.finish()  # the write is complete; this only tidies up
            return False
        logger.warning("rolling back partial writes after %s", exc_type.__name__)
        try:
            self.rollback()
        except BaseException as e:  # pylint: disable=broad-except
            logger.error(
                "rollback did not finish (%s: %s); the run key is marked incomplete: "
                "ncl.repair_run(dataset, %r) puts the fields back",
                type(e).__name__, e, self.journal.run_key,
            )
        return False
