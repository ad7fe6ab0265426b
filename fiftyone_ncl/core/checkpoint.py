"""Reading checkpoints safely: bounded header, declared shapes checked before
anything is allocated.

A checkpoint is a safetensors file: an 8-byte header length, a JSON header
(tensor names, dtypes, shapes, byte offsets, and our metadata), then the raw
tensor bytes. Loading never unpickles. Before a network is built, the header
is read with its size bounded and every declared tensor checked against the
file's real size; the network the metadata describes is then built on
torch's ``meta`` device (no memory) and its shapes compared with the declared
ones, so a crafted or foreign file fails with a message naming it instead of
allocating gigabytes or dumping torch's "Missing key(s)" list.
"""
import json
import os
import struct

import numpy as np

FORMAT = "fiftyone-ncl/1"
MAX_HEADER_BYTES = 16 * 1024 * 1024  # our headers are a few kB; safetensors allows 100 MB
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_REQUIRED_META = ("method", "config", "input_spec", "format")


def read_header(path):
    """The metadata of a fiftyone-ncl checkpoint, validated.

    Returns:
        the metadata dict (``method``, ``config``, ``input_spec``, ``format``)
        with the declared tensors under ``"tensors"`` (name -> shape tuple)

    Raises:
        FileNotFoundError: if ``path`` is not a file
        ValueError: naming the file, if it is not a well-formed checkpoint
    """
    path = str(path)
    if os.path.isdir(path):
        raise ValueError("model checkpoint %r is a directory, not a .safetensors file" % path)
    if not os.path.isfile(path):
        raise FileNotFoundError("model checkpoint not found: %s" % path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("%r is not a fiftyone-ncl checkpoint (too short)" % path)
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ValueError("%r is not a fiftyone-ncl checkpoint (header of %d bytes)" % (path, n))
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise ValueError("%r is not a fiftyone-ncl checkpoint (unreadable header)" % path) from None
    if not isinstance(header, dict):
        raise ValueError("%r is not a fiftyone-ncl checkpoint" % path)
    meta = header.pop("__metadata__", None) or {}
    if meta.get("format") != FORMAT or any(k not in meta for k in _REQUIRED_META):
        raise ValueError("%r is not a fiftyone-ncl checkpoint" % path)
    data_bytes = size - 8 - n
    tensors = {}
    for name, entry in header.items():
        try:
            shape = tuple(int(d) for d in entry["shape"])
            start, end = (int(o) for o in entry["data_offsets"])
            width = _DTYPE_BYTES[entry["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise ValueError("%r: tensor %r has a malformed entry" % (path, name)) from None
        if min(shape, default=1) < 0 or not 0 <= start <= end <= data_bytes or end - start != width * int(np.prod(shape)):
            raise ValueError("%r: tensor %r declares %s but the file does not hold it" % (path, name, shape))
        tensors[name] = shape
    for key in ("config", "input_spec"):
        try:
            json.loads(meta[key])
        except ValueError:
            raise ValueError("%r: metadata %r is not JSON" % (path, key)) from None
    meta = dict(meta)
    meta["tensors"] = tensors
    return meta


def check_shapes(path, declared, expected, extras=()):
    """Raises a ValueError naming ``path`` unless the declared tensors are
    exactly the ``expected`` ones (name -> shape), plus optional ``extras``."""
    missing = [k for k in expected if k not in declared]
    unexpected = [k for k in declared if k not in expected and k not in extras]
    wrong = [k for k in expected if k in declared and tuple(declared[k]) != tuple(expected[k])]
    if missing or unexpected or wrong:
        detail = []
        if wrong:
            k = wrong[0]
            detail.append("%d tensors have other shapes (e.g. %s: %s in the file, %s expected)"
                          % (len(wrong), k, tuple(declared[k]), tuple(expected[k])))
        if missing:
            detail.append("%d expected tensors are missing (e.g. %s)" % (len(missing), missing[0]))
        if unexpected:
            detail.append("%d unknown tensors (e.g. %s)" % (len(unexpected), unexpected[0]))
        raise ValueError("checkpoint %r does not match the network it describes: %s" % (str(path), "; ".join(detail)))


def read_tensors(path):
    """The tensors of a checkpoint whose header passed :func:`read_header`."""
    from safetensors.torch import load_file

    return load_file(str(path))
