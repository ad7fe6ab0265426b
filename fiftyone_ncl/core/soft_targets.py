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
    M    = top-k of each row (off-diagonal) + diagonal + same-image entries
    Q_ij = (w_j + eps) exp(A_ij / tau_s) / sum_{k in M_i} (w_k + eps) exp(A_ik / tau_s),  j in M_i
    Y_ij = (1 - a_i) D_ij + a_i Q_ij,  a_i = ramp * (a0 + (1 - a0)(1 - w_i))

``D`` is the hard target (the diagonal, spread over captions of the same
image). Every row of ``Y`` sums to 1 and is zero outside ``M``.
"""
import torch


def hard_targets(same_image):
    """Row-normalised same-image mask: the one-to-one target (the diagonal),
    spread over captions that share the anchor's image."""
    target = same_image.float()
    return target / target.sum(1, keepdim=True).clamp_min(1.0)


def candidate_mask(affinity, k=5, same_image=None):
    """(B, B) bool: the top-``k`` off-diagonal entries of each row, the
    diagonal, and entries known to share an image."""
    n = affinity.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=affinity.device)
    mask = eye.clone()
    k = int(min(k, n - 1))
    if k > 0:
        off = affinity.float().masked_fill(eye, float("-inf"))
        top = off.topk(k, dim=1).indices
        mask.scatter_(1, top, True)
    if same_image is not None:
        mask |= same_image.bool()
    return mask


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
):
    """Soft many-to-many targets for the rows anchored in one modality.

    Args:
        teacher: (B, d) detached, L2-normalised features of the anchors'
            modality (EMA teacher or previous-epoch features); row j is the
            anchor of pair j
        weights: (B,) clean confidence w_j of each pair (no gradient)
        same_image (None): optional (B, B) bool, True where pairs i and j
            share an image (their affinity is set to 1 and they are always
            candidates)
        k (5): neighbours kept per row besides the diagonal and same-image
            entries
        tau_s (0.05): temperature of the prior
        a0 (0.1): smoothing of a fully clean pair
        ramp (1.0): scale of the soft part in [0, 1] (0 during warm-up:
            the target is then the hard one)
        eps (1e-3): added to w before weighting, so a row whose candidates
            are all doubtful still has a defined prior
        min_mass (0.5): rows whose candidates' total confidence
            ``sum_{j in M_i} w_j`` falls below this get a loss weight
            ``mass / min_mass`` (no trustworthy partner in the batch)

    Returns:
        ``(targets, row_weight, mask)``: (B, B) row-stochastic float32
        targets, (B,) loss weight of each row, and the (B, B) bool candidate
        mask the targets live on
    """
    teacher = teacher.float()
    w = weights.float().clamp(0.0, 1.0)
    n = teacher.shape[0]
    affinity = teacher @ teacher.T
    if same_image is not None:
        same_image = same_image.bool()
        affinity = torch.where(same_image, torch.ones_like(affinity), affinity)
    else:
        same_image = torch.eye(n, dtype=torch.bool, device=teacher.device)
    mask = candidate_mask(affinity, k, same_image)

    logits = affinity / tau_s + torch.log(w + eps)[None, :]
    logits = logits.masked_fill(~mask, float("-inf"))
    prior = torch.softmax(logits, dim=1)

    ramp = float(min(max(ramp, 0.0), 1.0))
    a = ramp * (a0 + (1.0 - a0) * (1.0 - w))
    targets = (1.0 - a)[:, None] * hard_targets(same_image) + a[:, None] * prior

    mass = (w[None, :] * mask.float()).sum(1)
    row_weight = (1.0 - ramp) + ramp * (mass / max(min_mass, 1e-12)).clamp(max=1.0)
    return targets, row_weight, mask


def soft_cross_entropy(logits, targets, row_weight=None):
    """(Weighted) mean over rows of ``-sum_j targets_ij log softmax(logits)_ij``."""
    logp = torch.log_softmax(logits.float(), dim=1)
    per_row = -(targets * logp.masked_fill(targets == 0, 0.0)).sum(1)
    if row_weight is None:
        return per_row.mean()
    return (row_weight * per_row).sum() / row_weight.sum().clamp_min(1e-12)
