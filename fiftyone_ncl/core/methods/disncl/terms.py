"""DisNCL's loss terms, one named function each, in the order of the
objective (module docstring of :mod:`.method`)::

    L = L_match + lambda_dis * (gamma * L_S + (1 - gamma) * L_X) + lambda_reg * L_reg

Every term takes one batch's forward pass (``ov`` / ``ot``: what
:meth:`~.nets.DisNCLNet.side` returns for images and captions), the (B, B)
same-image mask ``same`` and the batch's clean confidences ``w`` (no
gradient), and returns float32 scalars.
"""
import torch.nn.functional as F

from fiftyone_ncl.core.losses import infonce, similarity_logits
from fiftyone_ncl.core.mi import critic_infonce, grad_reverse
from fiftyone_ncl.core.soft_targets import hard_targets, soft_cross_entropy, soft_targets


def match_loss(z_v, z_t, same, w, ramp, config, teacher=None):
    """L_match: cross-entropy of the in-batch similarities ``<z_V, z_T> / tau``
    against soft many-to-many targets (both directions), or hard targets
    before they ramp in (``ramp == 0``) and in the hard-target ablation.

    Args:
        teacher: ``(image_features, caption_features)`` of the batch, the
            detached affinities the soft targets are built from
    """
    c = config
    logits = similarity_logits(z_v, z_t, c.tau)
    if ramp > 0 and c.use_soft_targets:
        t_img, t_txt = teacher
        kw = dict(k=c.soft_k, tau_s=c.soft_tau, a0=c.soft_a0, ramp=ramp, min_mass=c.soft_min_mass)
        y_vt, rw_vt, _ = soft_targets(t_img, w, same, same_image_in_prior=True, **kw)
        y_tv, rw_tv, _ = soft_targets(t_txt, w, same, same_image_in_prior=False, **kw)
        return 0.5 * (soft_cross_entropy(logits, y_vt, rw_vt) + soft_cross_entropy(logits.T, y_tv, rw_tv))
    y = hard_targets(same)
    rw = w if (ramp > 0 and not c.use_soft_targets) else None
    return 0.5 * (soft_cross_entropy(logits, y, rw) + soft_cross_entropy(logits.T, y, rw))


def invariance_loss(ov, ot, same, w, ramp, config, tau_mi):
    """L_S = w-weighted symmetric InfoNCE on ``<z_V, z_T> / tau_mi`` +
    ``ramp * beta_s`` x the symmetric KL between the two sides' MII
    posteriors on confident pairs (w > 0.5).

    Returns:
        ``(l_s, l_infonce, l_kl)``
    """
    c = config
    z_v, z_t = ov["z"].float(), ot["z"].float()
    l_nce = infonce(z_v, z_t, tau_mi, positives=same, weights=w)
    confident = (w > 0.5).float()
    if c.stochastic:
        kl = symmetric_gaussian_kl(ov["mu"], ov["logvar"], ot["mu"], ot["logvar"])
    else:
        kl = fixed_variance_kl(z_v, z_t, c.kl_sigma)
    l_kl = (confident * kl).sum() / confident.sum().clamp_min(1.0)
    return l_nce + ramp * c.beta_s * l_kl, l_nce, l_kl


def exclusivity_loss(net, ov, ot, rec_v, rec_t, same, w, grl_coef, beta_x):
    """L_X = reconstruction ``||r([z, e]) - LN(h)||^2`` of both sides +
    ``beta_x`` x the adversarial critics c(e_V, z_T), c(e_T, z_V), whose
    gradient reaches the MEI heads reversed (coefficient ``grl_coef``).

    Returns:
        ``(l_x, l_reconstruction, l_adversarial)``
    """
    z_v, z_t = ov["z"].float(), ot["z"].float()
    e_v, e_t = ov["e"].float(), ot["e"].float()
    tgt_v = F.layer_norm(ov["h"].float(), (rec_v.shape[-1],)).detach()
    tgt_t = F.layer_norm(ot["h"].float(), (rec_t.shape[-1],)).detach()
    l_rec = F.mse_loss(rec_v, tgt_v) + F.mse_loss(rec_t, tgt_t)
    l_adv = critic_infonce(net.critic_image(grad_reverse(e_v, grl_coef), z_t.detach()), same, w) + critic_infonce(
        net.critic_text(grad_reverse(e_t, grl_coef), z_v.detach()), same, w
    )
    return l_rec + beta_x * l_adv, l_rec, l_adv


def mi_regulariser(net, ov, ot):
    """L_reg = CLUB(z_V; e_V) + CLUB(z_T; e_T): the upper bound on the
    information MII and MEI share within each modality."""
    return net.club_image(ov["z"].float(), ov["e"].float()) + net.club_text(ot["z"].float(), ot["e"].float())


def critic_loss(net, z_v, z_t, e_v, e_t, same, w):
    """The critics' own InfoNCE loss on detached features (their inner step)."""
    return critic_infonce(net.critic_image(e_v, z_t), same, w) + critic_infonce(net.critic_text(e_t, z_v), same, w)


def club_fit_loss(net, z_v, z_t, e_v, e_t):
    """CLUB's q(e | z) maximum-likelihood loss on detached features (its inner step)."""
    return net.club_image.learning_loss(z_v, e_v) + net.club_text.learning_loss(z_t, e_t)


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
