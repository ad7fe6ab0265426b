"""Writing a run's fields so that a failure leaves the dataset as it was.

Fields are written with keyed ``set_values`` (:meth:`FieldWriter.set`) or,
for a run's many per-sample fields, one bulk update per sample carrying all
of them (:meth:`FieldWriter.set_many`). The writer remembers which
fields it created and backs up the current values of fields it overwrites;
if anything raises (including KeyboardInterrupt) before :meth:`commit`,
created fields are deleted and overwritten ones restored.
"""
import logging
from datetime import datetime

from bson import ObjectId
from pymongo import UpdateOne

import fiftyone.core.fields as fof

_CHUNK = 10_000  # update operations sent per bulk write

logger = logging.getLogger(__name__)


class FieldWriter:
    """Transactional field writes on a collection's dataset.

    Use as a context manager::

        with FieldWriter(samples) as writer:
            writer.set("ncl_confidence", {id: 0.9, ...}, fof.FloatField)
            ...
            writer.commit()
    """

    def __init__(self, samples):
        self.samples = samples
        self.dataset = samples._dataset
        self._created = []
        self._backups = {}
        self._deleted = {}
        self._committed = False

    def _existing(self):
        return self.dataset.get_field_schema()

    def backup(self, field):
        """Saves the current values of ``field`` on the whole dataset so they
        can be restored (or notes that it did not exist)."""
        if field in self._backups or field in self._created:
            return
        if field in self._existing():
            ids, values = self.dataset.values(["id", field])
            self._backups[field] = dict(zip(ids, values))
        else:
            self._created.append(field)

    def declare(self, field, ftype, subfield=None, info=None, description=None):
        """Declares ``field`` with an explicit type if it does not exist."""
        self.backup(field)
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
        if ftype is not None:
            self.declare(field, ftype, subfield=subfield, info=info, description=description)
        else:
            self.backup(field)
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
            self._deleted[field] = self.dataset.get_field(field)
            self.dataset.delete_sample_field(field)

    def commit(self):
        self._committed = True

    def rollback(self):
        """Undoes every write: created fields are deleted, others restored."""
        schema = self._existing()
        created = [f for f in self._created if f in schema]
        if created:
            self.dataset.delete_sample_fields(created)
        for field, spec in self._deleted.items():
            if field not in self._existing():
                kwargs = {}
                if isinstance(spec, fof.ListField) and spec.field is not None:
                    kwargs["subfield"] = type(spec.field)
                self.dataset.add_sample_field(field, type(spec), info=spec.info, **kwargs)
        for field, values in self._backups.items():
            if values:
                self.dataset.set_values(field, values, key_field="id", validate=False)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not self._committed:
            logger.warning("rolling back partial writes after %s", exc_type.__name__)
            try:
                self.rollback()
            except Exception:  # pylint: disable=broad-except
                logger.exception("rollback failed; fields may be partly written")
        return False
