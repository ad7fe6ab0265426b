"""Soft many-to-many matching targets (DisNCL, reference section 5.3).

One-to-one in-batch targets assume exactly one match per row: a second
caption of the same image, or a near-duplicate, is labelled a negative, and a
mislabelled (noisy) positive is pulled together. The soft targets here spread
each row's mass over the items that plausibly match the anchor, judged from
the anchor's *own* modality (trustworthy even when the anchor's pair is
noisy), and move a doubtful pair's mass from its own label to its neighbours'
partners:

    A_ij = <zbar_i, zbar_j>           detached teacher features of the anchor's
                                      modality (image-image for image->text
                                      rows, text-text for text->image rows);
                                      1 where i and j share an image
    D    = the hard target: the diagonal, spread over same-image entries
    N_i  = the top-k entries of row i outside the diagonal and the
           same-image entries (the anchor's nearest neighbours)
    Q_ij = (w_j + eps) exp(A_ij / tau_s) / sum_{k in P_i} (w_k + eps) exp(A_ik / tau_s),  j in P_i
    Y_ij = (1 - a_i) D_ij + a_i Q_ij,  a_i = ramp * (a0 + (1 - a0)(1 - w_i))

The prior's support ``P_i`` is ``N_i`` plus, for image anchors, the other
captions of the anchor's image (``same_image_in_prior``). Every row of ``Y``
sums to 1 and is zero outside ``M = diagonal + same-image + N``.

Deviation from the reference's literal formula: it puts the diagonal into
``Q`` too. With ``A_ii = 1`` and ``tau_s = 0.05`` the diagonal then takes
almost all of ``Q``'s mass unless ``w_i`` is astronomically small (a gap of
0.5 in affinity is a factor e^10 against the ``w_i + eps`` factor), so a
noisy pair would keep its own label, against the stated intent that "a noisy
pair moves most of its mass to its neighbours' partners". Here the diagonal
mass is ``(1 - a_i) = (1 - a0) w_i`` (0.9 for a clean pair, 0 for a noisy
one). For caption anchors, same-image columns are the anchor's own
(possibly wrong) image repeated, so they only carry the diagonal's mass.
"""
import torch

from fiftyone_ncl.core.losses import eye_mask


def hard_targets(same_image):
    """Row-normalised same-image mask: the one-to-one target (the diagonal),
    spread over captions that share the anchor's image."""
    target = same_image.float()
    return target / target.sum(1, keepdim=True).clamp_min(1.0)


def candidate_mask(affinity, k=5, same_image=None):
    """(B, B) bool: the diagonal, entries known to share an image, and the
    top-``k`` other entries of each row (the anchor's neighbours)."""
    n = affinity.shape[0]
    base = torch.eye(n, dtype=torch.bool, device=affinity.device)
    if same_image is not None:
        base = base | same_image.bool()
    return base | _neighbours(affinity, k, base)


def _neighbours(affinity, k, exclude):
    """Top-``k`` entries of each row outside ``exclude`` (fewer when a row
    has fewer candidates)."""
    n = affinity.shape[-1]
    out = torch.zeros(affinity.shape, dtype=torch.bool, device=affinity.device)
    k = int(min(k, n - 1))
    if k <= 0:
        return out
    off = affinity.float().masked_fill(exclude, float("-inf"))
    _, top = off.topk(k, dim=-1)
    out.scatter_(-1, top, True)
    # rows with fewer than k candidates picked excluded entries at -inf
    out &= ~exclude
    return out


@torch.no_grad()
def soft_targets(
    teacher,
    weights,
    same_image=None,
    k=5,
    tau_s=0.05,
    a0=0.1,
    ramp=1.0,
    eps=1e-3,
    min_mass=0.5,
    same_image_in_prior=True,
):
    """Soft many-to-many targets for the rows anchored in one modality.

    Args:
        teacher: (B, d) detached, L2-normalised features of the anchors'
            modality (EMA teacher or previous-epoch features); row j is the
            anchor of pair j. A (G, B, d) stack computes G sets of targets
            at once (DisNCL's image and caption anchors)
        weights: (B,) clean confidence w_j of each pair (no gradient)
        same_image (None): optional (B, B) bool, True where pairs i and j
            share an image
        k (5): neighbours per row besides the diagonal and same-image entries
        tau_s (0.05): temperature of the prior
        a0 (0.1): soft mass of a fully clean pair
        ramp (1.0): scale of the soft part in [0, 1] (0 during warm-up:
            the target is then the hard one); a float or a 0-d tensor
        eps (1e-3): added to w in the prior, so a row whose candidates are
            all doubtful still has a defined prior
        min_mass (0.5): rows whose total confidence ``w_i + sum_{j in P_i} w_j``
            falls below this get the loss weight ``mass / min_mass`` (no
            trustworthy partner in the batch)
        same_image_in_prior (True): whether the other captions of the
            anchor's image are candidates of the prior (with affinity 1):
            True for image anchors (they are captions of the anchor), False
            for caption anchors (they are the anchor's own labelled image);
            one per group for a (G, B, d) teacher

    Returns:
        ``(targets, row_weight, mask)``: (B, B) row-stochastic float32
        targets, (B,) loss weight of each row, and the (B, B) bool mask
        (diagonal + same-image + neighbours) outside which targets are 0
        (each with the teacher's leading group axis, if any)
    """
    teacher = teacher.float()
    w = weights.float().clamp(0.0, 1.0)
    n = teacher.shape[-2]
    eye = eye_mask(n, teacher.device)
    same = eye if same_image is None else (same_image.bool() | eye)
    affinity = teacher @ teacher.transpose(-1, -2)
    affinity = affinity.masked_fill(same, 1.0)
    neighbours = _neighbours(affinity, k, same)
    mask = same | neighbours
    support = neighbours
    if same_image is not None:
        in_prior = same_image_in_prior
        if isinstance(in_prior, (list, tuple)):
            extra = same & ~eye
            support = torch.stack([nb | extra if flag else nb for nb, flag in zip(neighbours, in_prior)])
        elif in_prior:
            support = neighbours | (same & ~eye)

    hard = hard_targets(same)
    logits = affinity / tau_s + torch.log(w + eps)[None, :]
    logits = logits.masked_fill(~support, float("-inf"))
    has_prior = support.any(-1, keepdim=True)
    prior = torch.where(has_prior, torch.softmax(logits.masked_fill(~has_prior, 0.0), dim=-1), hard)
    prior = prior.masked_fill(~(support | ~has_prior), 0.0)

    if torch.is_tensor(ramp):
        ramp = ramp.float().clamp(0.0, 1.0)
    else:
        ramp = float(min(max(ramp, 0.0), 1.0))
    a = ramp * (a0 + (1.0 - a0) * (1.0 - w))
    targets = (1.0 - a)[:, None] * hard + a[:, None] * prior

    mass = w + (w * support.float()).sum(-1)
    row_weight = (1.0 - ramp) + ramp * (mass / max(min_mass, 1e-12)).clamp(max=1.0)
    return targets, row_weight, mask


def soft_cross_entropy(logits, targets, row_weight=None):
    """(Weighted) mean over rows of ``-sum_j targets_ij log softmax(logits)_ij``."""
    return soft_cross_entropy_from_log_probs(torch.log_softmax(logits.float(), dim=1), targets, row_weight)


def soft_cross_entropy_rows(logp, targets):
    """(B,) ``-sum_j targets_ij logp_ij`` per row: the unreduced
    :func:`soft_cross_entropy_from_log_probs` (entries without target mass
    read 0, so ``-inf`` log-probabilities there do not poison the sum)."""
    return -(targets * logp.masked_fill(targets == 0, 0.0)).sum(-1)


def soft_cross_entropy_from_log_probs(logp, targets, row_weight=None):
    """:func:`soft_cross_entropy` from the rows' log-softmax (for a caller
    that shares it with another term)."""
    per_row = soft_cross_entropy_rows(logp, targets)
    if row_weight is None:
        return per_row.mean()
    return (row_weight * per_row).sum() / row_weight.sum().clamp_min(1e-12)
