"""Losses over in-batch similarity matrices.

Every loss here takes L2-normalised image embeddings ``v`` (B, d) and caption
embeddings ``t`` (B, d) of B pairs, where row i of each is pair i, and works
from log-softmaxes computed in float32 so it is safe under fp16/bf16 autocast
(``exp(S / tau)`` with tau = 0.05 reaches e^20 and overflows fp16).
"""
import torch
import torch.nn.functional as F


def similarity_logits(v, t, tau):
    """(B, B) logits ``<v_i, t_j> / tau`` in float32 (rows = images), also
    under autocast (which would otherwise run the matmul in fp16/bf16)."""
    with torch.autocast(device_type=v.device.type, enabled=False):
        return (v.float() @ t.float().T) / tau


def infonce(v, t, tau, positives=None, weights=None, reduction="mean"):
    """Symmetric InfoNCE (CLIP's loss), optionally multi-positive and weighted.

    Args:
        v, t: (B, d) image and caption embeddings of B pairs
        tau: temperature
        positives (None): optional (B, B) bool mask of which (image row,
            caption column) entries count as matches; the target of each row
            spreads uniformly over them. Default: the diagonal
        weights (None): optional (B,) per-pair weights
        reduction ("mean"): ``"mean"`` (weighted mean over pairs) or
            ``"none"`` for the (B,) per-pair losses

    Returns:
        the loss
    """
    logits = similarity_logits(v, t, tau)
    if positives is None:
        target = torch.eye(len(v), device=v.device)
    else:
        target = positives.float()
        target = target / target.sum(dim=1, keepdim=True).clamp_min(1.0)
    target_t = target.T / target.T.sum(dim=1, keepdim=True).clamp_min(1e-12)
    i2t = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
    t2i = -(target_t * F.log_softmax(logits.T, dim=1)).sum(dim=1)
    per_pair = 0.5 * (i2t + t2i)
    if reduction == "none":
        return per_pair
    if weights is None:
        return per_pair.mean()
    weights = weights.float()
    return (weights * per_pair).sum() / weights.sum().clamp_min(1e-12)
