"""open_clip image and text towers (one joint space)."""
import logging
import os
import warnings

import numpy as np

from fiftyone_ncl.core.training import Progress, resolve_device
from fiftyone_ncl.core.vectors import normalize_rows
from fiftyone_ncl.encoders.base import Encoder, batched
from fiftyone_ncl.encoders.images import LazyImages, open_image

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
_CHECKPOINT_EXTS = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def default_pretrained(model_name):
    """The pretrained tag used when none is named: LAION-2B for ViT-B-32,
    otherwise the first tag open_clip lists for the model."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if DEFAULT_PRETRAINED in tags or not tags:
        return DEFAULT_PRETRAINED
    return tags[0]


class CaptionTruncationWarning(UserWarning):
    """Captions longer than the text tower's context were cut."""


class OpenClipEncoder(Encoder):
    """Any open_clip architecture with named pretrained weights, a local
    checkpoint file, or random weights (``pretrained=None``, for tests).

    Args:
        model_name ("ViT-B-32"): an ``open_clip.list_models()`` name
        pretrained ("laion2b_s34b_b79k"): a pretrained tag of that model
            (downloaded by open_clip on first use), a path to a local
            checkpoint file, or None for random weights
        device ("auto"): ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``
        batch_size (64): default batch size
        num_workers (None): DataLoader worker processes that read, decode and
            preprocess image files while the model embeds earlier batches;
            None = up to 12 (fewer on small machines) on CUDA, 0 on CPU (the
            model then needs the cores itself)
    """

    embeds_images = True
    embeds_texts = True

    def __init__(self, model_name=DEFAULT_MODEL, pretrained=DEFAULT_PRETRAINED, device="auto", batch_size=64,
                 num_workers=None):
        self.model_name = model_name
        self.num_workers = num_workers
        self.last_num_workers = 0
        self.pretrained = pretrained
        self.device_name = device
        self.batch_size = batch_size
        weights = "random" if pretrained is None else (
            "file:" + os.path.basename(pretrained) if os.path.isfile(str(pretrained)) else pretrained
        )
        self.name = "open_clip:%s:%s" % (model_name, weights)
        self.space = self.name
        self._model = None
        self._preprocess = None
        self._tokenizer = None
        self.last_truncated = np.zeros(0, dtype=np.int64)

    def _load(self):
        if self._model is None:
            self._device = resolve_device(self.device_name)
            self._model, self._preprocess, self._tokenizer = load_open_clip(
                self.model_name, self.pretrained, self._device
            )

    @property
    def context_length(self):
        self._load()
        return int(getattr(self._tokenizer, "context_length", 77) or 77)

    def token_counts(self, texts):
        """Number of tokens each caption needs, start and end tokens included."""
        self._load()
        tok = self._tokenizer
        if hasattr(tok, "encoder") and hasattr(tok, "encode"):  # open_clip SimpleTokenizer
            return np.array([len(tok.encode(t)) + 2 for t in texts], dtype=np.int64)
        inner = getattr(tok, "tokenizer", None)  # HFTokenizer wraps a transformers tokenizer
        if inner is not None:
            return np.array([len(ids) for ids in inner(list(texts))["input_ids"]], dtype=np.int64)
        return np.zeros(len(texts), dtype=np.int64)

    def tokenize(self, texts):
        """(P, context) int64 token ids of the captions; warns (naming how many)
        when captions are longer than the context and get truncated."""
        self._load()
        texts = list(texts)
        counts = self.token_counts(texts)
        self.last_truncated = np.flatnonzero(counts > self.context_length)
        if len(self.last_truncated):
            warnings.warn(
                "%d of %d captions are longer than the %d-token context of %s and were "
                "truncated: only their beginning is scored (first: caption %d, %d tokens)"
                % (
                    len(self.last_truncated),
                    len(texts),
                    self.context_length,
                    self.model_name,
                    self.last_truncated[0],
                    counts[self.last_truncated[0]],
                ),
                CaptionTruncationWarning,
                stacklevel=3,
            )
        return self._tokenizer(texts)

    def embed_texts(self, texts, batch_size=None, progress=True):
        import torch

        tokens = self.tokenize(texts)
        out = []
        bs = batch_size or self.batch_size
        with torch.no_grad():
            for start, _ in batched(range(len(tokens)), bs, progress, "open_clip captions"):
                batch = tokens[start : start + bs].to(self._device)
                with _autocast(self._device):
                    out.append(self._model.encode_text(batch).float().cpu().numpy())
        if not out:
            return np.zeros((0, 0), np.float32)
        return normalize_rows(np.concatenate(out), "open_clip caption embeddings", copy=False)

    def embed_images(self, filepaths, batch_size=None, progress=True):
        chunks = list(self.iter_image_embeddings(filepaths, batch_size=batch_size, progress=progress))
        if not chunks:
            return np.zeros((0, 0), np.float32)
        return normalize_rows(np.concatenate(chunks), "open_clip image embeddings", labels=list(filepaths), copy=False)

    def iter_image_embeddings(self, filepaths, batch_size=None, progress=True, chunk_batches=16):
        """Embeddings of the image files in order, as float32 chunks of
        ``chunk_batches`` batches (not normalised), for a caller that writes
        them as they come.

        Files are read, decoded and preprocessed by DataLoader workers
        (:attr:`num_workers`) into pinned memory while the model embeds
        earlier batches under autocast; the results stay on the device and
        cross to the host a chunk at a time without stalling the GPU."""
        import torch

        self._load()
        filepaths = list(filepaths)
        bs = batch_size or self.batch_size
        cuda = self._device.type == "cuda"
        workers = self.num_workers
        if workers is None:
            workers = min(12, max(1, (os.cpu_count() or 2) - 1)) if cuda else 0
        self.last_num_workers = workers = int(workers) if len(filepaths) > bs else 0
        loader = torch.utils.data.DataLoader(
            _ImageFiles(filepaths, self._preprocess),
            batch_size=bs,
            shuffle=False,
            num_workers=workers,
            pin_memory=cuda,
            prefetch_factor=4 if workers else None,
        )
        pending, in_flight = [], None
        with torch.no_grad(), Progress((len(filepaths) + bs - 1) // bs, "open_clip images", progress) as bar:
            for x in loader:
                x = x.to(self._device, non_blocking=True)
                with _autocast(self._device):
                    pending.append(self._model.encode_image(x).float())
                bar.update()
                if len(pending) >= chunk_batches:
                    # start this chunk's copy, hand out the previous one (its
                    # copy has had a chunk's time to finish): the GPU never
                    # waits for the host
                    started, pending = _start_copy(pending), []
                    if in_flight is not None:
                        yield _finish_copy(in_flight)
                    in_flight = started
        if pending:
            started = _start_copy(pending)
            if in_flight is not None:
                yield _finish_copy(in_flight)
            in_flight = started
        if in_flight is not None:
            yield _finish_copy(in_flight)

    def training_inputs(self, filepaths, captions):
        """Inputs to fine-tune this model end to end: lazily loaded images,
        caption token ids, and the backbone (model name and starting
        weights, None for random) for :class:`~fiftyone_ncl.core.data.PairData`."""
        self._load()
        size = getattr(self._model.visual, "image_size", 224)
        size = size[0] if isinstance(size, (tuple, list)) else size
        images = LazyImages(filepaths, self._preprocess, image_size=size)
        tokens = self.tokenize(captions).numpy().astype(np.int64)
        state = None
        if self.pretrained is not None:
            state = {k: v.detach().cpu().clone() for k, v in self._model.state_dict().items()}
        return images, tokens, {"model": self.model_name, "state": state}


def load_open_clip(model_name, pretrained=None, device="cpu"):
    """The one place open_clip models are loaded: ``(model, preprocess,
    tokenizer)`` for an architecture name and a pretrained tag, a local
    checkpoint file, or None (random weights), with errors that say what to
    do offline."""
    try:
        import open_clip
    except ImportError as e:
        raise ImportError("the open_clip encoder needs open-clip-torch: pip install 'fiftyone-ncl[clip]'") from e
    if model_name not in open_clip.list_models():
        raise ValueError("unknown open_clip model %r; see open_clip.list_models()" % model_name)
    if pretrained is not None and not os.path.isfile(str(pretrained)):
        if os.sep in str(pretrained) or str(pretrained).endswith(_CHECKPOINT_EXTS):
            raise FileNotFoundError("open_clip checkpoint file not found: %s" % pretrained)
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise ValueError(
                "open_clip model %r has no pretrained tag %r; available: %s"
                % (model_name, pretrained, ", ".join(tags) or "none")
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
        except Exception as e:
            if pretrained is not None and not os.path.isfile(str(pretrained)):
                raise RuntimeError(
                    "could not load open_clip weights %s/%s (%s). They are downloaded "
                    "on first use; offline, pass a local checkpoint file as pretrained "
                    "or use precomputed embedding fields" % (model_name, pretrained, e)
                ) from e
            raise
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(model_name)


class _ImageFiles:
    """A map-style dataset of preprocessed images (DataLoader workers call
    it; module-level so it pickles)."""

    def __init__(self, paths, transform):
        self.paths = paths
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(open_image(self.paths[i]))


def _start_copy(tensors):
    """Concatenates device tensors and starts their copy to the host
    (asynchronous, into pinned memory, on CUDA); see :func:`_finish_copy`."""
    import torch

    out = torch.cat(tensors)
    if not out.is_cuda:
        return out, None
    host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
    host.copy_(out, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


def _finish_copy(started):
    """The float32 numpy array of a :func:`_start_copy` (waits for that copy only)."""
    host, event = started
    if event is not None:
        event.synchronize()
    return host.numpy()


def _autocast(device):
    import contextlib

    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
