"""CRCL's Active Complementary Loss (ACL), as in the official code.

Reference: Qin et al., "Cross-modal Active Complementary Learning with
Self-refining Correspondence", NeurIPS 2023; ``CRCL.train_self`` in
QinYang79/CRCL (see ``reference/crcl-method.md``, section 3).

For a batch of B pairs with (B, B) logits ``S / tau`` (rows = images,
columns = captions) and one detached soft label ``y_i`` per pair:

* ``P^{i2t}`` = row softmax of the logits, ``P^{t2i}`` = row softmax of their
  transpose (row i = caption i's distribution over the images);
* active term, both directions added: ``A_i = -log P^{i2t}_ii - log P^{t2i}_ii``;
* complementary term with ``q_i = 1 - y_i``, both directions added::

      C_i = sum_{j != i} tan(P_ij) / (sum_j tan(P_ij)) ** q_i     (per direction)

* loss ``mean(y * A) + lam * mean(C)`` (``lam = 5`` in the official code).
* SCC's matching probability ``p_i = (P^{i2t}_ii + P^{t2i}_ii) / 2``
  (official), or our many-to-many-aware adaptation ``P_ii / max_j P_ij`` per
  direction, averaged (:func:`relative_matching_probability_from_log_probs`).

Everything is computed from ``log_softmax`` in float32 with autocast disabled,
so the loss is safe under fp16/bf16 autocast: no raw ``exp(S / tau)`` (e^20
at tau = 0.05, beyond fp16's range) is ever formed. The official code's
``eps = 1e-10`` in the softmax denominator only guards its plain-exp softmax
against a zero denominator; ``log_softmax`` subtracts the row maximum, so the
denominator is >= 1 and no eps is needed (its effect on the official values is
below 1e-10 relative anyway).
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F

from fiftyone_ncl.core.losses import eye_mask as _eye
from fiftyone_ncl.core.losses import similarity_logits


# SCC's matching probability: CRCL's in-batch P_ii, or P_ii / max_j P_ij
# (many-to-many-aware); see matching_probability_from_log_probs
SCC_PROBABILITIES = ("official", "relative")


class ACLTerms(NamedTuple):
    """Output of :func:`acl_from_logits`.

    Attributes:
        loss: scalar ``mean(y * active) + lam * mean(complementary)``
        active: (B,) per-pair active term A_i (both directions, unweighted)
        complementary: (B,) per-pair complementary term C_i (both directions,
            without the factor ``lam``)
        p: (B,) detached in-batch matching probability
            ``(P^{i2t}_ii + P^{t2i}_ii) / 2`` (SCC's estimate)
    """

    loss: torch.Tensor
    active: torch.Tensor
    complementary: torch.Tensor
    p: torch.Tensor


def _no_autocast(device):
    return torch.autocast(device_type=device.type, enabled=False)


def in_batch_log_probs(logits, exclude=None):
    """Row log-softmaxes of both directions, in float32.

    Args:
        logits: (B, B) ``S / tau``, rows = images, columns = captions
        exclude (None): optional (B, B) bool mask of off-diagonal entries to
            leave out of both softmaxes (e.g. another caption of the same
            image: a false negative). The diagonal is never excluded

    Returns:
        ``(log_p_i2t, log_p_t2i)``, each (B, B); row i of ``log_p_t2i`` is
        caption i's log-distribution over the images
    """
    with _no_autocast(logits.device):
        logits = logits.float()
        if exclude is not None:
            logits = logits.masked_fill(exclude & ~_eye(len(logits), logits.device), float("-inf"))
        return F.log_softmax(logits, dim=1), F.log_softmax(logits.T, dim=1)


def acl_direction(log_p, q, eye=None):
    """Active and complementary terms of one direction.

    Args:
        log_p: (B, B) row log-probabilities; the diagonal holds the positives
        q: (B,) exponents of the complementary normaliser (``1 - y``)
        eye (None): the (B, B) bool identity, if the caller has one

    Returns:
        ``(active, complementary)``: two (B,) tensors,
        ``-log P_ii`` and ``sum_{j != i} tan(P_ij) / (sum_j tan(P_ij)) ** q_i``
    """
    with _no_autocast(log_p.device):
        log_p = log_p.float()
        eye = _eye(len(log_p), log_p.device) if eye is None else eye
        tan_p = torch.tan(log_p.exp())  # P in [0, 1]: tan is finite, increasing
        numerator = tan_p.masked_fill(eye, 0.0).sum(dim=1)
        # sum_j tan(P_ij) >= sum_j P_ij = 1, so the power never blows up
        denominator = tan_p.sum(dim=1)
        return -log_p.diagonal(), numerator / denominator.pow(q.float())


def acl_from_logits(logits, y, lam=5.0, exclude=None):
    """ACL over a batch, from its (B, B) logits ``S / tau``.

    Args:
        logits: (B, B) similarity logits (rows = images, columns = captions)
        y: (B,) soft correspondence labels in [0, 1] (detached here)
        lam (5.0): weight of the complementary term
        exclude (None): see :func:`in_batch_log_probs`

    Returns:
        an :class:`ACLTerms`
    """
    with _no_autocast(logits.device):
        log_i2t, log_t2i = in_batch_log_probs(logits, exclude)
        return acl_from_log_probs(log_i2t, log_t2i, y, lam)


def acl_from_log_probs(log_i2t, log_t2i, y, lam=5.0):
    """ACL from the row log-softmaxes of both directions
    (:func:`in_batch_log_probs`), for a caller that already has them (CRCL
    reads its matching probability p from the same ones); see
    :func:`acl_from_logits`."""
    with _no_autocast(log_i2t.device):
        y = torch.as_tensor(y, device=log_i2t.device).detach().float()
        q = 1.0 - y
        eye = _eye(len(log_i2t), log_i2t.device)
        a_i2t, c_i2t = acl_direction(log_i2t, q, eye)
        a_t2i, c_t2i = acl_direction(log_t2i, q, eye)
        active = a_i2t + a_t2i
        complementary = c_i2t + c_t2i
        loss = (y * active).mean() + lam * complementary.mean()
        return ACLTerms(loss, active, complementary, matching_probability_from_log_probs(log_i2t, log_t2i))


def matching_probability_from_log_probs(log_i2t, log_t2i, probability="official"):
    """(B,) detached matching probability from both directions'
    log-probabilities.

    Args:
        log_i2t, log_t2i: (B, B) row log-softmaxes (:func:`in_batch_log_probs`;
            excluded entries are ``-inf`` and so never count)
        probability ("official"): ``"official"``: CRCL's
            ``(P^{i2t}_ii + P^{t2i}_ii) / 2``; ``"relative"``: the
            many-to-many-aware ``(P^{i2t}_ii / max_j P^{i2t}_ij +
            P^{t2i}_ii / max_j P^{t2i}_ij) / 2`` (see
            :func:`relative_matching_probability_from_log_probs`)
    """
    if probability == "official":
        with torch.no_grad():
            return 0.5 * (log_i2t.diagonal().exp() + log_t2i.diagonal().exp())
    if probability == "relative":
        return relative_matching_probability_from_log_probs(log_i2t, log_t2i)
    raise ValueError("probability must be one of %s, got %r" % (", ".join(map(repr, SCC_PROBABILITIES)), probability))


def relative_matching_probability_from_log_probs(log_i2t, log_t2i):
    """(B,) detached many-to-many-aware matching probability: per direction
    ``P_ii / max_j P_ij`` over the row, averaged over the two directions.

    With k captions in a batch that fit an image equally well (captions per
    class, near-duplicates), each holds about ``1 / k`` of the row, so CRCL's
    ``P_ii`` of a clean pair tops out near ``1 / k``; the ratio to the row's
    largest entry stays near 1 for it, and is small for a pair whose row is
    won by another caption. In [0, 1]; exactly 1 where the diagonal is the
    row maximum. Entries left out of the softmax (``-inf``, e.g. same-image
    captions) never count as the maximum. Computed in log space
    (``exp(log P_ii - max_j log P_ij)``): the softmax normaliser cancels, so
    it is the ratio of the exponentiated logits; one row-max per direction,
    on the device, no host sync.
    """
    with torch.no_grad(), _no_autocast(log_i2t.device):

        def ratio(log_p):
            log_p = log_p.float()
            return (log_p.diagonal() - log_p.max(dim=1).values).clamp(max=0.0).exp()

        return 0.5 * (ratio(log_i2t) + ratio(log_t2i))


def acl_loss(v, t, y, tau, lam=5.0, exclude=None):
    """ACL of B pairs from L2-normalised embeddings ``v`` (B, d) and ``t``
    (B, d); see :func:`acl_from_logits`."""
    return acl_from_logits(similarity_logits(v, t, tau), y, lam=lam, exclude=exclude)


@torch.no_grad()
def matching_probability(logits, exclude=None, probability="official"):
    """(B,) detached ``(P^{i2t}_ii + P^{t2i}_ii) / 2`` (CRCL's p_i), or its
    many-to-many-aware form with ``probability="relative"`` (see
    :func:`matching_probability_from_log_probs`)."""
    log_i2t, log_t2i = in_batch_log_probs(logits, exclude)
    return matching_probability_from_log_probs(log_i2t, log_t2i, probability)
