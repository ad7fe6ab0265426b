"""Runs recorded on the dataset like FiftyOne Brain runs.

A correspondence run is a brain run (``dataset.list_brain_runs()``,
``get_brain_info``, ``load_brain_results``, ``rename_brain_run``,
``delete_brain_run`` all work on it). Its fields are named ``{key}_{suffix}``
(:mod:`fiftyone_ncl.fo.fields`), so renaming the run renames them and
deleting it deletes them. Run keys are checked here, in one place, before a
run computes anything.
"""
import logging
import os

import numpy as np

import fiftyone as fo
import fiftyone.core.brain as fob
import fiftyone.core.fields as fof
import fiftyone.core.utils as fou

from fiftyone_ncl.core.registry import get_method_class
from fiftyone_ncl.fo.fields import field_name, planned_suffixes
from fiftyone_ncl.fo.pairs import caption_kind
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
        if renamed != self.config.visualization_keys:
            self.config.visualization_keys = renamed
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
        info=None,
        metrics=None,
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
        self.info = info or {}
        self.metrics = metrics or {}

    @property
    def threshold(self):
        return self.config.threshold

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
            "threshold": self.threshold,
            "mean_confidence": float(np.mean(self.confidence)) if self.n_pairs else None,
            "metrics": self.metrics,
        }

    def __repr__(self):
        s = self.summary()
        return "<CorrespondenceResults run %r (%s) on %r: %d of %d pairs flagged>" % (
            s["run_key"], s["method"], s["caption_field"], s["flagged"], s["pairs"],
        )

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
        )


# run keys --------------------------------------------------------------------


def check_run_key_name(run_key):
    """Raises a ValueError unless ``run_key`` can prefix field names."""
    if not isinstance(run_key, str) or not run_key.isidentifier():
        raise ValueError("run key %r must be a valid Python identifier, e.g. 'ncl'" % (run_key,))


def check_new_run_key(samples, run_key, overwrite=False, suffixes=()):
    """Checks, before anything is computed, that a run can be written under
    ``run_key``: a valid name, no existing run unless ``overwrite``, and no
    field ``{run_key}_{suffix}`` that belongs to something else."""
    check_run_key_name(run_key)
    dataset = samples._dataset
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


def list_runs(samples):
    """Keys of the correspondence runs on the collection's dataset."""
    return samples.list_brain_runs(type=RUN_TYPE)


def check_run(samples, run_key):
    """The config of run ``run_key``; a ValueError naming it if it is not a
    correspondence run."""
    if run_key not in samples.list_brain_runs():
        runs = list_runs(samples)
        raise ValueError(
            "no correspondence run %r on %r; runs: %s"
            % (run_key, samples._dataset.name, ", ".join(runs) or "none")
        )
    config = samples.get_brain_info(run_key).config
    if not isinstance(config, CorrespondenceConfig):
        raise ValueError("brain run %r is not a correspondence run" % run_key)
    return config


# writing ---------------------------------------------------------------------


def checkpoint_path(samples, run_key):
    """Where a run's trained model is saved by default: under FiftyOne's
    dataset directory, keyed by the dataset's id (not its name, which a
    clone or another database can share) and the run key."""
    dataset = samples._dataset
    return os.path.join(
        fo.config.default_dataset_dir, CHECKPOINT_DIR, str(dataset._doc.id), "%s.safetensors" % run_key
    )


def write_run(samples, run_key, columns, results, cache_writes=(), save_model=None, checkpoint=None):
    """Writes a run's fields and records it, all or nothing.

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

    A failure (or Ctrl-C) while writing deletes the fields the run created,
    restores those it overwrote, and keeps the previous run record.
    """
    dataset = samples._dataset
    ids = list(results.sample_ids)
    prefix = run_key + "_"
    results.config.fields = [f[len(prefix):] for f in columns]
    old_fields = []
    if run_key in dataset.list_brain_runs():
        old_fields = [field_name(run_key, s) for s in dataset.get_brain_info(run_key).config.fields]
    is_view = len(samples) != len(dataset)

    tmp_ckpt = None
    if save_model is not None and checkpoint is not None:
        os.makedirs(os.path.dirname(os.path.abspath(checkpoint)), exist_ok=True)
        tmp_ckpt = "%s.%d.tmp" % (checkpoint, os.getpid())
        save_model(tmp_ckpt)
    try:
        with FieldWriter(samples) as writer:
            for cache in cache_writes:
                writer.set(cache.field, cache.values, fof.ArrayField if cache.array else fof.VectorField, info=cache.info)
            writer.set_many(ids, columns)
            for old in old_fields:
                if old not in columns:
                    writer.delete(old)
            if is_view and old_fields:
                for f in columns:
                    writer.clear_outside(f, ids)
            _register(samples, run_key, results)
            writer.commit()
    except BaseException:
        if tmp_ckpt is not None and os.path.exists(tmp_ckpt):
            os.remove(tmp_ckpt)
        raise
    if tmp_ckpt is not None:
        os.replace(tmp_ckpt, checkpoint)


def _register(samples, run_key, results):
    """Records the run (replacing an existing one); if that fails midway the
    previous record is put back."""
    previous = None
    if run_key in samples.list_brain_runs():
        previous = (samples.get_brain_info(run_key).config, samples.load_brain_results(run_key))
    method = Correspondence(results.config)
    try:
        method.register_run(samples, run_key, overwrite=True, cleanup=False)
        method.save_run_results(samples, run_key, results)
    except BaseException:
        if run_key in samples.list_brain_runs():
            Correspondence.delete_run(samples, run_key, cleanup=False)
        if previous is not None:
            old = Correspondence(previous[0])
            old.register_run(samples, run_key, overwrite=True, cleanup=False)
            old.save_run_results(samples, run_key, previous[1])
        raise


# managing runs -----------------------------------------------------------------


def load_run_results(samples, run_key="ncl"):
    """The :class:`CorrespondenceResults` of a run."""
    check_run(samples, run_key)
    return samples.load_brain_results(run_key)


def get_run_info(samples, run_key="ncl"):
    """A JSON-friendly description of a run: config, time, counts, metrics."""
    check_run(samples, run_key)
    info = samples.get_brain_info(run_key)
    out = {
        "run_key": run_key,
        "timestamp": str(info.timestamp),
        "version": info.version,
        "config": info.config.serialize(),
    }
    results = samples.load_brain_results(run_key)
    if results is not None:
        out.update(results.summary())
        out["info"] = results.info
    return out


def rename_run(samples, run_key, new_run_key):
    """Renames a run and the fields it wrote."""
    config = check_run(samples, run_key)
    check_run_key_name(new_run_key)
    if new_run_key in samples.list_brain_runs():
        raise ValueError("a run with key %r already exists" % new_run_key)
    schema = samples._dataset.get_field_schema()
    clash = [field_name(new_run_key, s) for s in config.fields if field_name(new_run_key, s) in schema]
    if clash:
        raise ValueError("cannot rename to %r: fields %s already exist" % (new_run_key, ", ".join(clash)))
    Correspondence(config).rename(samples, run_key, new_run_key)
    samples._dataset.rename_brain_run(run_key, new_run_key)


def delete_run(samples, run_key="ncl"):
    """Deletes a run, the fields it wrote and its visualizations."""
    check_run(samples, run_key)
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
            suffixes = planned_suffixes(get_method_class(method), is_list, suggest, store_embeddings)
        check_new_run_key(samples, run_key, overwrite, suffixes)
    except ValueError as e:
        return str(e)
    return None
