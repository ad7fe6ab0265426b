"""Runs recorded on the dataset like FiftyOne Brain runs.

A correspondence run is a brain run (``dataset.list_brain_runs()``,
``get_brain_info``, ``load_brain_results``, ``rename_brain_run``,
``delete_brain_run`` all work on it). Its fields are named ``{key}_{suffix}``
(:mod:`fiftyone_ncl.fo.fields`), so renaming the run renames them and
deleting it deletes them. Run keys are checked here, in one place, before a
run computes anything.
"""
import contextlib
import datetime
import functools
import inspect
import logging
import os
import shutil
from copy import deepcopy

import numpy as np

import fiftyone as fo
import fiftyone.core.brain as fob
import fiftyone.core.fields as fof
import fiftyone.core.utils as fou

from fiftyone_ncl.core.registry import get_method_class
from fiftyone_ncl.fo.fields import field_name, planned_suffixes
from fiftyone_ncl.fo import journal as fojournal
from fiftyone_ncl.fo.journal import IncompleteRunError, RunBusyError, repair_run, run_lock  # noqa: F401
from fiftyone_ncl.fo.pairs import caption_hashes, caption_kind
from fiftyone_ncl.fo.writer import FieldWriter

logger = logging.getLogger(__name__)

RUN_TYPE = "ncl_correspondence"
CHECKPOINT_DIR = "__ncl_checkpoints__"


class CorrespondenceConfig(fob.BrainMethodConfig):
    """Config of a correspondence run.

    Args:
        caption_field: the caption field that was scored
        method_name: the method (``cosine``, ``gmm``, ``crcl``, ``disncl``, ...)
        method_config (None): the method's options
        threshold (0.5): the confidence below which a pair is flagged noisy
        fields (None): suffixes of the fields the run wrote
        caption_list (False): whether the caption field holds lists
        sources (None): where the embeddings came from
        checkpoint (None): path of the saved model, if any
        visualization_keys (None): brain keys of the UMAP runs made for it
        recipe (None): the input recipe (:meth:`InputRecipe.describe`)
        saved_views (None): names of the saved views made from the run
            (deleted with it)
    """

    def __init__(
        self,
        caption_field,
        method_name,
        method_config=None,
        threshold=0.5,
        fields=None,
        caption_list=False,
        sources=None,
        checkpoint=None,
        visualization_keys=None,
        recipe=None,
        saved_views=None,
        decision="probability",
        level=None,
        **kwargs,
    ):
        self.caption_field = caption_field
        self.method_name = method_name
        self.method_config = method_config or {}
        self.threshold = threshold
        self.fields = list(fields or [])
        self.caption_list = caption_list
        self.sources = sources or {}
        self.checkpoint = checkpoint
        self.visualization_keys = dict(visualization_keys or {})
        self.recipe = recipe or {}
        self.saved_views = list(saved_views or [])
        self.decision = decision
        self.level = level
        super().__init__(**kwargs)

    @property
    def type(self):
        return RUN_TYPE

    @property
    def method(self):
        return self.method_name


class Correspondence(fob.BrainMethod):
    """The brain method behind a correspondence run (bookkeeping only: the
    computation lives in :func:`fiftyone_ncl.compute_correspondence`)."""

    def get_fields(self, samples, brain_key):
        return [field_name(brain_key, s) for s in self.config.fields]

    def rename(self, samples, brain_key, new_brain_key):
        dataset = samples._dataset
        schema = dataset.get_field_schema()
        mapping = {
            field_name(brain_key, s): field_name(new_brain_key, s)
            for s in self.config.fields
            if field_name(brain_key, s) in schema
        }
        clash = [new for new in mapping.values() if new in schema]
        if clash:
            raise ValueError("fields %s already exist" % ", ".join(clash))
        if mapping:
            dataset.rename_sample_fields(mapping)
        # visualizations made for this run follow its key
        renamed = {}
        for space, viz_key in self.config.visualization_keys.items():
            new_key = viz_key
            if viz_key.startswith(brain_key + "_"):
                new_key = new_brain_key + viz_key[len(brain_key):]
                if viz_key in dataset.list_brain_runs() and new_key not in dataset.list_brain_runs():
                    dataset.rename_brain_run(viz_key, new_key)
            renamed[space] = new_key
        changed = renamed != self.config.visualization_keys
        self.config.visualization_keys = renamed
        # its model file follows its key
        old_ckpt = owned_checkpoint(samples, brain_key, self.config)
        if old_ckpt is not None:
            new_ckpt = checkpoint_path(samples, new_brain_key)
            os.replace(old_ckpt, new_ckpt)
            self.config.checkpoint = new_ckpt
            changed = True
        if changed:
            self.update_run_config(samples, brain_key, self.config)

    def cleanup(self, samples, brain_key):
        dataset = samples._dataset
        schema = dataset.get_field_schema()
        fields = [f for f in self.get_fields(samples, brain_key) if f in schema]
        if fields:
            dataset.delete_sample_fields(fields)
        for viz_key in self.config.visualization_keys.values():
            if viz_key in dataset.list_brain_runs():
                dataset.delete_brain_run(viz_key)
        # what the run made beside its fields: saved views, tags, its model file
        for view in getattr(self.config, "saved_views", None) or []:
            name = view["name"] if isinstance(view, dict) else view
            if dataset.has_saved_view(name):
                dataset.delete_saved_view(name)
        try:
            results = dataset.load_brain_results(brain_key)
        except Exception:  # pylint: disable=broad-except
            results = None
        for tag, ids in (getattr(results, "tagged", None) or {}).items():
            dataset.select(list(ids)).untag_samples(tag)
        ckpt = owned_checkpoint(samples, brain_key, self.config)
        if ckpt is not None:
            os.remove(ckpt)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(ckpt))


class CorrespondenceResults(fob.BrainResults):
    """Per-pair arrays of a run, plus its statistics.

    Attributes:
        sample_ids: (N,) sample ids scored
        image_index: (P,) sample row of each pair (caption)
        caption_position: (P,) position of the caption in its sample's list
        confidence: (P,) clean probability
        similarity: (P,) similarity in the method's space
        noisy: (P,) decision at the run's threshold
        label: (P,) CRCL's soft label, or None
        suggestion_index: (N,) pair row of the suggested caption per sample
            (-1 where none)
        calibration_score: (P,) what the clean/noisy mixture was fitted to
        margin: (P,) signed log-odds relative to the decision's cut, or None
        info: method statistics (history, calibration, diagnostics)
        metrics: detection metrics against known truth, when evaluated
        caption_hash: (N,) fingerprint of each sample's caption value when it
            was scored (to tell when captions changed since), or None
        tagged: dict tag -> ids of the samples the run's tags were put on
            (removed with the run)
    """

    _ARRAYS = (
        "sample_ids",
        "image_index",
        "caption_position",
        "confidence",
        "similarity",
        "noisy",
        "label",
        "suggestion_index",
        "calibration_score",
        "margin",
        "caption_hash",
        "statistic",
        "null_statistic",
    )

    def __init__(
        self,
        samples,
        config,
        brain_key,
        sample_ids,
        image_index,
        caption_position,
        confidence,
        similarity,
        noisy,
        label=None,
        suggestion_index=None,
        calibration_score=None,
        margin=None,
        caption_hash=None,
        statistic=None,
        null_statistic=None,
        info=None,
        metrics=None,
        tagged=None,
        backend=None,
    ):
        super().__init__(samples, config, brain_key, backend=backend)
        self.sample_ids = np.asarray(sample_ids)
        self.image_index = np.asarray(image_index)
        self.caption_position = np.asarray(caption_position)
        self.confidence = np.asarray(confidence)
        self.similarity = np.asarray(similarity)
        self.noisy = np.asarray(noisy, dtype=bool)
        self.label = None if label is None else np.asarray(label)
        self.suggestion_index = None if suggestion_index is None else np.asarray(suggestion_index)
        self.calibration_score = None if calibration_score is None else np.asarray(calibration_score)
        self.margin = None if margin is None else np.asarray(margin)
        self.caption_hash = None if caption_hash is None else np.asarray(caption_hash)
        self.statistic = None if statistic is None else np.asarray(statistic)
        self.null_statistic = None if null_statistic is None else np.asarray(null_statistic)
        self.info = info or {}
        self.metrics = metrics or {}
        self.tagged = {k: list(v) for k, v in (tagged or {}).items()}

    @property
    def threshold(self):
        return self.config.threshold

    @property
    def decision(self):
        """How the pairs were flagged: mode, level, counts and the estimated
        mismatch rate (``decision["rate"]``)."""
        return (self.info or {}).get("decision") or {}

    @property
    def mismatch_rate(self):
        """The estimated share of mismatched pairs with its interval:
        ``{"rate", "low", "high", "usable", ...}`` (empty for older runs)."""
        return self.decision.get("rate") or {}

    @property
    def health(self):
        """The run's label-free checks: ``{"verdict": "ok" | "check",
        "checks": [...], "summary"}`` (:mod:`fiftyone_ncl.core.health`)."""
        return (self.info or {}).get("health") or {}

    @property
    def n_pairs(self):
        return len(self.confidence)

    @property
    def n_noisy(self):
        return int(self.noisy.sum())

    def summary(self):
        """A short dict of what the run found."""
        return {
            "run_key": self.key,
            "method": self.config.method_name,
            "caption_field": self.config.caption_field,
            "samples": int(len(self.sample_ids)),
            "pairs": int(self.n_pairs),
            "flagged": self.n_noisy,
            "decision": {k: self.decision.get(k) for k in ("mode", "level", "estimated_fdr")} if self.decision else None,
            "mismatch_rate": {k: self.mismatch_rate.get(k) for k in ("rate", "low", "high", "usable")}
            if self.mismatch_rate else None,
            "health": {k: self.health.get(k) for k in ("verdict", "summary")} if self.health else None,
            "threshold": self.threshold,
            "mean_confidence": float(np.mean(self.confidence)) if self.n_pairs else None,
            "metrics": self.metrics,
            # method="auto": what it tried and chose
            **({"auto": (self.info or {})["auto"]} if (self.info or {}).get("auto") else {}),
        }

    def __repr__(self):
        s = self.summary()
        return "<CorrespondenceResults run %r (%s) on %r: %d of %d pairs flagged>" % (
            s["run_key"], s["method"], s["caption_field"], s["flagged"], s["pairs"],
        )

    __str__ = __repr__  # print(results): one line, not every array

    def attributes(self):
        return [a for a in super().attributes() if a not in self._ARRAYS]

    def serialize(self, reflective=False):
        d = super().serialize(reflective=reflective)
        for name in self._ARRAYS:
            value = getattr(self, name)
            d[name] = None if value is None else fou.serialize_numpy_array(value, ascii=True)
        return d

    @classmethod
    def _from_dict(cls, d, samples, config, brain_key):
        def arr(name):
            value = d.get(name)
            return None if value is None else fou.deserialize_numpy_array(value, ascii=True)

        return cls(
            samples,
            config,
            brain_key,
            **{name: arr(name) for name in cls._ARRAYS},
            info=d.get("info"),
            metrics=d.get("metrics"),
            tagged=d.get("tagged"),
        )


# run keys --------------------------------------------------------------------


def check_run_key_name(run_key):
    """Raises a ValueError unless ``run_key`` can prefix field names."""
    if not isinstance(run_key, str) or not run_key.isidentifier():
        raise ValueError("run key %r must be a valid Python identifier, e.g. 'ncl'" % (run_key,))


def check_new_run_key(samples, run_key, overwrite=False, suffixes=()):
    """Checks, before anything is computed, that a run can be written under
    ``run_key``: a valid name, no interrupted write to repair, no existing
    run unless ``overwrite``, and no field ``{run_key}_{suffix}`` that
    belongs to something else."""
    check_run_key_name(run_key)
    dataset = samples._dataset
    fojournal.check_usable(dataset, run_key)
    own = []
    if run_key in dataset.list_brain_runs():
        if not overwrite:
            raise ValueError(
                "a run with key %r already exists on %r; pass overwrite=True to replace it "
                "or choose another run_key" % (run_key, dataset.name)
            )
        own = [field_name(run_key, s) for s in check_run(samples, run_key).fields]
    schema = dataset.get_field_schema()
    taken = [field_name(run_key, s) for s in suffixes if field_name(run_key, s) in schema]
    taken = [f for f in taken if f not in own]
    if taken:
        raise ValueError(
            "fields %s already exist and do not belong to run %r; choose another run_key"
            % (", ".join(taken), run_key)
        )


def locks_run_key(action):
    """Decorator: the function holds the lock of its run key (arguments
    ``samples`` and ``run_key``, or ``brain_key`` when given) from its first
    line to its return, so a second writer of the same key fails at once
    with :class:`RunBusyError` (and an interrupted one with
    :class:`IncompleteRunError`), before anything is computed."""

    def decorate(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError:
                return fn(*args, **kwargs)  # the call itself raises the error
            bound.apply_defaults()
            samples = bound.arguments.get("samples")
            key = bound.arguments.get("brain_key") or bound.arguments.get("run_key")
            if not hasattr(samples, "_dataset") or not isinstance(key, str) or not key.isidentifier():
                return fn(*args, **kwargs)
            with run_lock(samples, key, action):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def list_runs(samples):
    """Keys of the correspondence runs on the collection's dataset."""
    return samples.list_brain_runs(type=RUN_TYPE)


def list_incomplete_runs(samples):
    """Run keys of the dataset whose write was interrupted, as
    ``{run_key: message}`` (the message says how to repair it)."""
    out = {}
    for doc in fojournal.find(samples._dataset):
        st = fojournal.status(samples._dataset, doc["run_key"])
        if st is not None and st[0] == "incomplete":
            out[doc["run_key"]] = st[1]
    return out


def check_run(samples, run_key):
    """The config of run ``run_key``; a ValueError naming it if it is not a
    correspondence run, an :class:`IncompleteRunError` if a write of it was
    interrupted."""
    fojournal.check_usable(samples._dataset, run_key)
    _refresh(samples._dataset, run_key)
    if run_key not in samples.list_brain_runs():
        runs = list_runs(samples)
        raise ValueError(
            "no correspondence run %r on %r; runs: %s"
            % (run_key, samples._dataset.name, ", ".join(runs) or "none")
        )
    config = samples.get_brain_info(run_key).config
    if not isinstance(config, CorrespondenceConfig):
        raise ValueError("brain run %r is not a correspondence run" % run_key)
    # another process may have replaced the run: read its results afresh
    getattr(samples._dataset, Correspondence._results_cache_field(), {}).pop(run_key, None)
    return config


def _refresh(dataset, run_key):
    """Reloads the dataset when another process replaced or removed the run
    since this one last read it (FiftyOne keeps the dataset document in
    memory)."""
    import fiftyone.core.odm as foo

    doc = foo.get_db_conn().datasets.find_one({"_id": dataset._doc.id}, {"brain_methods.%s" % run_key: 1})
    stored = ((doc or {}).get("brain_methods") or {}).get(run_key)
    held = dataset._doc.brain_methods.get(run_key)
    if stored != getattr(held, "id", None):
        dataset.reload()


# checkpoints -------------------------------------------------------------------


def _checkpoint_root():
    """This database's folder of default checkpoints (one database's cleanup
    never touches another's)."""
    return os.path.join(fo.config.default_dataset_dir, CHECKPOINT_DIR, fo.config.database_name)


def checkpoint_path(samples, run_key):
    """Where a run's trained model is saved by default: under FiftyOne's
    dataset directory, keyed by the database, the dataset's id (not its
    name, which a clone or another database can share) and the run key."""
    dataset = samples._dataset
    return os.path.join(_checkpoint_root(), str(dataset._doc.id), "%s.safetensors" % run_key)


def owned_checkpoint(samples, run_key, config):
    """The run's model file when the run owns it (its default path, for this
    dataset and key: deleted with the run), else None (a path the user chose,
    or a clone's reference to its source's model)."""
    ckpt = getattr(config, "checkpoint", None)
    if not ckpt:
        return None
    if os.path.abspath(ckpt) != os.path.abspath(checkpoint_path(samples, run_key)):
        return None
    return ckpt if os.path.isfile(ckpt) else None


def run_checkpoint(samples, run_key, config):
    """The model file a run can be reloaded from, or None: a default-path
    model of another dataset (a clone's source) is not this run's, and a
    deleted file is no file."""
    ckpt = getattr(config, "checkpoint", None)
    if not ckpt or not os.path.isfile(ckpt):
        return None
    root = os.path.abspath(os.path.join(fo.config.default_dataset_dir, CHECKPOINT_DIR))
    if os.path.abspath(ckpt).startswith(root + os.sep) and owned_checkpoint(samples, run_key, config) is None:
        return None
    return ckpt


def cleanup_checkpoints(dry_run=False):
    """Deletes default-path checkpoints that no run owns any more: folders of
    datasets that were deleted (FiftyOne does not tell plugins), files of run
    keys no longer on their dataset, temporary files of writes that ended,
    and journals of deleted datasets. Only this database's folder is looked
    at.

    Args:
        dry_run (False): only list what would be deleted

    Returns:
        the list of deleted (or deletable) paths
    """
    import fiftyone.core.odm as foo

    root = _checkpoint_root()
    if not os.path.isdir(root):
        return []
    db = foo.get_db_conn()
    datasets = {str(d["_id"]): d.get("name") for d in db.datasets.find({}, {"_id": 1, "name": 1})}
    live = {d.get("pid") for d in db[fojournal.COLLECTION].find()}
    doomed = []
    for ds_id in sorted(os.listdir(root)):
        folder = os.path.join(root, ds_id)
        if ds_id not in datasets:
            doomed.append(folder)
            continue
        dataset = fo.load_dataset(datasets[ds_id])
        keys = set(list_runs(dataset))
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.endswith(".tmp"):
                pid = name.rsplit(".", 2)[-2]
                if not (pid.isdigit() and int(pid) in live):
                    doomed.append(path)
            elif name.endswith(".safetensors") and name[: -len(".safetensors")] not in keys:
                doomed.append(path)
    if not dry_run:
        for path in doomed:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)
        fojournal.cleanup_journals()
    return doomed


# writing ---------------------------------------------------------------------


def write_run(samples, run_key, columns, results, cache_writes=(), save_model=None, checkpoint=None,
              field_info=None, update_only=False):
    """Writes a run's fields and records it: as before, as after, or marked
    incomplete until :func:`repair_run`.

    Args:
        samples: the collection scored
        run_key: the run key
        columns: dict field -> ``(values, ftype, subfield, description)``
            aligned with ``results.sample_ids``
            (:func:`fiftyone_ncl.fo.fields.run_columns`)
        results: the :class:`CorrespondenceResults` to record
        cache_writes: embeddings to cache in fields
            (:class:`~fiftyone_ncl.fo.embeddings.CacheWrite`)
        save_model (None): ``fn(path)`` that saves the trained model, called
            with a temporary path before the fields are written
        checkpoint (None): where the model goes once everything is written
        field_info (None): ``{field: info}`` merged into the info of written
            fields (e.g. the ``ncl_space`` of stored vectors,
            :func:`fiftyone_ncl.fo.fields.vector_space_info`)
        update_only (False): rewrite only ``columns`` of an existing run
            (e.g. a new decision), keeping its other fields, maps and model

    The run key's journal (:mod:`fiftyone_ncl.fo.journal`) records each
    change before it is made; the new run record is prepared aside and
    swapped in with one update once every field is written. A failure (or
    Ctrl-C) undoes the write at once; a process that dies leaves the key
    marked incomplete.
    """
    dataset = samples._dataset
    ids = list(results.sample_ids)
    prefix = run_key + "_"
    old_fields, old = [], None
    if update_only:
        old_suffixes = list(dataset.get_brain_info(run_key).config.fields or [])
        results.config.fields = old_suffixes + [f[len(prefix):] for f in columns if f[len(prefix):] not in old_suffixes]
    else:
        results.config.fields = [f[len(prefix):] for f in columns]
    if run_key in dataset.list_brain_runs():
        old = dataset.get_brain_info(run_key).config
        old_fields = [] if update_only else [field_name(run_key, s) for s in old.fields]
        # what the old run made beside its fields passes to the new one
        results.config.saved_views = list(getattr(old, "saved_views", None) or [])
        try:
            results.tagged = dict(getattr(dataset.load_brain_results(run_key), "tagged", None) or {})
        except Exception:  # pylint: disable=broad-except
            pass
    is_view = len(samples) != len(dataset)

    with run_lock(samples, run_key, "compute_correspondence") as journal:
        with FieldWriter(samples, journal) as writer:
            old_doc = dataset._doc.brain_methods.get(run_key)
            old_ckpt = owned_checkpoint(samples, run_key, old) if old is not None and not update_only else None
            tmp_ckpt = None
            if save_model is not None and checkpoint is not None:
                tmp_ckpt = "%s.%d.tmp" % (checkpoint, os.getpid())
            journal.set(
                old_record=getattr(old_doc, "id", None),
                old_visualizations=list((old.visualization_keys or {}).values())
                if old is not None and not update_only else [],
                old_checkpoint=old_ckpt,
                checkpoint={"tmp": tmp_ckpt, "final": checkpoint} if tmp_ckpt else None,
            )
            if tmp_ckpt is not None:
                os.makedirs(os.path.dirname(os.path.abspath(checkpoint)), exist_ok=True)
                save_model(tmp_ckpt)
            # every field the run touches is saved in one pass before it changes
            writer.backup_many(list(columns) + [f for f in old_fields if f not in columns])
            for cache in cache_writes:
                writer.set(cache.field, cache.values, fof.ArrayField if cache.array else fof.VectorField, info=cache.info)
            writer.set_many(ids, columns)
            for f, info in (field_info or {}).items():
                if f in columns:
                    writer.declare(f, None, info=info)
            for old_field in old_fields:
                if old_field not in columns:
                    writer.delete(old_field)
            if is_view and old_fields:
                for f in columns:
                    writer.clear_outside(f, ids)
            stage_record(samples, run_key, results, journal)
            writer.commit()
    dataset.reload()


def stage_record(samples, run_key, results, journal):
    """Saves the run's record as a run document that nothing references yet
    (the commit points the dataset at it)."""
    import fiftyone.constants as foc
    import fiftyone.core.view as fov
    from bson import ObjectId, json_util
    from fiftyone.core.odm.runs import RunDocument

    dataset = samples._dataset
    record_id = ObjectId()
    journal.set(new_record=record_id)  # recorded first: an undo deletes it
    view_stages = None
    if isinstance(samples, fov.DatasetView):
        view_stages = [json_util.dumps(s) for s in samples._serialize(include_uuids=False)]
    run_doc = RunDocument(
        id=record_id,
        dataset_id=dataset._doc.id,
        key=run_key,
        version=foc.VERSION,
        timestamp=datetime.datetime.utcnow(),
        config=deepcopy(results.config.serialize()),
        view_stages=view_stages,
        results=None,
    )
    run_doc.results.put(json_util.dumps(results.serialize()).encode(), content_type="application/json")
    if hasattr(results, "get_meta") and "results_meta" in RunDocument._fields:
        run_doc.results_meta = dict(results.get_meta() or {})
    run_doc.save(upsert=True)


# managing runs -----------------------------------------------------------------


def load_run_results(samples, run_key="ncl"):
    """The :class:`CorrespondenceResults` of a run."""
    check_run(samples, run_key)
    return samples.load_brain_results(run_key)


def stale_samples(samples, run_key, ids=None):
    """Ids of the samples (of ``ids``, or all the run scored) whose captions
    differ from those the run scored (accepted suggestions, edits)."""
    results = samples.load_brain_results(run_key)
    if results is None or results.caption_hash is None:
        return []
    config = results.config
    row = {sid: i for i, sid in enumerate(results.sample_ids)}
    want = [i for i in (results.sample_ids if ids is None else ids) if i in row]
    if not want:
        return []
    dataset = samples._dataset
    if dataset.get_field(config.caption_field) is None:
        return list(want)
    got_ids, values = dataset.select(want, ordered=True).values(["id", config.caption_field])
    now = dict(zip(got_ids, caption_hashes(values)))
    return [i for i in want if now.get(i) != int(results.caption_hash[row[i]])]


def get_run_info(samples, run_key="ncl"):
    """A JSON-friendly description of a run: config, time, counts, metrics,
    and ``state``: ``"complete"``, ``"stale"`` (captions changed since it
    scored them), ``"incomplete"`` (a write was interrupted: ``message``
    says how to repair it) or ``"being written"``."""
    dataset = samples._dataset
    st = fojournal.status(dataset, run_key)
    if st is not None and st[0] == "incomplete":
        out = {"run_key": run_key, "state": "incomplete", "message": st[1]}
        if run_key in samples.list_brain_runs():
            info = samples.get_brain_info(run_key)
            out.update(timestamp=str(info.timestamp), version=info.version, config=info.config.serialize())
        return out
    check_run(samples, run_key)
    info = samples.get_brain_info(run_key)
    out = {
        "run_key": run_key,
        "timestamp": str(info.timestamp),
        "version": info.version,
        "config": info.config.serialize(),
        "state": "complete",
    }
    out["config"]["checkpoint"] = run_checkpoint(samples, run_key, info.config)
    if st is not None:
        out.update(state="being written", message=st[1])
    results = samples.load_brain_results(run_key)
    if results is not None:
        out.update(results.summary())
        out["info"] = results.info
        stale = stale_samples(samples, run_key)
        if stale and out["state"] == "complete":
            out.update(state="stale", message="captions of %d samples changed since run %r scored them "
                       "(e.g. %s); re-run it before accepting its suggestions" % (len(stale), run_key, stale[0]))
    return out


def rename_run(samples, run_key, new_run_key):
    """Renames a run, the fields it wrote, its maps and model file, and
    points its saved views at the new fields."""
    config = check_run(samples, run_key)
    check_run_key_name(new_run_key)
    if new_run_key in samples.list_brain_runs():
        raise ValueError("a run with key %r already exists" % new_run_key)
    schema = samples._dataset.get_field_schema()
    clash = [field_name(new_run_key, s) for s in config.fields if field_name(new_run_key, s) in schema]
    if clash:
        raise ValueError("cannot rename to %r: fields %s already exist" % (new_run_key, ", ".join(clash)))
    with run_lock(samples, run_key, "rename_run"), run_lock(samples, new_run_key, "rename_run"):
        Correspondence(config).rename(samples, run_key, new_run_key)
        samples._dataset.rename_brain_run(run_key, new_run_key)
        _resave_views(samples._dataset, new_run_key)


def _resave_views(dataset, run_key):
    """Saved suspects views of a renamed run, rebuilt on its new fields (as
    :func:`fiftyone_ncl.review.suspects_view` builds them)."""
    from fiftyone import ViewField as F

    config = dataset.get_brain_info(run_key).config
    conf, noisy, margin = (field_name(run_key, s) for s in ("confidence", "noisy", "margin"))
    order = margin if dataset.has_sample_field(margin) else conf
    for view in config.saved_views:
        if isinstance(view, dict) and dataset.has_saved_view(view["name"]):
            flagged = F(noisy) == True if view.get("threshold") is None else F(conf) < view["threshold"]  # noqa: E712
            dataset.save_view(view["name"], dataset.exists(conf).match(flagged).sort_by(order), overwrite=True)


def delete_run(samples, run_key="ncl"):
    """Deletes a run with everything it made: its fields, maps, saved views,
    the tags it put on samples and its model file."""
    check_run(samples, run_key)
    with run_lock(samples, run_key, "delete_run"):
        samples._dataset.delete_brain_run(run_key)


def validate_run_key(samples, run_key, overwrite=False, method=None, caption_field=None,
                     suggest=True, store_embeddings=False):
    """Why a new run cannot be written under ``run_key`` (the message
    :func:`fiftyone_ncl.compute_correspondence` would raise), or None when it
    can. With ``method`` and ``caption_field`` the fields the run would
    write are checked too. For forms that validate as the user types."""
    try:
        suffixes = ()
        if method is not None and caption_field is not None:
            is_list = caption_kind(samples, caption_field) == "list"
            if method == "auto":  # any of its candidates may run
                from fiftyone_ncl.core.auto import CANDIDATES, FALLBACK

                names = list(dict.fromkeys(list(CANDIDATES) + [FALLBACK]))
            else:
                names = [method]
            suffixes = list(dict.fromkeys(
                s for n in names for s in planned_suffixes(get_method_class(n), is_list, suggest, store_embeddings)))
        check_new_run_key(samples, run_key, overwrite, suffixes)
    except (ValueError, IncompleteRunError) as e:
        return str(e)
    st = fojournal.status(samples._dataset, run_key)
    if st is not None:  # being written by another process right now
        return st[1]
    return None
