"""Linear CCA baselines: how far a linear map of each modality gets.

:func:`fit_cca` fits canonical correlation analysis between the image and the
caption embeddings of given pairs (all pairs: the baseline a method must
beat; the clean pairs only: a reference ceiling), :func:`cca_similarity`
scores every pair by the cosine of its canonical variates (each weighted by
the square root of its canonical correlation).

The default backend is ridge-regularised CCA in closed form, not
``sklearn.cross_decomposition.CCA``, for two measured reasons:

* regularisation: unregularised CCA at 384 + 512 dimensions on a few
  thousand pairs finds chance directions of correlation near 1. Reducing
  each side by PCA first (the usual fix) fails exactly where it matters:
  when modality-exclusive factors dominate the variance, the shared
  directions are *not* among the top principal components (on the regime
  suite, PCA to 16-32 dims drops AUROC to chance where ridge keeps 0.8+).
  A ridge ``lambda`` on each covariance keeps every direction and damps the
  weak ones; it and the number of components are chosen on 20 % of the fit
  pairs left out, by how well they tell those pairs from shuffled ones;
* speed: sklearn fits by NIPALS, an iterative loop over the (n, d) data per
  component (3k pairs at 384 + 512 dims: 4 s for 2 components, 17 s for 8,
  and it had not converged in 500 iterations); the closed form needs three
  covariance products and two eigendecompositions of d x d matrices: 2-3 s
  at 3k pairs with the choice of ridge and components, 52 s at 100k (one
  thread, busy machine), linear in n.

``backend="sklearn"`` (on PCA inputs, no ridge) is kept for comparison; with
``ridge=0`` and the same ``pca_dim`` both give the same solution (tested).
"""
from dataclasses import dataclass, field

import numpy as np

from fiftyone_ncl.core.calibration import clean_probability

COMPONENT_GRID = (1, 2, 4, 8, 16, 32)
RIDGE_GRID = (1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0)


@dataclass
class CCAModel:
    """A fitted linear CCA.

    Attributes:
        image_mean, image_scale: standardisation of the image embeddings
        text_mean, text_scale: standardisation of the caption embeddings
        image_proj: (D_v, k) standardised image -> canonical variates (unit
            variance on the fit pairs)
        text_proj: (D_t, k) standardised caption -> canonical variates
        correlations: (k,) canonical correlations on the fit pairs
        info: how it was fitted (rows, ridge, components and, when those
            were chosen, the left-out AUROC of each candidate)
    """

    image_mean: np.ndarray
    image_scale: np.ndarray
    text_mean: np.ndarray
    text_scale: np.ndarray
    image_proj: np.ndarray
    text_proj: np.ndarray
    correlations: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def n_components(self):
        return int(self.image_proj.shape[1])

    def transform(self, images=None, texts=None):
        """Canonical variates of images and / or captions (None stays None)."""
        u = v = None
        if images is not None:
            u = ((np.asarray(images, np.float64) - self.image_mean) / self.image_scale) @ self.image_proj
        if texts is not None:
            v = ((np.asarray(texts, np.float64) - self.text_mean) / self.text_scale) @ self.text_proj
        return u, v


def _standardise(x):
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-12] = 1.0
    return mean, scale


def _eig(cov, pca_dim):
    """Eigenpairs of a covariance, largest first, the top ``pca_dim`` only."""
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[::-1], vectors[:, ::-1]
    keep = values > values[0] * 1e-10
    if pca_dim:
        keep[pca_dim:] = False
    return values[keep], vectors[:, keep]


class _Moments:
    """Covariances of standardised fit pairs, decomposed once so that every
    ridge value costs one small SVD."""

    def __init__(self, x, y, pca_dim):
        n = len(x)
        self.ex, self.vx = _eig(x.T @ x / (n - 1), pca_dim)
        self.ey, self.vy = _eig(y.T @ y / (n - 1), pca_dim)
        self.cxy = (x @ self.vx).T @ (y @ self.vy) / (n - 1)  # in the eigenbases

    def solve(self, ridge, k):
        """Projections (eigenbasis -> unit-variance variates) and correlations."""
        dx = 1.0 / np.sqrt(self.ex + ridge)
        dy = 1.0 / np.sqrt(self.ey + ridge)
        a, rho, bt = np.linalg.svd(dx[:, None] * self.cxy * dy[None, :], full_matrices=False)
        k = min(k, len(rho))
        wx, wy = dx[:, None] * a[:, :k], dy[:, None] * bt[:k].T
        # with a ridge the variates' variance is below 1: rescale, and report
        # their true correlation on the fit pairs
        sx = np.sqrt(np.sum(wx**2 * self.ex[:, None], 0))
        sy = np.sqrt(np.sum(wy**2 * self.ey[:, None], 0))
        corr = np.einsum("ik,ij,jk->k", wx, self.cxy, wy) / (sx * sy)
        return self.vx @ (wx / sx), self.vy @ (wy / sy), corr


def _weighted_cosine(u, v, weights):
    u, v = u * weights, v * weights
    return np.einsum("ij,ij->i", u, v) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1) + 1e-12)


def _choose(x, y, pca_dim, ridges, ks, seed, fraction=0.2, max_rows=20000):
    """(ridge, components) under which held-out pairs are told best from the
    same pairs re-paired at random: the detection task itself, on a random
    ``fraction`` of (at most ``max_rows``) fit pairs, left out of the fit.
    Some held-out pairs may be noisy too; that lowers every candidate alike. (Tried on the
    non-held-out regimes: a little better than keeping the components whose
    held-out correlation is beyond chance, worst case 0.93 vs 0.89.)"""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    # a subsample is enough to choose with (and halves the time at 100k pairs)
    perm = rng.permutation(len(x))[:max_rows]
    n_val = max(10, int(fraction * len(perm)))
    val, fit = perm[:n_val], perm[n_val:]
    mx, my = x[fit].mean(0), y[fit].mean(0)
    moments = _Moments(x[fit] - mx, y[fit] - my, pca_dim)
    xv, yv = x[val] - mx, y[val] - my
    shuffled = rng.permutation(n_val)
    target = np.r_[np.ones(n_val), np.zeros(n_val)]
    best, trace = None, []
    for ridge in ridges:
        px, py, corr = moments.solve(ridge, max(ks))
        u, v = xv @ px, yv @ py
        for k in ks:
            if k > len(corr):
                continue
            w = _weights(corr[:k])
            pos = _weighted_cosine(u[:, :k], v[:, :k], w)
            neg = _weighted_cosine(u[:, :k], v[shuffled, :k], w)
            # AUROC, ties (e.g. all 1.0 on clean pairs) broken by the separation
            auc = roc_auc_score(target, np.r_[pos, neg])
            gap = (pos.mean() - neg.mean()) / (np.sqrt(0.5 * (pos.var() + neg.var())) + 1e-12)
            trace.append((ridge, k, round(float(auc), 4)))
            if best is None or (auc, gap) > best[2]:
                best = (ridge, k, (auc, gap))
    return best[0], best[1], trace


def _weights(corr):
    """Per-component weights of the cosine: sqrt of the canonical correlation,
    so that weak components count less (slightly better than equal weights
    on the non-held-out regimes)."""
    return np.sqrt(np.clip(corr, 1e-6, None))


def fit_cca(
    images, texts, image_index, n_components=None, rows=None, ridge=None, pca_dim=None, backend="svd", seed=0
):
    """Fits linear CCA between the images and captions of some pairs.

    Inputs are standardised per dimension (on the fit pairs); each covariance
    gets a ridge ``ridge * I`` (its mean eigenvalue is 1).

    Args:
        images: (N, D_v) image embeddings
        texts: (P, D_t) caption embeddings
        image_index: (P,) image row of each caption
        n_components (None): canonical components kept; None chooses them
            from :data:`COMPONENT_GRID` (at most 32) with the ridge, on a
            random 20 % of the fit pairs left out (see ``_choose``)
        rows (None): the pairs to fit on (indices or a boolean mask), e.g.
            only clean pairs for a reference ceiling; None: all pairs
        ridge (None): covariance ridge; None chooses it from
            :data:`RIDGE_GRID` on the left-out pairs
        pca_dim (None): keep only this many principal directions per side
            first (None: all)
        backend ("svd"): ``"svd"`` (closed form, see the module docstring) or
            ``"sklearn"`` (``sklearn.cross_decomposition.CCA`` on the PCA
            inputs, no ridge; slow, for comparison)
        seed (0): seed of the held-out split

    Returns:
        a :class:`CCAModel`
    """
    images = np.asarray(images, dtype=np.float64)
    texts = np.asarray(texts, dtype=np.float64)
    image_index = np.asarray(image_index, dtype=np.int64)
    if images.ndim != 2 or texts.ndim != 2:
        raise ValueError("CCA needs 2-D embeddings, got images %s and texts %s" % (images.shape, texts.shape))
    if backend not in ("svd", "sklearn"):
        raise ValueError("backend must be 'svd' or 'sklearn', got %r" % backend)
    rows = np.arange(len(image_index)) if rows is None else np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    if len(rows) < 10:
        raise ValueError("CCA needs at least 10 pairs to fit, got %d" % len(rows))
    x, y = images[image_index[rows]], texts[rows]
    x_mean, x_scale = _standardise(x)
    y_mean, y_scale = _standardise(y)
    x, y = (x - x_mean) / x_scale, (y - y_mean) / y_scale
    info = {"n_rows": int(len(rows)), "pca_dim": pca_dim, "backend": backend}

    if backend == "sklearn":
        px, py, corr = _fit_sklearn(x, y, pca_dim, n_components or 8)
    else:
        if ridge is None or n_components is None:
            ridges = RIDGE_GRID if ridge is None else (ridge,)
            ks = COMPONENT_GRID if n_components is None else (int(n_components),)
            chosen_ridge, chosen_k, info["selection"] = _choose(x, y, pca_dim, ridges, ks, seed)
            ridge = chosen_ridge
            n_components = n_components or chosen_k
        px, py, corr = _Moments(x, y, pca_dim).solve(ridge, int(n_components))
    info.update(ridge=ridge, n_components=int(len(corr)))
    return CCAModel(x_mean, x_scale, y_mean, y_scale, px, py, np.asarray(corr), info)


def _fit_sklearn(x, y, pca_dim, n_components):
    from sklearn.cross_decomposition import CCA

    def pca(z):
        values, vectors = _eig(z.T @ z / (len(z) - 1), pca_dim)
        return vectors / np.sqrt(values)  # whitened principal scores

    wx, wy = pca(x), pca(y)
    k = min(n_components, wx.shape[1], wy.shape[1])
    cca = CCA(n_components=k, scale=False, max_iter=5000, tol=1e-10).fit(x @ wx, y @ wy)
    px, py = wx @ cca.x_rotations_, wy @ cca.y_rotations_
    u, v = x @ px, y @ py
    su, sv = u.std(0, ddof=1), v.std(0, ddof=1)
    corr = np.array([np.corrcoef(u[:, i], v[:, i])[0, 1] for i in range(k)])
    return px / su, py / sv, corr


def cca_similarity(model, images, texts, image_index, chunk_size=65536):
    """(P,) cosine of each pair's canonical variates, each weighted by the
    square root of its canonical correlation (higher: more likely clean).

    Args:
        model: a :class:`CCAModel`
        images: (N, D_v) image embeddings
        texts: (P, D_t) caption embeddings
        image_index: (P,) image row of each caption
        chunk_size (65536): captions transformed at once (bounded memory)

    Returns:
        (P,) float64 cosines in [-1, 1]
    """
    image_index = np.asarray(image_index, dtype=np.int64)
    w = _weights(model.correlations)
    u, _ = model.transform(images=images)
    u *= w
    u /= np.linalg.norm(u, axis=1, keepdims=True) + 1e-12
    out = np.empty(len(image_index))
    for i in range(0, len(image_index), chunk_size):
        _, v = model.transform(texts=texts[i : i + chunk_size])
        v *= w
        v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-12
        out[i : i + chunk_size] = np.einsum("ij,ij->i", u[image_index[i : i + chunk_size]], v)
    return out


def fit_refined_cca(images, texts, image_index, refine=2, n_components=None, ridge=None, min_refit_pairs=50,
                    seed=0):
    """A CCA of all pairs refitted ``refine`` times on the pairs a
    two-component mixture of its own similarities calls clean.

    A fit on every pair is pulled towards the swapped ones, and the fewer the
    pairs per input dimension the harder (with fewer pairs than dimensions it
    can fit swaps as well as real pairs); refitting on the pairs it already
    finds clean removes most of that pull. This is what the ``cca`` method
    ranks with and where the trained methods' heads start.

    Args:
        images, texts, image_index: as :func:`fit_cca`
        refine (2): refitting rounds (0: one fit on all pairs)
        n_components, ridge (None): as :func:`fit_cca` (None: chosen on
            held-out pairs at every round)
        min_refit_pairs (50): a round refits only when at least this many
            pairs are called clean; otherwise the previous fit stays
        seed (0): seed of the held-out split and of the mixture

    Returns:
        ``(model, history)``: the last :class:`CCAModel` and one record per
        fit (pairs fitted, components, ridge, pairs called clean)
    """
    rows, history = None, []
    for round_ in range(int(refine) + 1):
        model = fit_cca(images, texts, image_index, n_components=n_components, rows=rows, ridge=ridge, seed=seed)
        clean, _ = clean_probability(cca_similarity(model, images, texts, image_index), higher_is_clean=True,
                                     seed=seed)
        keep = np.flatnonzero(clean > 0.5)
        history.append({
            "round": round_, "fit_pairs": int(len(image_index) if rows is None else len(rows)),
            "components": model.n_components, "ridge": model.info.get("ridge"), "called_clean": int(len(keep)),
        })
        if round_ == refine or len(keep) < min_refit_pairs:
            break
        rows = keep
    return model, history
