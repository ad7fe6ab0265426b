"""Reading vector fields fast and lean.

FiftyOne stores a VectorField / ArrayField value as zlib-compressed ``.npy``
bytes. ``values(field)`` deserialises each one through ``np.load``; here the
raw bytes are fetched (``values(field, _raw=True)``), decompressed, and read
with ``np.frombuffer`` after parsing the ``.npy`` header once per layout,
straight into one preallocated float32 matrix, dropping each raw value as
soon as it is copied. On a million 512-d vectors this is several times
faster and keeps the peak memory near one copy of the data.
"""
import io
import zlib

import numpy as np

import fiftyone.core.utils as fou


class NpyDecoder:
    """Decodes FiftyOne's serialised arrays; caches the ``.npy`` header of
    the last layout seen so that equal layouts skip ``np.load``."""

    def __init__(self):
        self._header = None
        self._dtype = None
        self._shape = None

    def __call__(self, raw):
        if raw is None:
            return None
        if isinstance(raw, np.ndarray):
            return raw
        if isinstance(raw, (list, tuple)):
            return np.asarray(raw, dtype=np.float32)
        buf = zlib.decompress(raw)
        header = self._header
        if header is not None and buf[: len(header)] == header:
            return np.frombuffer(buf, dtype=self._dtype, offset=len(header)).reshape(self._shape)
        f = io.BytesIO(buf)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran or dtype.hasobject:
            return fou.deserialize_numpy_array(raw)
        self._header = buf[: f.tell()]
        self._dtype, self._shape = dtype, shape
        return np.frombuffer(buf, dtype=dtype, offset=f.tell()).reshape(shape)


def read_rows(samples, field, counts=None, chunk_size=100_000):
    """Reads a vector field into one float32 matrix.

    Args:
        samples: a collection
        field: a VectorField (one vector per sample) or, with ``counts``, an
            ArrayField / list of vectors holding ``counts[i]`` rows for sample i
        counts (None): rows expected per sample (per-caption embeddings)
        chunk_size (100000): samples fetched per query, so the raw bytes of
            only one chunk are held at a time next to the matrix

    Returns:
        ``(matrix, missing, dims)``: the (n_rows, d) float32 matrix (rows of
        samples in ``missing`` are left uninitialised), the sample rows with
        no value (or, with ``counts``, a different number of rows), and the
        set of vector dimensions seen (more than one means the field mixes
        dimensions)
    """
    n = len(samples) if counts is None else len(counts)
    if counts is None:
        counts = np.ones(n, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    decode = NpyDecoder()
    out = None
    missing, dims = [], set()
    for first in range(0, n, chunk_size):
        chunk = samples if n <= chunk_size else samples.skip(first).limit(chunk_size)
        raw = chunk.values(field, _raw=True)
        for j in range(len(raw)):
            i = first + j
            value, raw[j] = raw[j], None  # release the raw bytes as we go
            if value is None:
                missing.append(i)
                continue
            mat = decode(value)
            mat = mat.reshape(1, -1) if mat.ndim == 1 else mat
            dims.add(int(mat.shape[-1]))
            if len(dims) > 1:
                continue
            if len(mat) != counts[i]:
                missing.append(i)
                continue
            if out is None:
                out = np.empty((int(counts.sum()), mat.shape[-1]), dtype=np.float32)
            out[starts[i] : starts[i] + counts[i]] = mat
    return out, missing, dims
