"""Mutual-information pieces used by DisNCL.

* :func:`grad_reverse`: identity forward, gradient
  multiplied by ``-coef`` backward (Ganin & Lempitsky's gradient reversal),
  for the adversarial cross-modal term.
* :class:`CLUB`: the contrastive log-ratio upper bound of Cheng et al. (ICML
  2020). A Gaussian variational ``q(y|x)`` (a small MLP for the mean and the
  log-variance) is fitted by maximum likelihood (:meth:`CLUB.learning_loss`,
  on detached features, with its own optimiser); its estimate
  ``E_pair[log q(y|x)] - E_x E_y[log q(y|x)]`` (:meth:`CLUB.forward`) is then
  an upper bound on ``I(x; y)`` that the encoders minimise.
* :class:`SeparableCritic` and :func:`critic_infonce`: a cross-modal InfoNCE
  critic ``<f(x), g(y)>`` (soft-clipped). Its loss is the adversarial term of DisNCL
  (a critic that tries to identify the matching pair from one side's MEI and
  the other side's MII) and ``log B - loss`` is the InfoNCE lower bound on
  the mutual information (capped at ``log B``).
* :func:`estimate_infonce_mi` and :func:`estimate_club_mi`: diagnostics with
  freshly fitted estimators, fitted on one half of the samples and evaluated
  on the other half.

Every loss is computed in float32 (callers may run under autocast).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fiftyone_ncl.core.nets import ProjectionHead
from fiftyone_ncl.core.training import adam

# gradient reversal ---------------------------------------------------------


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coef):  # pylint: disable=arguments-differ
        # a tensor coefficient stays on the device (read at backward time,
        # no host synchronisation; a captured CUDA graph reads each step's value)
        ctx.coef = coef.detach() if torch.is_tensor(coef) else float(coef)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # pylint: disable=arguments-differ
        return grad.neg().mul(ctx.coef), None


def grad_reverse(x, coef=1.0):
    """Identity in the forward pass; the gradient is multiplied by ``-coef``
    (a float or a 0-d tensor)."""
    return _GradReverse.apply(x, coef)


def mlp(in_dim, hidden_dim, out_dim, norm=True):
    """LayerNorm (optional) + Linear-GELU-Linear."""
    layers = [nn.LayerNorm(in_dim)] if norm else []
    layers += [nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)]
    return nn.Sequential(*layers)


def _weighted_mean(values, weights):
    if weights is None:
        return values.mean()
    weights = weights.float()
    return (weights * values).sum() / weights.sum().clamp_min(1e-12)


# CLUB ----------------------------------------------------------------------


class CLUB(nn.Module):
    """CLUB upper bound on ``I(x; y)`` with a Gaussian ``q(y|x)``.

    ``q(y|x) = N(mu(x), diag(exp(logvar(x))))``, ``mu`` and ``logvar`` read
    out of one small MLP (``logvar`` squashed by tanh as in the authors' code, so the
    variance stays in ``[e^-1, e]`` times the scale of ``y``). Fit ``q`` with
    :meth:`learning_loss` on detached features before using :meth:`forward`
    as a bound: an unfitted ``q`` gives a meaningless (even negative) value.

    Args:
        x_dim: dimension of the conditioning variable
        y_dim: dimension of the predicted variable
        hidden_dim (128): hidden width of the MLPs
    """

    def __init__(self, x_dim, y_dim, hidden_dim=128):
        super().__init__()
        # one MLP reads out both the mean and the log-variance: half the
        # operations of two networks, which matters in DisNCL's inner loop
        self.net = mlp(x_dim, hidden_dim, 2 * y_dim)
        self.y_dim = y_dim

    def _params(self, x):
        out = self.net(x.float())
        return out[:, : self.y_dim], torch.tanh(out[:, self.y_dim :])

    def log_likelihood(self, x, y, weights=None):
        """(Weighted) mean over rows of ``log q(y_i | x_i)`` (summed over dims)."""
        mu, logvar = self._params(x)
        y = y.float()
        ll = -0.5 * (((y - mu) ** 2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)
        return _weighted_mean(ll, weights)

    def learning_loss(self, x, y, weights=None):
        """Negative log-likelihood: the loss that fits ``q`` (use detached x, y)."""
        return -self.log_likelihood(x, y, weights)

    def forward(self, x, y, weights=None):
        """The CLUB estimate ``mean_i log q(y_i|x_i) - mean_i mean_j log q(y_j|x_i)``.

        The mean over all ``j`` is taken in closed form (no (B, B, d) tensor):
        ``mean_j (y_j - mu_i)^2 = mean(y^2) - 2 mu_i mean(y) + mu_i^2``.
        With ``weights`` both expectations are weighted (rows i and the
        marginal over j).
        """
        mu, logvar = self._params(x)
        y = y.float()
        inv_var = (-logvar).exp()
        positive = -0.5 * (((y - mu) ** 2) * inv_var).sum(-1)
        if weights is None:
            y_mean = y.mean(0, keepdim=True)
            y2_mean = (y**2).mean(0, keepdim=True)
        else:
            wn = weights.float() / weights.float().sum().clamp_min(1e-12)
            y_mean = (wn[:, None] * y).sum(0, keepdim=True)
            y2_mean = (wn[:, None] * y**2).sum(0, keepdim=True)
        negative = -0.5 * ((y2_mean - 2 * mu * y_mean + mu**2) * inv_var).sum(-1)
        return _weighted_mean(positive - negative, weights)


# InfoNCE critic -------------------------------------------------------------


class SeparableCritic(nn.Module):
    """``c(x, y) = clip * tanh(<f(x), g(y)> / (sqrt(k) * clip))``.

    ``f`` and ``g`` are :class:`~fiftyone_ncl.core.nets.ProjectionHead`-style
    maps (LayerNorm, a linear skip plus a GELU MLP) into ``k`` dimensions.
    The linear skip lets the critic pick up linearly encoded dependence within
    a few hundred steps without overfitting small samples (a purely
    nonlinear, normalised critic is much slower, see the unit tests); the
    soft clip keeps the logits in ``(-clip, clip)`` so an encoder trained
    against the critic through gradient reversal cannot drive its loss to
    infinity.

    Args:
        x_dim, y_dim: input dimensions
        hidden_dim (128): hidden width
        out_dim (64): dimension ``k`` of the critic space
        clip (10.0): bound of the logits
    """

    def __init__(self, x_dim, y_dim, hidden_dim=128, out_dim=64, clip=10.0):
        super().__init__()
        self.f = ProjectionHead(x_dim, hidden_dim, out_dim, normalize=False)
        self.g = ProjectionHead(y_dim, hidden_dim, out_dim, normalize=False)
        self.scale = 1.0 / math.sqrt(out_dim)
        self.clip = float(clip)

    def forward(self, x, y):
        """(B, B) float32 logits; row i = x_i against every y_j."""
        raw = (self.f(x.float()) @ self.g(y.float()).T) * self.scale
        return self.clip * torch.tanh(raw / self.clip)


def critic_infonce(logits, positives=None, weights=None, reduction="mean"):
    """Symmetric InfoNCE loss of a (B, B) logit matrix.

    Args:
        logits: (B, B) row i = x_i against every y_j
        positives (None): optional (B, B) bool mask of matching entries (the
            target spreads over them); default the diagonal
        weights (None): optional (B,) weight of each pair as a positive (the
            clean confidence w_i); rows keep every item as a negative
        reduction ("mean"): ``"mean"`` or ``"none"`` for (B,) per-pair losses
    """
    logits = logits.float()
    n = logits.shape[0]
    if positives is None:
        target = torch.eye(n, device=logits.device)
    else:
        target = positives.float()
    target_r = target / target.sum(1, keepdim=True).clamp_min(1e-12)
    target_c = target.T / target.T.sum(1, keepdim=True).clamp_min(1e-12)
    rows = -(target_r * F.log_softmax(logits, dim=1)).sum(1)
    cols = -(target_c * F.log_softmax(logits.T, dim=1)).sum(1)
    per_pair = 0.5 * (rows + cols)
    if reduction == "none":
        return per_pair
    return _weighted_mean(per_pair, weights)


def infonce_bound(logits, positives=None, weights=None):
    """InfoNCE lower bound ``log B - loss`` (nats) of a (B, B) critic matrix."""
    return math.log(logits.shape[0]) - float(critic_infonce(logits, positives, weights))


# diagnostics ----------------------------------------------------------------


def _split(n, seed):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    half = n // 2
    return perm[:half], perm[half:]


def _positives(groups, idx, device):
    if groups is None:
        return None
    g = torch.as_tensor(np.asarray(groups)[idx], device=device)
    return g[:, None] == g[None, :]


def estimate_infonce_mi(
    x,
    y,
    batch_size=128,
    steps=400,
    lr=1e-3,
    hidden_dim=128,
    out_dim=32,
    groups=None,
    seed=0,
    device="cpu",
):
    """InfoNCE lower bound on ``I(x; y)`` with a freshly fitted critic.

    Row i of ``x`` and ``y`` is one sample of the joint. The critic is fitted
    on a random half and evaluated on the other half in batches of
    ``batch_size`` (the bound is capped at ``log(batch_size)``, so values are
    only comparable at equal batch size).

    Args:
        x, y: (n, dx), (n, dy) arrays or tensors
        batch_size (128): batch size of the fit and of the estimate
        steps (400): critic optimisation steps
        lr (1e-3): Adam learning rate
        hidden_dim, out_dim: critic size
        groups (None): optional (n,) ids; rows with one id are all positives
            of each other (captions of one image)
        seed (0): seed of the split, the batches and the critic
        device ("cpu"): torch device

    Returns:
        a dict ``{"mi": nats on held-out pairs, "train_mi": nats on the fit
        half, "cap": log(batch), "n": samples}``
    """
    x = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)
    y = torch.as_tensor(np.asarray(y, dtype=np.float32), device=device)
    n = len(x)
    fit_idx, test_idx = _split(n, seed)
    bs = int(min(batch_size, len(test_idx), len(fit_idx)))
    if bs < 2:
        return {"mi": None, "train_mi": None, "cap": None, "n": n}
    with torch.random.fork_rng(devices=[] if torch.device(device).type == "cpu" else [device]):
        torch.manual_seed(seed)
        critic = SeparableCritic(x.shape[1], y.shape[1], hidden_dim, out_dim).to(device)
        opt = adam(critic.parameters(), lr)
        rng = np.random.default_rng(seed + 1)
        train_vals = []
        for step in range(steps):
            b = rng.choice(fit_idx, bs, replace=False)
            loss = critic_infonce(critic(x[b], y[b]), _positives(groups, b, device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step >= steps - 10:
                train_vals.append(math.log(bs) - loss.item())
        vals = []
        with torch.no_grad():
            for _ in range(4):
                perm = rng.permutation(test_idx)
                for start in range(0, len(perm) - bs + 1, bs):
                    b = perm[start : start + bs]
                    vals.append(infonce_bound(critic(x[b], y[b]), _positives(groups, b, device)))
    return {
        "mi": float(np.mean(vals)),
        "train_mi": float(np.mean(train_vals)) if train_vals else None,
        "cap": math.log(bs),
        "n": int(n),
    }


def estimate_club_mi(x, y, steps=300, lr=2e-3, hidden_dim=128, batch_size=256, seed=0, device="cpu"):
    """CLUB estimate of ``I(x; y)`` with a freshly fitted ``q(y|x)``.

    ``q`` is fitted on a random half; the estimate is taken on the other
    half (held out, so a ``q`` that memorised its fit half cannot inflate
    it). Values near 0 mean ``y`` is not predictable from ``x`` beyond its
    marginal.

    Returns:
        a dict ``{"mi": nats (held out), "train_mi": nats on the fit half, "n"}``
    """
    x = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)
    y = torch.as_tensor(np.asarray(y, dtype=np.float32), device=device)
    n = len(x)
    fit_idx, test_idx = _split(n, seed)
    if len(fit_idx) < 2 or len(test_idx) < 2:
        return {"mi": None, "train_mi": None, "n": n}
    # standardise both sides with fit-half statistics (MI is invariant to
    # it; q then sees small-variance coordinates as well as large ones)
    x = (x - x[fit_idx].mean(0, keepdim=True)) / x[fit_idx].std(0, keepdim=True).clamp_min(1e-6)
    y = (y - y[fit_idx].mean(0, keepdim=True)) / y[fit_idx].std(0, keepdim=True).clamp_min(1e-6)
    with torch.random.fork_rng(devices=[] if torch.device(device).type == "cpu" else [device]):
        torch.manual_seed(seed)
        club = CLUB(x.shape[1], y.shape[1], hidden_dim).to(device)
        opt = adam(club.parameters(), lr)
        rng = np.random.default_rng(seed + 1)
        bs = int(min(batch_size, len(fit_idx)))
        for _ in range(steps):
            b = rng.choice(fit_idx, bs, replace=False)
            loss = club.learning_loss(x[b], y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            test = float(club(x[test_idx], y[test_idx]))
            train = float(club(x[fit_idx], y[fit_idx]))
    return {"mi": test, "train_mi": train, "n": int(n)}
