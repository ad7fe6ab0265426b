"""Row-wise vector helpers shared by every part of the package.

One policy for unit-normalising embeddings: a row that is zero or not finite
has no direction, so it is an error naming where it came from (a silent zero
vector would score as "no evidence" and hide a broken input).
"""
import numpy as np

_CHUNK = 65536
_SHOW = 5


def row_sq_norms(x, chunk=_CHUNK):
    """Squared L2 norms of the rows of ``x`` in float64, chunk by chunk (no
    temporary as large as ``x``)."""
    out = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), chunk):
        block = np.asarray(x[start : start + chunk], dtype=np.float64)
        out[start : start + chunk] = np.einsum("ij,ij->i", block, block)
    return out


def normalize_rows(x, where="embeddings", labels=None, copy=True, chunk=_CHUNK):
    """Rows of ``x`` as float32 unit vectors.

    Args:
        x: (n, d) array
        where ("embeddings"): what ``x`` is, for error messages
        labels (None): optional (n,) names of the rows (sample ids, file
            paths) for error messages; default the row numbers
        copy (True): False normalises a float32 ``x`` in place

    Returns:
        the (n, d) float32 array; ``x`` itself, untouched, when it is float32
        with unit rows already (what the encoders produce), so large inputs
        are not copied

    Raises:
        ValueError: naming ``where`` and the first offending rows when a row
            has a NaN / infinite value or is all zero
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError("%s must be a 2-D array, got shape %s" % (where, x.shape))
    sq = row_sq_norms(x, chunk)
    for bad, what in ((~np.isfinite(sq), "NaN or infinite values"), (sq == 0, "all-zero vectors")):
        rows = np.flatnonzero(bad)
        if len(rows):
            names = [str(labels[r]) if labels is not None else str(r) for r in rows[:_SHOW]]
            raise ValueError(
                "%s has %s in %d rows (e.g. %s)" % (where, what, len(rows), ", ".join(dict.fromkeys(names)))
            )
    if x.dtype == np.float32 and np.all(np.abs(sq - 1.0) < 2e-3):
        return x
    x = np.array(x, dtype=np.float32) if copy or x.dtype != np.float32 else x
    norms = np.sqrt(sq).astype(np.float32)
    for start in range(0, len(x), chunk):
        x[start : start + chunk] /= norms[start : start + chunk, None]
    return x


def pair_similarity(image_embeddings, text_embeddings, image_index, chunk_size=_CHUNK):
    """Cosine of each caption with its own image (unit rows assumed), without
    materialising the (P, d) gathered image matrix all at once."""
    image_index = np.asarray(image_index)
    out = np.empty(len(image_index), dtype=np.float32)
    for start in range(0, len(image_index), chunk_size):
        sl = slice(start, start + chunk_size)
        out[sl] = np.einsum("ij,ij->i", image_embeddings[image_index[sl]], text_embeddings[sl])
    return out
