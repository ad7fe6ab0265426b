"""DisNCL's split credibility gate.

Each epoch after warm-up, DisNCL fits a two-component Gaussian mixture to the
per-pair reference losses (:func:`~fiftyone_ncl.core.reference.reference_confidence`,
through :func:`~fiftyone_ncl.core.calibration.clean_probability`) and trains
with the posterior of the low-loss component as the clean confidence ``w``.
At high noise the losses of the swaps and of the clean pairs overlap, and
the mixture no longer separates the two populations: it fits the loss's right
tail instead (noisy component ~3 % of the pairs, its mean beyond the 95th
percentile), so nearly every swap gets a clean weight, every term gated on
``w`` switches on for it and the model memorises the swaps (each later split
then comes from that model).

:func:`split_credibility` says whether a fitted split can be trusted:

* ``"tail"``: the noisy component is small (weight below ``tail_weight``)
  and its mean lies beyond the ``tail_quantile`` quantile of the losses:
  the mixture has found the loss's tail, not a noisy population;
* ``"overlap"``: the components barely separate (Ashman's D =
  ``sqrt(2) |mu_n - mu_c| / sqrt(s_n^2 + s_c^2)`` below ``min_separation``);
* ``"no fit"``: the losses are constant (no mixture could be fitted).

:func:`fallback_weights` gives the weights used instead of an untrusted
split: ``"neutral"`` (every pair ``w = 0.5``: no pair is confident, none is
dropped), ``"previous"`` (the last trusted epoch's ``w``; neutral before the
first one) or ``"rank"`` (``w = 1 - F(loss)``, the pair's share of losses
above its own: keeps the loss ranking, with as many pairs above 0.5 as below).
"""
from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata

GATE_FALLBACKS = ("neutral", "previous", "rank")


class SplitCheck(NamedTuple):
    """Outcome of :func:`split_credibility`.

    Attributes:
        fired: True when the split is not trusted
        reason: ``"tail"``, ``"overlap"``, ``"tail+overlap"``, ``"no fit"`` or
            None (trusted)
        stats: what the decision read: ``noisy_weight``, ``noisy_mean``,
            ``tail_value`` (the ``tail_quantile`` quantile of the losses) and
            ``separation`` (Ashman's D); None values without a fit
    """

    fired: bool
    reason: str
    stats: dict

    def to_dict(self):
        return {"fired": bool(self.fired), "reason": self.reason, **self.stats}


def separation(fit):
    """Ashman's D of a fitted two-component mixture (its means and
    standard deviations): ``sqrt(2) |mu_1 - mu_2| / sqrt(s_1^2 + s_2^2)``.
    Above 2 the mixture density has two modes; near 0 the components
    coincide."""
    means, stds = np.asarray(fit.means, dtype=np.float64), np.asarray(fit.stds, dtype=np.float64)
    spread = float(np.sqrt(stds[0] ** 2 + stds[1] ** 2))
    if spread <= 0:
        return float("inf")
    return float(np.sqrt(2.0) * abs(means[1] - means[0]) / spread)


def split_credibility(loss, fit, tail_weight=0.1, tail_quantile=0.95, min_separation=0.0):
    """Whether a clean/noisy split fitted on per-pair losses can be trusted.

    Args:
        loss: (P,) per-pair losses (higher = more likely noisy) the mixture
            was fitted on
        fit: the :class:`~fiftyone_ncl.core.calibration.MixtureFit` of
            :func:`~fiftyone_ncl.core.calibration.clean_probability`
            (``higher_is_clean=False``), clean component first; None when
            the losses were constant
        tail_weight (0.1): a noisy component lighter than this...
        tail_quantile (0.95): ...whose mean lies beyond this quantile of the
            losses is a tail, not a split (``tail_weight = 0`` turns the
            check off)
        min_separation (0.0): components whose Ashman's D is below this do
            not separate (0 turns the check off)

    Returns:
        a :class:`SplitCheck`
    """
    loss = np.asarray(loss, dtype=np.float64)
    if fit is None:
        stats = dict(noisy_weight=None, noisy_mean=None, tail_value=None, separation=None)
        return SplitCheck(True, "no fit", stats)
    noisy_weight = float(fit.weights[1])
    noisy_mean = float(fit.means[1])
    tail_value = float(np.quantile(loss, tail_quantile)) if loss.size else float("nan")
    d = separation(fit)
    reasons = []
    if noisy_weight < tail_weight and noisy_mean > tail_value:
        reasons.append("tail")
    if d < min_separation:
        reasons.append("overlap")
    stats = dict(noisy_weight=noisy_weight, noisy_mean=noisy_mean, tail_value=tail_value, separation=d)
    return SplitCheck(bool(reasons), "+".join(reasons) or None, stats)


def rank_weights(loss):
    """``w_i = 1 - F(loss_i)``: 1 for the lowest loss, 0 for the highest,
    ties sharing their mean rank (0.5 for all when the losses are constant)."""
    loss = np.asarray(loss, dtype=np.float64)
    n = loss.size
    if n < 2:
        return np.full(n, 0.5)
    ranks = rankdata(loss, method="average")  # 1 .. n
    return (n - ranks) / (n - 1.0)


def fallback_weights(mode, loss, previous=None, neutral=0.5):
    """The weights that replace an untrusted split.

    Args:
        mode: ``"neutral"``, ``"previous"`` or ``"rank"`` (see the module)
        loss: (P,) per-pair losses
        previous (None): the last trusted split's (P,) weights, for
            ``"previous"`` (neutral when None)
        neutral (0.5): the neutral weight

    Returns:
        ``(w, used)``: the (P,) float64 weights and the mode actually used
        (``"neutral"`` for ``"previous"`` without a previous split)
    """
    n = np.asarray(loss).size
    if mode == "rank":
        return rank_weights(loss), "rank"
    if mode == "previous" and previous is not None and np.asarray(previous).size == n:
        return np.asarray(previous, dtype=np.float64).copy(), "previous"
    if mode not in GATE_FALLBACKS:
        raise ValueError("gate_fallback must be one of %s, got %r" % (", ".join(map(repr, GATE_FALLBACKS)), mode))
    return np.full(n, float(neutral)), "neutral"
