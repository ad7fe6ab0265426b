"""Turning per-pair scores into a probability that the pair is clean.

A two-component Gaussian mixture (scikit-learn) is fitted to one score per
pair, after min-max normalisation over the whole set, as in NCR and its
followers. The clean probability is the posterior of the component whose mean
is on the "clean" side (high similarity, or low loss).
"""
import logging

import numpy as np
from scipy.special import expit
from sklearn.mixture import GaussianMixture

logger = logging.getLogger(__name__)

# Fitting on a random subset keeps the fit cheap on millions of pairs; the
# posterior is then evaluated on every pair.
_MAX_FIT_POINTS = 200_000


class MixtureFit:
    """A fitted two-component mixture over normalised scores.

    Attributes:
        means: (2,) component means in the original score units, clean first
        stds: (2,) component standard deviations, clean first
        weights: (2,) mixing weights, clean first
        lo, hi: the min-max normalisation range
        higher_is_clean: whether larger scores indicate clean pairs
    """

    def __init__(self, gmm, lo, hi, higher_is_clean):
        self._gmm = gmm
        self.lo = float(lo)
        self.hi = float(hi)
        self.higher_is_clean = bool(higher_is_clean)
        means = gmm.means_.ravel()
        order = np.argsort(-means if higher_is_clean else means)
        self._clean = int(order[0])
        span = self.hi - self.lo
        self.means = means[order] * span + self.lo
        self.stds = np.sqrt(gmm.covariances_.ravel()[order]) * span
        self.weights = gmm.weights_.ravel()[order]

    def posterior(self, scores):
        """Clean-component posterior of each score, monotone in the score.

        Computed as log-odds in log space (no underflow to exactly 0 or 1 in
        the tails, so the least confident pairs stay ordered). With unequal
        variances the raw posterior of a narrow clean component falls again
        in the far tail of a wide noisy one; a curator expects a higher
        similarity never to lower the confidence, so the log-odds are
        replaced by their running maximum along the clean direction, and a
        1e-6 ramp keeps that maximum strictly increasing: the confidence
        ranks pairs exactly as the score does.
        """
        scores = np.asarray(scores, dtype=np.float64)
        x = (scores - self.lo) / (self.hi - self.lo)
        means = self._gmm.means_.ravel()
        variances = self._gmm.covariances_.ravel()
        log_joint = (
            np.log(self._gmm.weights_)[None, :]
            - 0.5 * np.log(2 * np.pi * variances)[None, :]
            - 0.5 * (x[:, None] - means[None, :]) ** 2 / variances[None, :]
        )
        log_odds = log_joint[:, self._clean] - log_joint[:, 1 - self._clean]
        order = np.argsort(scores if self.higher_is_clean else -scores, kind="stable")
        ramp = np.empty(len(order))
        ramp[order] = np.arange(len(order)) / max(1, len(order) - 1)
        envelope = np.empty_like(log_odds)
        envelope[order] = np.maximum.accumulate(log_odds[order])
        return expit(envelope + 1e-6 * ramp)

    def to_dict(self):
        return {
            "means": self.means.tolist(),
            "stds": self.stds.tolist(),
            "weights": self.weights.tolist(),
            "higher_is_clean": self.higher_is_clean,
        }


def fit_mixture(scores, higher_is_clean=True, seed=0, max_iter=100, tol=1e-3, reg_covar=5e-4):
    """Fits a 2-component GMM to min-max normalised scores.

    Args:
        scores: (n,) one score per pair
        higher_is_clean (True): whether larger scores mean cleaner pairs (True
            for similarities, False for losses)
        seed (0): random state of the fit and of the subsample
        max_iter, tol, reg_covar: passed to
            :class:`sklearn.mixture.GaussianMixture`

    Returns:
        a :class:`MixtureFit`, or None when the scores are (numerically)
        constant or fewer than 2, so no split can be made
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size < 2 or not np.all(np.isfinite(scores)):
        if scores.size and not np.all(np.isfinite(scores)):
            raise ValueError("cannot calibrate non-finite scores")
        return None

    lo, hi = float(scores.min()), float(scores.max())
    if hi - lo < 1e-12:
        return None

    x = (scores - lo) / (hi - lo)
    if x.size > _MAX_FIT_POINTS:
        rng = np.random.default_rng(seed)
        x = rng.choice(x, _MAX_FIT_POINTS, replace=False)

    gmm = GaussianMixture(
        n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed
    )
    gmm.fit(x.reshape(-1, 1))
    return MixtureFit(gmm, lo, hi, higher_is_clean)


def clean_probability(scores, higher_is_clean=True, seed=0, **kwargs):
    """Probability that each pair is clean, from a 2-component GMM on scores.

    Args:
        scores: (n,) one score per pair (similarity or loss)
        higher_is_clean (True): whether larger scores mean cleaner pairs
        seed (0): random state
        **kwargs: passed to :func:`fit_mixture`

    Returns:
        a tuple ``(probability, fit)``: (n,) float64 clean probabilities and
        the :class:`MixtureFit` (None when the scores carry no split, in which
        case every probability is 0.5: no evidence either way)
    """
    fit = fit_mixture(scores, higher_is_clean=higher_is_clean, seed=seed, **kwargs)
    if fit is None:
        return np.full(np.asarray(scores).size, 0.5), None
    return fit.posterior(scores), fit
