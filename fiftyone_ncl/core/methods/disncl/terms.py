"""DisNCL's loss terms, one named function each, in the order of the
objective (module docstring of :mod:`.method`)::

    L = L_match + lambda_dis * (gamma * L_S + (1 - gamma) * L_X) + lambda_reg * L_reg

Every term takes one batch's forward pass (``ov`` / ``ot``: what
:meth:`~.nets.DisNCLNet.side` returns for images and captions), the (B, B)
same-image mask ``same`` (None when no two captions of the batch share an
image: the diagonal) and the batch's clean confidences ``w`` (no gradient),
and returns float32 scalars.

Work that several terms need is done once per step: the row log-softmaxes of
``<z_V, z_T> / tau`` in both directions (:func:`log_probs`, read by L_match
and, when ``tau_mi == tau``, by L_S's InfoNCE), and the image and caption
stacks ``zs`` / ``es`` (group 0 = images, 1 = captions) that the grouped
critics and CLUB networks of :mod:`.nets` read in one batched product.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F

from fiftyone_ncl.core.acl import acl_direction
from fiftyone_ncl.core.losses import eye_mask, infonce_from_log_probs, similarity_logits
from fiftyone_ncl.core.mi import grad_reverse
from fiftyone_ncl.core.soft_targets import (
    hard_targets,
    soft_cross_entropy_from_log_probs,
    soft_cross_entropy_rows,
    soft_targets,
)


class LogProbs(NamedTuple):
    """Row log-softmaxes of the (B, B) similarity logits (rows = images) and
    of their transpose (rows = captions)."""

    i2t: torch.Tensor
    t2i: torch.Tensor


def log_probs(z_v, z_t, tau):
    """:class:`LogProbs` of ``<z_V, z_T> / tau`` (float32)."""
    logits = similarity_logits(z_v, z_t, tau)
    return LogProbs(F.log_softmax(logits, dim=1), F.log_softmax(logits.T, dim=1))


def match_loss(lp, same, w, ramp, ramp_value, config, teacher=None):
    """L_match: cross-entropy of the in-batch similarities ``<z_V, z_T> / tau``
    (their :class:`LogProbs` ``lp``) against soft many-to-many targets (both
    directions), or hard targets before they ramp in (``ramp == 0``) and in
    the hard-target ablation.

    Args:
        ramp: the ramp as a Python float (which branch to take)
        ramp_value: the same ramp as a float or a 0-d tensor (the arithmetic;
            a tensor lets a captured CUDA graph read each step's value)
        teacher: ``(image_features, caption_features)`` of the batch, the
            detached affinities the soft targets are built from
    """
    c = config
    robust = ramp > 0 and getattr(c, "robust_loss", None) == "acl"
    if ramp > 0 and c.use_soft_targets:
        t_img, t_txt = teacher
        # both anchors' targets in one (2, B, B) computation: images (with
        # the anchor's other captions in the prior) and captions
        y, rw, _ = soft_targets(
            torch.stack([t_img.float(), t_txt.float()]), w, same, k=c.soft_k, tau_s=c.soft_tau, a0=c.soft_a0,
            ramp=ramp_value, min_mass=c.soft_min_mass, same_image_in_prior=(True, False),
        )
        if robust:
            rows = (soft_cross_entropy_rows(lp.i2t, y[0]), soft_cross_entropy_rows(lp.t2i, y[1]))
            return robust_match_loss(lp, rows, (rw[0], rw[1]), same, w, c.robust_min_w, c.acl_lam)
        return 0.5 * (soft_cross_entropy_from_log_probs(lp.i2t, y[0], rw[0])
                      + soft_cross_entropy_from_log_probs(lp.t2i, y[1], rw[1]))
    rw = w if (ramp > 0 and not c.use_soft_targets) else None
    if robust:
        target = hard_targets(same) if same is not None else None
        rows = ((-lp.i2t.diagonal(), -lp.t2i.diagonal()) if target is None else
                (soft_cross_entropy_rows(lp.i2t, target), soft_cross_entropy_rows(lp.t2i, target)))
        return robust_match_loss(lp, rows, (rw, rw), same, w, c.robust_min_w, c.acl_lam)
    if same is None:  # the diagonal: -log p_ii, the same numbers without a (B, B) target
        rows, cols = -lp.i2t.diagonal(), -lp.t2i.diagonal()
        if rw is None:
            return 0.5 * (rows.mean() + cols.mean())
        rw = rw.float()
        total = rw.sum().clamp_min(1e-12)
        return 0.5 * ((rw * rows).sum() / total + (rw * cols).sum() / total)
    y = hard_targets(same)
    return 0.5 * (soft_cross_entropy_from_log_probs(lp.i2t, y, rw) + soft_cross_entropy_from_log_probs(lp.t2i, y, rw))


def robust_match_loss(lp, rows, row_weights, same, w, min_w, lam):
    """L_match with a noise-tolerant loss for the unconfident rows: rows
    whose pair has ``w >= min_w`` keep their cross-entropy ``rows`` (one (B,)
    vector per direction, weighted by ``row_weights``, None = 1); the others
    take CRCL's active complementary loss with ``y = w``
    (:func:`~fiftyone_ncl.core.acl.acl_direction`, per direction):
    ``w * (-log P_ii) + lam * sum_{j not i} tan(P_ij) / (sum_j tan(P_ij)) ** (1 - w)``,
    the labelled partner's pull scaled by w and a bounded push away from
    the other items (items sharing the anchor's image are neither pushed
    nor pulled). Each direction is the weighted mean over its rows
    (unconfident rows weight 1), the two directions averaged."""
    wf = w.float()
    confident = (w >= min_w).float()
    n = len(wf)
    positives = eye_mask(n, wf.device) if same is None else (same.bool() | eye_mask(n, wf.device))
    out = 0.0
    for log_p, ce, rw in zip((lp.i2t, lp.t2i), rows, row_weights):
        active, complementary = acl_direction(log_p, 1.0 - wf, positives)
        acl = wf * active + lam * complementary
        rw = torch.ones_like(wf) if rw is None else rw.float()
        weight = confident * rw + (1.0 - confident)
        per_row = confident * ce + (1.0 - confident) * acl
        out = out + (weight * per_row).sum() / weight.sum().clamp_min(1e-12)
    return 0.5 * out


def invariance_loss(lp, z_v, z_t, mu_logvar, same, w, ramp_value, config):
    """L_S = w-weighted symmetric InfoNCE on ``<z_V, z_T> / tau_mi`` (its
    :class:`LogProbs` ``lp``) + ``ramp * beta_s`` x the symmetric KL between
    the two sides' MII posteriors on confident pairs (``w > kl_min_w``; none
    for deterministic heads with ``kl_deterministic=False``).

    Args:
        mu_logvar: ``(mu_V, logvar_V, mu_T, logvar_T)`` of stochastic heads
            (None for deterministic ones)

    Returns:
        ``(l_s, l_infonce, l_kl)``
    """
    c = config
    per_pair = infonce_from_log_probs(lp.i2t, lp.t2i, same)
    wf = w.float()
    l_nce = (wf * per_pair).sum() / wf.sum().clamp_min(1e-12)
    if mu_logvar is None and not getattr(c, "kl_deterministic", True):
        l_kl = torch.zeros((), device=z_v.device)
        return l_nce, l_nce, l_kl
    confident = (w > getattr(c, "kl_min_w", 0.5)).float()
    if mu_logvar is not None:
        kl = symmetric_gaussian_kl(*mu_logvar)
    else:
        kl = fixed_variance_kl(z_v, z_t, c.kl_sigma)
    l_kl = (confident * kl).sum() / confident.sum().clamp_min(1.0)
    return l_nce + ramp_value * c.beta_s * l_kl, l_nce, l_kl


def exclusivity_loss(net, ov, ot, rec_v, rec_t, zs, es, same, w, grl_coef, beta_x):
    """L_X = reconstruction ``||r([z, e]) - LN(h)||^2`` of both sides +
    ``beta_x`` x the adversarial critics c(e_V, z_T), c(e_T, z_V) (one
    grouped pass), whose gradient reaches the MEI heads reversed (coefficient
    ``grl_coef``, a float or a 0-d tensor).

    Returns:
        ``(l_x, l_reconstruction, l_adversarial)``
    """
    tgt_v = F.layer_norm(ov["h"].float(), (rec_v.shape[-1],)).detach()
    tgt_t = F.layer_norm(ot["h"].float(), (rec_t.shape[-1],)).detach()
    l_rec = F.mse_loss(rec_v, tgt_v) + F.mse_loss(rec_t, tgt_t)
    logits = net.critics(grad_reverse(es, grl_coef), zs.flip(0).detach())
    l_adv = grouped_critic_infonce(logits, same, w)
    return l_rec + beta_x * l_adv, l_rec, l_adv


def mi_regulariser(net, zs, es):
    """L_reg = CLUB(z_V; e_V) + CLUB(z_T; e_T): the upper bound on the
    information MII and MEI share within each modality (one grouped pass)."""
    return net.clubs(zs, es)


def critic_loss(net, zs, es, same, w):
    """The critics' own InfoNCE loss on detached features (a separate inner
    step; by default the critics learn from the adversarial pass itself)."""
    return grouped_critic_infonce(net.critics(es, zs.flip(0)), same, w)


def club_fit_loss(net, zs, es):
    """CLUB's q(e | z) maximum-likelihood loss on detached features (its inner step)."""
    return net.clubs.learning_loss(zs, es)


def grouped_critic_infonce(logits, positives=None, weights=None):
    """Sum over groups of :func:`~fiftyone_ncl.core.mi.critic_infonce` of a
    (G, B, B) logit stack (the same numbers as one call per group)."""
    logits = logits.float()
    rows_lp = F.log_softmax(logits, dim=2)
    cols_lp = F.log_softmax(logits, dim=1)
    if positives is None:
        rows = -torch.diagonal(rows_lp, dim1=1, dim2=2)
        cols = -torch.diagonal(cols_lp, dim1=1, dim2=2)
    else:
        target = positives.float()
        target_r = target / target.sum(1, keepdim=True).clamp_min(1e-12)
        target_c = target / target.sum(0, keepdim=True).clamp_min(1e-12)
        rows = -(target_r * rows_lp).sum(2)
        cols = -(target_c * cols_lp).sum(1)
    per_pair = 0.5 * (rows + cols)
    if weights is None:
        return per_pair.mean(1).sum()
    weights = weights.float()
    return ((weights * per_pair).sum(1) / weights.sum().clamp_min(1e-12)).sum()


def symmetric_gaussian_kl(mu_a, logvar_a, mu_b, logvar_b):
    """(B,) ``KL(a||b) + KL(b||a)`` of diagonal Gaussians, averaged over dims."""
    mu_a, mu_b = mu_a.float(), mu_b.float()
    logvar_a, logvar_b = logvar_a.float(), logvar_b.float()
    var_a, var_b = logvar_a.exp(), logvar_b.exp()
    diff2 = (mu_a - mu_b) ** 2
    kl_ab = 0.5 * (logvar_b - logvar_a + (var_a + diff2) / var_b - 1.0)
    kl_ba = 0.5 * (logvar_a - logvar_b + (var_b + diff2) / var_a - 1.0)
    return (kl_ab + kl_ba).mean(-1)


def fixed_variance_kl(z_a, z_b, sigma):
    """(B,) symmetric KL between ``N(z_a, sigma^2 I)`` and ``N(z_b, sigma^2 I)``:
    ``||z_a - z_b||^2 / sigma^2`` (the deterministic heads' version of the
    KL between MII posteriors)."""
    return ((z_a.float() - z_b.float()) ** 2).sum(-1) / float(sigma) ** 2
