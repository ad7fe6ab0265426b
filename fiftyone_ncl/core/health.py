"""Can a run's output be trusted? Label-free checks recorded on every run.

No labels exist where the product is used, so each check compares what the
run found with something it can be held to:

* ``separation``: how well the method's statistic tells the real pairs from
  decoy pairs (an image with another image's caption) scored by the same
  model. Near 0.5 the ranking carries no information.
* ``baseline``: a linear CCA of the same embeddings (few parameters, it cannot
  memorise swapped pairs) judged the same way. A trained method that finds
  clearly fewer pairs scoring like random pairs than the CCA, or separates
  real from random pairs less well, has memorised swaps or failed to fit:
  on our regime suite that is where trained heads rank below the CCA.
* ``labels`` (CRCL): soft labels near zero for far more pairs than look
  mismatched mean the labels are not usable as correction weights (the
  many-to-many caption case).

Pure numpy; the caller scores the baseline (:mod:`fiftyone_ncl.correspondence`).
"""
import numpy as np
from scipy.stats import spearmanr

# differences below these are within the estimates' noise on the suite
SEPARATION_GAP = 0.03
LABEL_ZERO = 0.1  # a soft label below this gives the pair no weight
LABEL_EXCESS = 0.2  # zeroed share above the mismatch estimate's upper bound by this much


def _check(name, ok, message, **values):
    return {"check": name, "ok": bool(ok), "message": message, **values}


def assess(rate, labels=None, baseline=None, method=None, statistic=None, label_info=None):
    """The health of a run.

    Args:
        rate: the run's :class:`~fiftyone_ncl.core.decision.MismatchRate`
            (decoy null)
        labels (None): (P,) CRCL's soft labels
        baseline (None): ``{"name", "rate" (a MismatchRate), "statistic"}``
            of a baseline judged on the same pairs
        method (None): the method's name (for the messages)
        statistic (None): (P,) the method's statistic (for the agreement
            with the baseline)
        label_info (None): CRCL's ``label_stats`` (its ``scc_probability``
            says which estimate the labels came from)

    Returns:
        ``{"verdict": "ok" | "check", "checks": [...], "summary": str}``; each
        check has ``check``, ``ok``, ``message`` and its values
    """
    method = method or "the method"
    checks = []
    sep = rate.evidence.get("separation")
    if sep is not None:
        checks.append(_check(
            "separation", rate.usable,
            "real pairs score above random pairs with probability %.2f" % sep if rate.usable else
            "real pairs barely score above random pairs (probability %.2f): the ranking carries little "
            "information and no pair is flagged by probability or FDR" % sep,
            separation=float(sep),
        ))
    if baseline is not None:
        b_rate, b_sep = baseline["rate"], baseline["rate"].evidence.get("separation")
        values = {"baseline": baseline["name"], "baseline_rate": float(b_rate.rate),
                  "baseline_low": float(b_rate.low), "rate": float(rate.rate), "rate_high": float(rate.high),
                  "baseline_separation": None if b_sep is None else float(b_sep)}
        if statistic is not None and baseline.get("statistic") is not None:
            values["rank_correlation"] = float(spearmanr(statistic, baseline["statistic"]).statistic)
        fewer = b_rate.usable and b_rate.low > rate.high
        worse_sep = b_sep is not None and sep is not None and b_sep - sep > SEPARATION_GAP
        if fewer or worse_sep:
            why = []
            if fewer:
                why.append("it finds %.1f%% of pairs scoring like random pairs where %s finds %.1f%% (%.1f-%.1f%%)"
                           % (100 * rate.rate, baseline["name"], 100 * b_rate.rate, 100 * b_rate.low,
                              100 * b_rate.high))
            if worse_sep:
                why.append("it separates real from random pairs less well (%.2f against %.2f)" % (sep, b_sep))
            message = ("%s looks worse than a linear %s on this data: %s. It may have memorised swapped pairs "
                       "or not fit; compare with method=%r" % (method, baseline["name"], "; ".join(why),
                                                               baseline["name"]))
        else:
            message = "%s does at least as well as a linear %s by the decoy checks" % (method, baseline["name"])
        checks.append(_check("baseline", not (fewer or worse_sep), message, **values))
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float64)
        zeroed = float(np.mean(labels < LABEL_ZERO)) if labels.size else 0.0
        ok = zeroed <= rate.high + LABEL_EXCESS
        checks.append(_check(
            "labels", ok,
            "%.0f%% of soft labels are near zero, in line with the estimated mismatch rate" % (100 * zeroed)
            if ok else
            "%.0f%% of soft labels are near zero but only about %.0f%% (at most %.0f%%) of pairs look "
            "mismatched: the labels are not usable as correction weights here (captions shared by many "
            "images?); rank and decide by confidence%s" % (
                100 * zeroed, 100 * rate.rate, 100 * rate.high,
                ", or refit with scc_probability='relative' for usable labels"
                if (label_info or {}).get("scc_probability") == "official" else ""),
            zeroed=zeroed,
        ))
    bad = [c for c in checks if not c["ok"]]
    return {
        "verdict": "check" if bad else "ok",
        "checks": checks,
        "summary": " ".join(c["message"] + "." for c in bad) if bad else "no check failed",
    }
