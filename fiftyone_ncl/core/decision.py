"""Deciding which pairs to flag, from stored per-pair scores.

Every method yields one statistic per pair, oriented here so that **higher
means more likely matched** (negate a loss before calling). This module turns
it into (1) an estimate of the mismatch rate with an interval, (2) a
probability that each pair is matched, monotone in the score and never
saturated, with a signed margin for diverging colour scales, and (3) a
decision under one of several modes. Everything is a pure function of the
stored arrays, the mode and the level: a decision can be re-made later
without retraining. numpy / scipy / scikit-learn only.

The statistics, chosen on a benchmark of score dumps (3 problems x 3 methods
x 0-40 % random and look-alike swaps, with a held-out set; see the issue
note):

* With a **null**, the same fitted method's scores of pairs known to be
  mismatched (shuffled pairs), F1 is known and the observed distribution is
  ``F = pi0 F0 + pi1 F1 >= pi1 F1``, so ``pi1 <= F(t) / F1(t)`` at every cut
  t (Storey's estimator mirrored: the lower tail is where only mismatches
  live). The ratio is read at the null's median and stepped down while it
  rises significantly at smaller null quantiles (matched pairs entering the
  null's range); a multinomial bootstrap gives the interval. The rate is 0
  when that interval reaches 0.
* The posterior is the two-groups (Efron) ``P(mismatched | s) = pi1 f1(s) /
  f(s)``, the density ratio from a decreasing isotonic fit of null versus
  observed scores. Default decision: P(matched) < 0.5. The "fdr" mode flags
  the largest set ``{score < t}`` whose estimated share of matched pairs
  (the mean posterior P(matched | s) over the set, computed with the rate's
  lower bound: conservative) is within the level.
* When the scores barely separate from the null (P(score > null score) <
  :data:`MIN_SEPARATION`) the rate is not identified: it is reported as an
  upper bound and the rate-based modes flag nothing.
* **Without a null** a two-component Gaussian mixture is used only when BIC
  prefers it to one component (one mode: rate 0, no flags). On the benchmark
  this fallback still flagged ~20 % of clean collections (skewed statistics
  look like two components): supply a null.

The rate reads as an *upper* bound: matched pairs that score like shuffled
ones cannot be told from mismatches. A null of fresh shuffles scored by a
model trained on the data is *lower* than the in-sample mismatches the model
partly memorised, which biases the rate down; score it out of sample or
train with decoy shuffles.
"""
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit
from scipy.stats import norm, rankdata
from sklearn.isotonic import isotonic_regression
from sklearn.mixture import GaussianMixture

# Confidences are kept in [CONFIDENCE_FLOOR, 1 - CONFIDENCE_FLOOR]: with a few
# thousand pairs nothing finer is estimable, and the App's colour bar then
# reads 0.001, not 1e-21.
CONFIDENCE_FLOOR = 1e-3
MODES = ("probability", "fdr", "top_k", "fraction", "f1")
DEFAULT_LEVELS = {"fdr": 0.1, "probability": 0.5, "fraction": 0.1}
# Below this P(score > null score) the scores barely differ from shuffled
# pairs' and the rate is not identified (every pair "could" be mismatched):
# rate-based modes then flag nothing. A perfect ranking reaches 1 - rate / 2,
# so 0.7 still admits rates up to ~60 %; on the benchmark every run below it
# had AUROC < 0.8 and flagged 40-99 % of the pairs without the gate.
MIN_SEPARATION = 0.7
# null quantiles at which F/F1 is read; the low end keeps >= 20 null scores
_LAMBDAS = np.round(np.arange(0.05, 0.951, 0.05), 2)
_MIN_NULL = 20
_MAX_BINS = 4096
_MAX_GMM_POINTS = 200_000


# ---------------------------------------------------------------- inputs


def _as_scores(x, name, min_size=2):
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("%s must be a 1-D array of numbers" % name) from None
    if a.ndim != 1:
        raise ValueError("%s must be 1-D, got shape %s" % (name, a.shape))
    if a.size < min_size:
        raise ValueError("%s needs at least %d values, got %d" % (name, min_size, a.size))
    if not np.all(np.isfinite(a)):
        raise ValueError("%s has %d non-finite values (NaN or inf)" % (name, int(np.sum(~np.isfinite(a)))))
    return a


def _check_unit_interval(value, name):
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool) or not 0 < value < 1:
        raise ValueError("%s must be a number in (0, 1), got %r" % (name, value))
    return float(value)


def _as_mask(marked, n, name):
    """Indices or a boolean mask -> boolean mask of length n."""
    a = np.asarray(marked)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError("%s as a mask must have shape (%d,), got %s" % (name, n, a.shape))
        return a.copy()
    if a.size == 0:
        return np.zeros(n, dtype=bool)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError("%s must be a boolean mask or a 1-D array of pair indices" % name)
    if a.min() < -n or a.max() >= n:
        raise ValueError("%s has indices outside [0, %d)" % (name, n))
    mask = np.zeros(n, dtype=bool)
    mask[a] = True
    return mask


# ---------------------------------------------------------------- the rate


@dataclass
class MismatchRate:
    """An estimated fraction of mismatched pairs.

    Attributes:
        rate: the estimate (0 when the data give no evidence of mismatches)
        low, high: the interval (``confidence`` level, bootstrap percentiles)
        method: ``"null-ratio"`` (with a null of shuffled pairs),
            ``"bic-gmm"`` (two Gaussian components preferred by BIC) or
            ``"one-mode"`` (BIC prefers one component: no mismatch population)
        evidence: what the estimate rests on (counts, the chosen cut, BIC...)
        model: internal: what :func:`decide` and :func:`posterior_matched`
            need to reuse the fit (not serialised)
        usable: False when the scores barely separate from the null's
            (``evidence["separation"] < MIN_SEPARATION``): the rate is then
            only an upper bound, confidences are 0.5 and the rate-based
            modes flag nothing
    """

    rate: float
    low: float
    high: float
    method: str
    evidence: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict, repr=False)
    usable: bool = True

    def to_dict(self):
        return {
            "rate": self.rate,
            "low": self.low,
            "high": self.high,
            "method": self.method,
            "usable": self.usable,
            "evidence": self.evidence,
        }


def estimate_mismatch_rate(score, null_score=None, *, confidence=0.9, n_boot=200, seed=0):
    """Estimates the fraction of mismatched pairs, with an interval.

    Args:
        score: (P,) per-pair statistic, higher = more likely matched
        null_score (None): (M,) the same method's statistic on pairs known
            to be mismatched (shuffled pairs); without it a BIC-gated
            two-component Gaussian mixture is used
        confidence (0.9): level of the interval
        n_boot (200): bootstrap resamples
        seed (0): seed of the bootstrap (the result is a pure function of
            the inputs)

    Returns:
        a :class:`MismatchRate`; ``rate == low == 0`` when the data give no
        evidence of a mismatch population
    """
    score = _as_scores(score, "score")
    confidence = _check_unit_interval(confidence, "confidence")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 10:
        raise ValueError("n_boot must be an integer >= 10, got %r" % (n_boot,))
    rng = np.random.default_rng(seed)
    if null_score is None:
        return _rate_from_mixture(score, confidence, n_boot, rng)
    null_score = _as_scores(null_score, "null_score", min_size=_MIN_NULL)
    return _rate_from_null(score, null_score, confidence, n_boot, rng)


def _rate_from_null(score, null, confidence, n_boot, rng):
    n, m = len(score), len(null)
    # Counts in cells of the pooled sample: the bootstrap then resamples
    # cell counts (multinomial), O(B x cells) at any P.
    pooled = np.concatenate([score, null])
    edges = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, min(_MAX_BINS, len(pooled)) + 1)))
    cum_s = np.searchsorted(np.sort(score), edges, side="right")
    cum_z = np.searchsorted(np.sort(null), edges, side="right")
    cells_s, cells_z = np.diff(cum_s, prepend=0), np.diff(cum_z, prepend=0)
    lambdas = _LAMBDAS[_LAMBDAS * m >= _MIN_NULL]
    if not len(lambdas):
        lambdas = _LAMBDAS[-1:]

    def curve(cs, cz):
        # F(t_lambda) / F1(t_lambda), t_lambda = the null's lambda quantile
        # (the first cell edge where the null CDF reaches lambda)
        fs, fz = np.cumsum(cs, axis=-1) / n, np.cumsum(cz, axis=-1) / m
        at = np.argmax(fz[..., None, :] >= lambdas[:, None] - 1e-12, axis=-1)
        return np.take_along_axis(fs, at, axis=-1) / np.take_along_axis(fz, at, axis=-1)

    pi = curve(cells_s, cells_z)
    boot = curve(rng.multinomial(n, cells_s / n, size=n_boot), rng.multinomial(m, cells_z / m, size=n_boot))
    best = _choose_lambda(pi, boot, lambdas)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot[:, best], [tail, 1.0 - tail])
    rate = float(min(1.0, pi[best]))
    t_best = float(np.quantile(null, lambdas[best]))
    n_below = int(np.sum(score <= t_best))
    evidence = {
        "n_pairs": n,
        "n_null": m,
        "lambda": float(lambdas[best]),
        "cut": t_best,
        "pairs_below_cut": n_below,
        # F/F1 at each lambda: flat = only mismatches look like shuffles;
        # rising = matched pairs overlap the null (the rate is then an upper bound)
        "ratio_curve": {"%.2f" % l: float(r) for l, r in zip(lambdas, pi)},
    }
    if low <= 0.0:
        # the interval reaches 0: a handful of pairs scoring like shuffles is
        # no evidence of a mismatch population
        rate, low = 0.0, 0.0
    # P(score > null score) (Mann-Whitney): how well this data separates from shuffles
    ranks = rankdata(pooled)
    separation = float((ranks[:n].sum() - n * (n + 1) / 2.0) / (n * m))
    evidence["separation"] = separation
    usable = separation >= MIN_SEPARATION
    if not usable:
        evidence["note"] = (
            "the scores barely separate from shuffled pairs' (P(score > null) = %.2f < %.2f): the rate is only "
            "an upper bound and no rate-based decision is made" % (separation, MIN_SEPARATION)
        )
    model = {"kind": "null" if usable else "none", "null": np.sort(null), "pi1": rate if usable else 0.0,
             "pi1_low": float(low) if usable else 0.0}
    return MismatchRate(rate, float(low), float(min(1.0, high)), "null-ratio", evidence, model, usable)


def _choose_lambda(pi, boot, lambdas, start=0.5, alpha=0.025):
    """Index of the lambda to read F/F1 at.

    Where only mismatches score like shuffles, F(t)/F1(t) is flat in lambda
    and a larger lambda is less noisy; matched pairs entering the null's
    range make it rise with lambda. So: start at the null median (Storey's
    lambda = 1/2) and step down while the ratio there is significantly above
    the ratio at a smaller lambda (paired bootstrap differences, one-sided
    level ``alpha``, Bonferroni over the smaller lambdas). Unlike the
    minimum over lambda (or the smallest upper bound, BBE), this does not
    pick the lambda that noise pushed lowest: on the benchmark those were
    biased low by 1-2 points even on ideal mixtures.
    """
    j = int(np.argmin(np.abs(lambdas - start)))
    while j > 0:
        diff = boot[:, j : j + 1] - boot[:, :j]
        z = (pi[j] - pi[:j]) / np.maximum(diff.std(axis=0), 1e-12)
        if not np.any(z > norm.ppf(1.0 - alpha / j)):
            return j
        j -= 1
    return 0


def _fit_gmm(x, k, seed):
    return GaussianMixture(n_components=k, reg_covar=1e-6, random_state=seed, n_init=1).fit(x.reshape(-1, 1))


def _two_or_one(score, seed=0):
    """(gmm2 or None, evidence): BIC between one and two Gaussian components
    on standardised scores."""
    x = score
    if len(x) > _MAX_GMM_POINTS:
        x = np.random.default_rng(seed).choice(x, _MAX_GMM_POINTS, replace=False)
    sd = x.std()
    if sd < 1e-12:
        return None, {"bic_1": None, "bic_2": None, "note": "constant scores"}
    z = (x - x.mean()) / sd
    g1, g2 = _fit_gmm(z, 1, seed), _fit_gmm(z, 2, seed)
    b1, b2 = float(g1.bic(z[:, None])), float(g2.bic(z[:, None]))
    evidence = {"bic_1": b1, "bic_2": b2}
    if b2 >= b1:
        return None, evidence
    lo = int(np.argmin(g2.means_.ravel()))
    # component sds floored at 1e-3 of the scores' sd (a component on a tie
    # group would otherwise be a spike)
    sds = np.maximum(np.sqrt(g2.covariances_.ravel()), 1e-3) * sd
    comp = {
        "pi1": float(g2.weights_[lo]),
        "mean1": float(g2.means_.ravel()[lo] * sd + x.mean()),
        "sd1": float(sds[lo]),
        "mean0": float(g2.means_.ravel()[1 - lo] * sd + x.mean()),
        "sd0": float(sds[1 - lo]),
    }
    return comp, evidence


def _rate_from_mixture(score, confidence, n_boot, rng):
    comp, evidence = _two_or_one(score)
    evidence["n_pairs"] = len(score)
    if comp is None:
        return MismatchRate(0.0, 0.0, 0.0, "one-mode", evidence, {"kind": "none", "pi1": 0.0, "pi1_low": 0.0})
    # a smaller bootstrap of refits (each one re-runs the BIC choice: a
    # resample preferring one component counts as rate 0)
    sub = score if len(score) <= 20_000 else rng.choice(score, 20_000, replace=False)
    boots = []
    for b in range(min(n_boot, 50)):
        c, _ = _two_or_one(rng.choice(sub, len(sub)), seed=b)
        boots.append(0.0 if c is None else c["pi1"])
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(boots, [tail, 1.0 - tail])
    evidence.update({k: comp[k] for k in ("mean1", "sd1", "mean0", "sd0")})
    model = dict(comp, kind="gmm", pi1_low=float(low))
    return MismatchRate(comp["pi1"], float(low), float(high), "bic-gmm", evidence, model)


# ---------------------------------------------------------------- per pair


def _mismatch_cdf(model, t):
    """pi1 * F1(t): the estimated fraction of all pairs that are mismatched
    and score <= t."""
    t = np.asarray(t, dtype=np.float64)
    if model["kind"] == "null":
        null = model["null"]
        return model["pi1"] * np.searchsorted(null, t, side="right") / len(null)
    if model["kind"] == "gmm":
        with np.errstate(over="ignore"):  # t may be +-inf (cuts flagging nothing or everything)
            return model["pi1"] * norm.cdf(t, model["mean1"], model["sd1"])
    return np.zeros_like(t)


def _mismatch_posterior(score, model):
    """P(mismatched | score), non-increasing in the score, in [0, 1]."""
    pi1 = model["pi1"]
    if pi1 <= 0.0:
        return np.zeros(len(score))
    if model["kind"] == "gmm":
        lp1 = np.log(pi1) + norm.logpdf(score, model["mean1"], model["sd1"])
        lp0 = np.log1p(-pi1) + norm.logpdf(score, model["mean0"], model["sd0"])
        post = expit(lp1 - lp0)
        # a wide low component's density comes back above a narrow high one
        # far in the upper tail: a higher score must never look less matched
        order = np.argsort(score, kind="stable")
        out = np.empty_like(post)
        out[order] = np.minimum.accumulate(post[order])
        return out
    # density ratio f1/f from a decreasing isotonic classifier of null (1)
    # versus observed (0) scores, the null weighted pi1 * n / m:
    # c = pi1 f1 / (pi1 f1 + f), so P(mismatched | s) = pi1 f1 / f = c / (1 - c)
    null = model["null"]
    n, m = len(score), len(null)
    x = np.concatenate([score, null])
    y = np.concatenate([np.zeros(n), np.ones(m)])
    w = np.concatenate([np.ones(n), np.full(m, pi1 * n / m)])
    xu, inv = np.unique(x, return_inverse=True)
    wu = np.bincount(inv, weights=w)
    yu = np.bincount(inv, weights=w * y) / wu
    fit = isotonic_regression(yu, sample_weight=wu, increasing=False)
    # interpolate between the centres of the constant blocks: a continuous,
    # strictly decreasing curve between the first and last block
    starts = np.flatnonzero(np.r_[True, np.diff(fit) != 0])
    block_w = np.add.reduceat(wu, starts)
    centres = np.add.reduceat(wu * xu, starts) / block_w
    c = np.interp(score, centres, fit[starts])
    with np.errstate(divide="ignore"):
        return np.clip(c / np.maximum(1.0 - c, 1e-300), 0.0, 1.0)


def posterior_matched(score, null_score=None, *, rate=None, seed=0):
    """Probability that each pair is matched, P(matched | score).

    Monotone: a higher score never gets a lower probability (ties in score
    get equal probability; distinct scores distinct ones). Clipped to
    ``[CONFIDENCE_FLOOR, 1 - CONFIDENCE_FLOOR]``; on data without a mismatch
    population (rate 0) every pair gets ``~1 - CONFIDENCE_FLOOR``; when the
    rate is not identified (``rate.usable`` False) every pair gets ~0.5. For
    a diverging colour scale use :func:`margin` (or :func:`log_odds`).

    Args:
        score: (P,) statistic, higher = matched
        null_score (None): (M,) the statistic of shuffled pairs (see
            :func:`estimate_mismatch_rate`)
        rate (None): a :class:`MismatchRate` already estimated on the same
            arrays (saves the bootstrap)
        seed (0): seed of the bootstrap when ``rate`` is None

    Returns:
        (P,) float64 probabilities
    """
    score = _as_scores(score, "score")
    if rate is None:
        rate = estimate_mismatch_rate(score, null_score, seed=seed)
    return _confidence(score, _mismatch_posterior(score, rate.model), rate.usable)


def _confidence(score, p_mismatch, usable=True):
    # a ramp of 1e-6 by (dense) rank keeps the order of the scores inside the
    # blocks where the posterior is flat: the App sorts by confidence
    ranks = rankdata(score, method="dense") - 1.0
    ranks /= max(1.0, ranks.max())
    if not usable:  # no evidence either way
        return 0.5 + 1e-6 * ranks
    span = 1.0 - 2.0 * CONFIDENCE_FLOOR - 1e-6
    return CONFIDENCE_FLOOR + span * (1.0 - p_mismatch) + 1e-6 * ranks


def log_odds(confidence):
    """log(p / (1 - p)) of confidences (bounded by the clipping: about +-6.9)."""
    p = np.asarray(confidence, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


def margin(score, cut):
    """Signed distance of each score to the decision cut, in robust standard
    deviations of the scores (1.4826 x MAD): negative = flagged. Centred at
    0 for diverging colour scales."""
    score = _as_scores(score, "score", min_size=1)
    if not np.isfinite(cut):
        cut = score.min() - 1.0 if cut < 0 else score.max() + 1.0
    scale = 1.4826 * np.median(np.abs(score - np.median(score)))
    if scale < 1e-12:
        scale = score.std() or 1.0
    return (score - float(cut)) / scale


# ---------------------------------------------------------------- decisions


def check_level(mode, level, n=None):
    """The level a decision mode runs at (its default when None); a
    ValueError naming the argument for an unknown mode or a level outside
    its range (``top_k``: a whole number in [0, n])."""
    if mode not in MODES:
        raise ValueError("decision mode must be one of %s, got %r" % (", ".join(MODES), mode))
    if mode == "top_k":
        too_big = n is not None and level is not None and not isinstance(level, bool) and level > n
        if not isinstance(level, (int, np.integer)) or isinstance(level, bool) or level < 0 or too_big:
            raise ValueError("level for top_k must be a whole number k in [0, %s], got %r" % (n if n is not None else "n", level))
        return int(level)
    if mode == "f1":
        return level
    return _check_unit_interval(DEFAULT_LEVELS[mode] if level is None else level, "level")


@dataclass
class Decision:
    """Which pairs are flagged.

    Attributes:
        flags: (P,) bool, True = suspected mismatch; always ``score < cut``
        cut: the score cut (midway between the last flagged and the first
            kept score; -inf when nothing is flagged)
        confidence: (P,) P(matched | score), see :func:`posterior_matched`
        margin: (P,) signed distance to the cut, see :func:`margin`
        info: ``mode``, ``level``, ``n``, ``n_flagged``, ``fraction_flagged``,
            ``estimated_fdr`` (estimated share of matched pairs among the
            flags; None when there is nothing to estimate it from), ``rate``
            (the :class:`MismatchRate` as a dict), and per mode extras
    """

    flags: np.ndarray
    cut: float
    confidence: np.ndarray
    margin: np.ndarray
    info: dict


def _cut_below(sorted_scores, k):
    """Score cut flagging the k lowest scores (k counts whole tie groups)."""
    if k <= 0:
        return -np.inf
    if k >= len(sorted_scores):
        return np.inf
    return 0.5 * (sorted_scores[k - 1] + sorted_scores[k])


def _estimated_fdr(model, score, cut, p_mismatch):
    """The flagged pairs' mean P(matched | score) (tail-area Fdr)."""
    flagged = score < cut
    if not flagged.any() or model["kind"] == "none":
        return None
    return float(np.clip(np.mean(1.0 - p_mismatch[flagged]), 0.0, 1.0))


def decide(
    score,
    mode="probability",
    level=None,
    *,
    null_score=None,
    marked_right=None,
    marked_wrong=None,
    rate=None,
    seed=0,
):
    """Flags suspected mismatches from stored scores; a pure function of the
    arrays, the mode and the level (call again to re-decide).

    Modes (``level`` default in brackets):

    * ``"probability"`` (0.5, the default): pairs with P(matched | score) <
      ``level`` (see :func:`posterior_matched`).
    * ``"fdr"`` (0.1): the largest set of lowest scores whose estimated share
      of matched pairs (false discoveries) is at most ``level``: the mean
      ``P(matched | s)`` of the flagged pairs (Efron's tail-area Fdr), the
      posterior computed with the rate's *lower* bound (conservative: the
      realised share moves by ~1/rate points per point of error in the rate).
    * Both flag nothing when the data show no mismatch population, or when
      the rate is not identified (``rate.usable`` False; ``info["refused"]``
      says why).
    * ``"top_k"``: the ``level`` (an int) lowest scores (ties at the border
      are all kept or all flagged: fewer than k then).
    * ``"fraction"`` (0.1): the lowest ``round(level x P)`` scores.
    * ``"f1"``: the cut maximising F1 on the pairs a person marked
      (``marked_wrong``: mismatched, ``marked_right``: matched; indices or
      boolean masks), applied to every pair.

    Args:
        score: (P,) statistic, higher = more likely matched
        mode ("probability"): one of :data:`MODES`
        level (None): the mode's level (see above)
        null_score (None): (M,) the statistic of shuffled pairs
        marked_right, marked_wrong (None): the marks for ``"f1"``
        rate (None): a :class:`MismatchRate` already estimated on these arrays
        seed (0): bootstrap seed when ``rate`` is None

    Returns:
        a :class:`Decision`

    Raises:
        ValueError: naming the argument, for NaN/inf or misshapen scores, an
            unknown mode, a level outside its range, or unusable marks
    """
    score = _as_scores(score, "score")
    n = len(score)
    level = check_level(mode, level, n)
    if rate is None:
        rate = estimate_mismatch_rate(score, null_score, seed=seed)
    elif not isinstance(rate, MismatchRate):
        raise ValueError("rate must be a MismatchRate from estimate_mismatch_rate, got %r" % (type(rate),))
    model = rate.model
    p_mismatch = _mismatch_posterior(score, model)
    confidence = _confidence(score, p_mismatch, rate.usable)
    s_sorted = np.sort(score)
    # the last index of each tie group: cuts never split equal scores
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True]) + 1
    extra = {}

    if mode in ("fdr", "probability") and not rate.usable:
        cut = -np.inf
        extra["refused"] = rate.evidence.get("note", "the rate is not identified")
    elif mode == "fdr":
        k = 0
        if model["pi1_low"] > 0:
            # Efron's tail-area Fdr: the mean P(matched | s) of the flagged
            # pairs. Not 1 - pi1 F1(t) / F(t): mismatches the model learnt to
            # push below every shuffled pair have F1(t) = 0 there and would
            # read as all matched (fdr flagged nothing at 20 % clear swaps).
            # With the rate's lower bound: each point of error in the rate
            # moves the realised FDP by ~1 / rate points, so the plug-in
            # point estimate overshot the level on the benchmark
            p_bad = _mismatch_posterior(s_sorted, dict(model, pi1=model["pi1_low"]))
            fdp = np.cumsum(1.0 - p_bad)[ends - 1] / ends
            ok = np.flatnonzero(fdp <= level)
            k = int(ends[ok[-1]]) if len(ok) else 0
        cut = _cut_below(s_sorted, k)
    elif mode == "probability":
        flagged = confidence < level
        cut = _cut_below(s_sorted, int(flagged.sum()))  # confidence is monotone: a lower set
    elif mode in ("top_k", "fraction"):
        k = int(level) if mode == "top_k" else int(round(level * n))
        k = int(ends[ends <= k][-1]) if k > 0 and np.any(ends <= k) else 0
        cut = _cut_below(s_sorted, k)
    else:
        cut, extra = _f1_cut(score, marked_right, marked_wrong)

    flags = score < cut
    info = {
        "mode": mode,
        "level": level,
        "n": n,
        "n_flagged": int(flags.sum()),
        "fraction_flagged": float(flags.mean()),
        "cut": float(cut),
        "estimated_fdr": _estimated_fdr(model, score, cut, p_mismatch),
        "rate": rate.to_dict(),
        **extra,
    }
    return Decision(flags, float(cut), confidence, margin(score, cut), info)


def _f1_cut(score, marked_right, marked_wrong):
    n = len(score)
    if marked_right is None or marked_wrong is None:
        raise ValueError("mode 'f1' needs marked_right and marked_wrong (indices or boolean masks)")
    right = _as_mask(marked_right, n, "marked_right")
    wrong = _as_mask(marked_wrong, n, "marked_wrong")
    if np.any(right & wrong):
        raise ValueError("marked_right and marked_wrong share %d pairs" % int(np.sum(right & wrong)))
    if not wrong.any() or not right.any():
        raise ValueError("mode 'f1' needs at least one pair in marked_wrong and one in marked_right")
    s = score[right | wrong]
    bad = wrong[right | wrong]
    order = np.argsort(s, kind="stable")
    s, bad = s[order], bad[order]
    # candidate cuts below each tie group's end: flag the i lowest marked pairs
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) + 1
    tp = np.cumsum(bad)[ends - 1]
    fp = ends - tp
    f1 = 2 * tp / (2 * tp + fp + (bad.sum() - tp))
    best = int(np.argmax(f1))  # the smallest cut among equal F1s: fewest flags
    i = ends[best]
    cut = np.inf if i >= len(s) else 0.5 * (s[i - 1] + s[i])
    return cut, {
        "marked": int(len(s)),
        "marked_f1": float(f1[best]),
        "marked_precision": float(tp[best] / i),
        "marked_recall": float(tp[best] / bad.sum()),
    }
