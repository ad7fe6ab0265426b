"""Re-deciding a run without retraining: the stored ranking statistic and its
null (decoy pairs scored by the same model) are decided on again with another
mode or level, and the run's confidence, noisy and margin fields rewritten.
"""
import copy

import numpy as np

from fiftyone_ncl.core.decision import check_level, decide as decide_scores
from fiftyone_ncl.fo.fields import field_name, run_columns
from fiftyone_ncl.fo.labels import read_pair_labels
from fiftyone_ncl.fo.runs import check_run, load_run_results, locks_run_key, stale_samples, write_run

# the fields a decision owns (the per-caption lists follow them)
_DECISION_SUFFIXES = ("confidence", "noisy", "margin")


class _StoredPairs:
    """The pair layout a run scored, rebuilt from its results (the captions
    may have changed since; the decision does not read them)."""

    def __init__(self, results, is_list):
        self.sample_ids = list(results.sample_ids)
        self.image_index = np.asarray(results.image_index)
        self.is_list = bool(is_list)
        self.n_images = len(self.sample_ids)
        self._bounds = np.searchsorted(self.image_index, np.arange(self.n_images + 1))

    def per_sample(self, values):
        values = np.asarray(values)
        return [values[self._bounds[i] : self._bounds[i + 1]] for i in range(self.n_images)]


@locks_run_key("decide")
def decide(samples, run_key="ncl", decision="probability", level=None, labels=None):
    """Flags a run's pairs again with another decision, without retraining.

    Rewrites ``{key}_confidence``, ``{key}_noisy`` and ``{key}_margin`` (and
    their per-caption lists) from the statistic and null the run stored, and
    records the new decision and mismatch-rate estimate on the run. Tags the
    run put on samples are left as they are: re-tag with
    :func:`fiftyone_ncl.tag_mismatches`.

    Args:
        samples: the dataset (or a view of it) the run scored
        run_key ("ncl"): the run
        decision ("probability"): ``"probability"``, ``"fdr"``, ``"top_k"``,
            ``"fraction"`` or ``"f1"`` (see
            :func:`fiftyone_ncl.compute_correspondence`)
        level (None): the decision's level (its default when None)
        labels (None): for ``"f1"``: the pairs a person judged (a
            BooleanField name, a tag dict or per-pair values, as in
            :func:`fiftyone_ncl.compute_correspondence`)

    Returns:
        the run's updated :class:`~fiftyone_ncl.fo.runs.CorrespondenceResults`

    Raises:
        ValueError: for an unknown mode, a level outside its range, a run
            that predates stored statistics, or ``"f1"`` without labels
    """
    config = check_run(samples, run_key)
    results = load_run_results(samples, run_key)
    if results.statistic is None:
        raise ValueError("run %r has no stored statistic (it predates re-deciding): re-run "
                         "compute_correspondence(..., run_key=%r, overwrite=True)" % (run_key, run_key))
    level = check_level(decision, level, len(results.statistic))
    marks = None
    if decision == "f1":
        if labels is None:
            raise ValueError("decision='f1' needs labels: the pairs a person marked right and wrong")
        stale = stale_samples(samples, run_key)
        if stale:
            raise ValueError("captions of %d samples changed since run %r scored them (e.g. %s): "
                             "labels cannot be matched to its pairs; re-run it" % (len(stale), run_key, stale[0]))
        from fiftyone_ncl.fo.pairs import read_pairs

        dataset = samples._dataset
        pairs = read_pairs(dataset.select(list(results.sample_ids), ordered=True), config.caption_field)
        marks = read_pair_labels(dataset.select(list(results.sample_ids), ordered=True), pairs, labels)
    verdict = decide_scores(
        results.statistic, decision, level, null_score=results.null_statistic,
        marked_right=None if marks is None else marks == 1, marked_wrong=None if marks is None else marks == 0,
        seed=0,
    )
    results.confidence = verdict.confidence.astype(np.float32)
    results.noisy = verdict.flags
    results.margin = verdict.margin.astype(np.float32)
    results.info = dict(results.info or {}, decision=_jsonable(verdict.info))
    results.config.decision = decision
    results.config.level = verdict.info["level"]

    pairs = _StoredPairs(results, config.caption_list)
    # suggestions do not depend on the decision (and need the captions)
    decided = copy.copy(results)
    decided.suggestion_index = None
    columns = run_columns(run_key, pairs, decided, {})
    keep = {field_name(run_key, s) for s in _DECISION_SUFFIXES}
    keep |= {field_name(run_key, "caption_" + s) for s in _DECISION_SUFFIXES}
    columns = {f: v for f, v in columns.items() if f in keep}
    write_run(samples, run_key, columns, results, update_only=True)
    return load_run_results(samples, run_key)


def describe_estimate(results):
    """One sentence: the estimated mismatch rate and what was flagged."""
    rate, decision = results.mismatch_rate, results.decision
    flagged = "%d of %d pairs flagged (%s" % (results.n_noisy, results.n_pairs, decision.get("mode", "threshold"))
    flagged += ", level %s)" % decision["level"] if decision.get("level") is not None else ")"
    if not rate:
        return flagged
    if not rate.get("usable", True):
        return ("the scores barely separate from those of random pairs: no reliable estimate of the mismatched "
                "share (at most %.0f%%); %s" % (100 * rate["high"], flagged))
    return "about %.1f%% of pairs (%.1f-%.1f%%) look mismatched; %s" % (
        100 * rate["rate"], 100 * rate["low"], 100 * rate["high"], flagged)


def _jsonable(value):
    from fiftyone_ncl.utils import to_jsonable

    return to_jsonable(value)
