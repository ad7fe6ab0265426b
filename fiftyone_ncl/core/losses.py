"""Losses over in-batch similarity matrices.

Every loss here takes L2-normalised image embeddings ``v`` (B, d) and caption
embeddings ``t`` (B, d) of B pairs, where row i of each is pair i, and works
from log-softmaxes computed in float32 so it is safe under fp16/bf16 autocast
(``exp(S / tau)`` with tau = 0.05 reaches e^20 and overflows fp16).
"""
import torch
import torch.nn.functional as F


_EYES = {}


def eye_mask(n, device):
    """A cached (n, n) bool identity (one per size and device: a step would
    otherwise build it three times)."""
    key = (int(n), str(device))
    eye = _EYES.get(key)
    if eye is None:
        eye = torch.eye(n, dtype=torch.bool, device=device)
        # not cached while a CUDA graph is being captured: the tensor would
        # hold no values until the graph is replayed
        if not (eye.is_cuda and torch.cuda.is_current_stream_capturing()):
            if len(_EYES) > 64:
                _EYES.clear()
            _EYES[key] = eye
    return eye


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
    per_pair = infonce_from_log_probs(F.log_softmax(logits, dim=1), F.log_softmax(logits.T, dim=1), positives)
    if reduction == "none":
        return per_pair
    if weights is None:
        return per_pair.mean()
    weights = weights.float()
    return (weights * per_pair).sum() / weights.sum().clamp_min(1e-12)


def infonce_from_log_probs(log_i2t, log_t2i, positives=None):
    """(B,) per-pair symmetric InfoNCE from the row log-softmaxes of the
    logits and of their transpose (so a caller that needs them for another
    term computes them once).

    Without ``positives`` the targets are the diagonal, read directly
    (``-log p_ii``: the same numbers, forward and backward, as the sum of a
    one-hot target times the row, without building the (B, B) target).
    """
    if positives is None:
        return -0.5 * (log_i2t.diagonal() + log_t2i.diagonal())
    target = positives.float()
    target = target / target.sum(dim=1, keepdim=True).clamp_min(1.0)
    target_t = target.T / target.T.sum(dim=1, keepdim=True).clamp_min(1e-12)
    i2t = -(target * log_i2t).sum(dim=1)
    t2i = -(target_t * log_t2i).sum(dim=1)
    return 0.5 * (i2t + t2i)
