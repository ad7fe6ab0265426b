"""``fiftyone-ncl bench ...`` with CRCL's SCC label statistics in every row.

The grid runner records detection and decision metrics but not what a
trained method's labels came to; this wrapper adds, for rows whose method
has ``label_stats`` after fit (CRCL), ``labels_zeroed`` (share of labels
cut to 0), ``labels_near_zero`` (share below 0.1, what the health check
counts), ``label_mean`` and, against the injected truth,
``labels_zeroed_clean`` / ``labels_zeroed_noisy`` (share of clean / noisy
pairs cut to 0) and ``label_auroc`` (the labels as a detector). Everything else is the bench CLI unchanged:

    python docs/results/crcl-m2m/bench_labels.py grid --profile suite ...

(the arguments are those of ``fiftyone-ncl bench``).
"""
import sys

import numpy as np

from fiftyone_ncl import cli
from fiftyone_ncl.core.metrics import detection_metrics
from fiftyone_ncl.bench import runner

_run_one = runner.run_one


def run_one(problem, data, noisy, *args, **kwargs):
    row, scores, fit = _run_one(problem, data, noisy, *args, **kwargs)
    stats = getattr(fit.method, "label_stats", None)
    if stats:
        row.update(labels_zeroed=stats["zeroed"], labels_near_zero=stats["near_zero"], label_mean=stats["mean"])
        labels, noisy = scores.label, np.asarray(noisy, dtype=bool)
        if labels is not None and len(labels) == len(noisy):
            zero = np.asarray(labels) == 0
            row.update(labels_zeroed_clean=float(zero[~noisy].mean()) if (~noisy).any() else None,
                       labels_zeroed_noisy=float(zero[noisy].mean()) if noisy.any() else None,
                       label_auroc=detection_metrics(noisy, np.asarray(labels, dtype=np.float64))["auroc"]
                       if noisy.any() and (~noisy).any() else None)
    return row, scores, fit


runner.run_one = run_one

if __name__ == "__main__":
    sys.exit(cli.main(["bench"] + sys.argv[1:]))
