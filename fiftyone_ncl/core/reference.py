"""Per-pair matching probability against fixed reference negatives.

In-batch probabilities (CRCL's p_i, the per-pair loss of NCR-style splits)
depend on which other pairs happen to share the batch. To score a dataset,
every pair is instead compared with the same R seeded sets of ``B - 1``
negative pairs (B = the training batch size), in both directions:

    p_i2t = softmax over [<v_i, t_i>, <v_i, t_n> for n in set] at index 0
    p_t2i = the same with the roles of image and caption swapped

Negatives that share pair i's image (other captions of the same photo) are
left out of its softmax. ``p_i`` is the mean over sets of (p_i2t + p_t2i)/2
and the per-pair loss the mean of -(log p_i2t + log p_t2i)/2.
"""
import numpy as np

from fiftyone_ncl.core.calibration import clean_probability


def reference_negatives(n_pairs, n_negatives, n_sets, seed=0):
    """(n_sets, n_negatives) seeded pair rows used as negatives."""
    rng = np.random.default_rng(seed)
    k = min(n_negatives, n_pairs)
    return np.stack([rng.choice(n_pairs, k, replace=False) for _ in range(n_sets)])


def reference_scores(
    image_embeddings,
    text_embeddings,
    image_index,
    tau,
    n_negatives=127,
    n_sets=4,
    seed=0,
    chunk_size=8192,
    device=None,
):
    """Matching probability and loss of every pair against fixed negatives.

    Args:
        image_embeddings: (N, d) L2-normalised images (numpy, or a torch
            tensor with ``device``)
        text_embeddings: (P, d) L2-normalised captions
        image_index: (P,) image row of each caption
        tau: softmax temperature (the method's)
        n_negatives (127): negatives per set (training batch size - 1)
        n_sets (4): number of reference sets averaged
        seed (0): seed of the sets
        chunk_size (8192): pairs processed at once
        device (None): a torch device to compute on (a GPU: seconds for
            millions of pairs); None or CPU: numpy, as always

    Returns:
        ``(probability, loss)``: two (P,) float64 arrays
    """
    if device is not None and str(device) != "cpu":
        return _reference_scores_torch(
            image_embeddings, text_embeddings, image_index, tau, n_negatives, n_sets, seed, device
        )
    img = np.asarray(image_embeddings, dtype=np.float32)
    txt = np.asarray(text_embeddings, dtype=np.float32)
    image_index = np.asarray(image_index, dtype=np.int64)
    n_pairs = len(image_index)
    neg_sets = reference_negatives(n_pairs, n_negatives, n_sets, seed)

    prob = np.zeros(n_pairs, dtype=np.float64)
    loss = np.zeros(n_pairs, dtype=np.float64)
    for neg in neg_sets:
        neg_txt = txt[neg]  # (K, d)
        neg_img = img[image_index[neg]]  # (K, d)
        neg_owner = image_index[neg]
        for start in range(0, n_pairs, chunk_size):
            rows = np.arange(start, min(start + chunk_size, n_pairs))
            v = img[image_index[rows]]
            t = txt[rows]
            pos = np.einsum("ij,ij->i", v, t)[:, None]
            same = neg_owner[None, :] == image_index[rows][:, None]
            i2t = _log_prob_first(pos, v @ neg_txt.T, same, tau)
            t2i = _log_prob_first(pos, t @ neg_img.T, same, tau)
            prob[rows] += 0.5 * (np.exp(i2t) + np.exp(t2i))
            loss[rows] -= 0.5 * (i2t + t2i)
    return prob / len(neg_sets), loss / len(neg_sets)


def _reference_scores_torch(image_embeddings, text_embeddings, image_index, tau, n_negatives, n_sets, seed,
                            device, chunk_size=65536):
    """:func:`reference_scores` on a torch device: the same negatives and the
    same arithmetic (float32 products, float64 log-softmax)."""
    import torch

    device = torch.device(device)

    def on_device(x, dtype):
        if torch.is_tensor(x):
            return x.to(device=device, dtype=dtype)
        return torch.as_tensor(np.asarray(x)).to(device=device, dtype=dtype)

    img = on_device(image_embeddings, torch.float32)
    txt = on_device(text_embeddings, torch.float32)
    owner = on_device(image_index, torch.int64)
    n_pairs = len(owner)
    neg_sets = torch.as_tensor(reference_negatives(n_pairs, n_negatives, n_sets, seed)).to(device)
    prob = torch.zeros(n_pairs, dtype=torch.float64, device=device)
    loss = torch.zeros(n_pairs, dtype=torch.float64, device=device)
    for neg in neg_sets:
        neg_txt = txt[neg]
        neg_owner = owner[neg]
        neg_img = img[neg_owner]
        for start in range(0, n_pairs, chunk_size):
            rows = slice(start, min(start + chunk_size, n_pairs))
            v = img[owner[rows]]
            t = txt[rows]
            pos = (v * t).sum(1, keepdim=True)
            same = neg_owner[None, :] == owner[rows][:, None]
            i2t = _log_prob_first_torch(pos, v @ neg_txt.T, same, tau)
            t2i = _log_prob_first_torch(pos, t @ neg_img.T, same, tau)
            prob[rows] += 0.5 * (i2t.exp() + t2i.exp())
            loss[rows] -= 0.5 * (i2t + t2i)
    return (prob / len(neg_sets)).cpu().numpy(), (loss / len(neg_sets)).cpu().numpy()


def _log_prob_first_torch(pos, neg, exclude, tau):
    import torch

    logits = torch.cat([pos, neg.masked_fill(exclude, float("-inf"))], dim=1).double() / tau
    return logits[:, 0] - torch.logsumexp(logits, dim=1)


def _log_prob_first(pos, neg, exclude, tau):
    """log softmax([pos, neg])[0] with excluded negatives removed, stably."""
    logits = np.concatenate([pos, np.where(exclude, -np.inf, neg)], axis=1).astype(np.float64) / tau
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return logits[:, 0] - lse


def reference_confidence(image_embeddings, text_embeddings, image_index, tau, batch_size, n_sets=4, seed=0,
                         device=None):
    """Clean probability of every pair: a two-component mixture on its loss
    against the fixed reference negatives (``batch_size - 1`` per set, fewer
    on tiny collections), as CRCL and DisNCL score. ``device``: where to
    compute the reference losses (see :func:`reference_scores`).

    Returns:
        ``(confidence, loss, probability, fit)``: the (P,) clean posterior,
        the (P,) reference loss and matching probability, and the
        :class:`~fiftyone_ncl.core.calibration.MixtureFit` (None when the
        losses are constant)
    """
    n_neg = max(1, min(int(batch_size) - 1, len(image_index) - 1))
    probability, loss = reference_scores(
        image_embeddings, text_embeddings, image_index, tau, n_negatives=n_neg, n_sets=n_sets, seed=seed,
        device=device,
    )
    confidence, fit = clean_probability(loss, higher_is_clean=False, seed=seed)
    return confidence, loss, probability, fit
