"""Runs recorded on the dataset like FiftyOne Brain runs.

A correspondence run is a brain run (``dataset.list_brain_runs()``,
``get_brain_info``, ``load_brain_results``, ``rename_brain_run``,
``delete_brain_run`` all work on it). Its fields are named ``{key}_{suffix}``,
so renaming the run renames them and deleting it deletes them.
"""
import logging

import numpy as np

import fiftyone.core.brain as fob
import fiftyone.core.utils as fou

logger = logging.getLogger(__name__)

RUN_TYPE = "ncl_correspondence"


def field_name(key, suffix):
    return "%s_%s" % (key, suffix)


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
            sample_ids=arr("sample_ids"),
            image_index=arr("image_index"),
            caption_position=arr("caption_position"),
            confidence=arr("confidence"),
            similarity=arr("similarity"),
            noisy=arr("noisy"),
            label=arr("label"),
            suggestion_index=arr("suggestion_index"),
            calibration_score=arr("calibration_score"),
            info=d.get("info"),
            metrics=d.get("metrics"),
        )


def list_runs(samples):
    """Keys of the correspondence runs on the collection's dataset."""
    return samples.list_brain_runs(type=RUN_TYPE)


def check_run(samples, run_key):
    """Raises a ValueError naming ``run_key`` if it is not a correspondence run."""
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
