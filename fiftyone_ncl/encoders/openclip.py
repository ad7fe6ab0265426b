"""open_clip image and text towers (one joint space)."""
import logging
import os
import warnings

import numpy as np

from fiftyone_ncl.encoders.base import Encoder, batched, normalize_rows

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
    """

    embeds_images = True
    embeds_texts = True

    def __init__(self, model_name=DEFAULT_MODEL, pretrained=DEFAULT_PRETRAINED, device="auto", batch_size=64):
        self.model_name = model_name
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
        if self._model is not None:
            return
        try:
            import open_clip
        except ImportError as e:
            raise ImportError(
                "the open_clip encoder needs open-clip-torch: pip install 'fiftyone-ncl[clip]'"
            ) from e
        from fiftyone_ncl.core.training import resolve_device

        if self.model_name not in open_clip.list_models():
            raise ValueError(
                "unknown open_clip model %r; see open_clip.list_models()" % self.model_name
            )
        pretrained = self.pretrained
        if pretrained is not None and not os.path.isfile(str(pretrained)):
            if os.sep in str(pretrained) or str(pretrained).endswith(_CHECKPOINT_EXTS):
                raise FileNotFoundError("open_clip checkpoint file not found: %s" % pretrained)
            tags = open_clip.list_pretrained_tags_by_model(self.model_name)
            if pretrained not in tags:
                raise ValueError(
                    "open_clip model %r has no pretrained tag %r; available: %s"
                    % (self.model_name, pretrained, ", ".join(tags) or "none")
                )
        self._device = resolve_device(self.device_name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.model_name, pretrained=pretrained, device=self._device
                )
            except Exception as e:
                if pretrained is not None and not os.path.isfile(str(pretrained)):
                    raise RuntimeError(
                        "could not load open_clip weights %s/%s (%s). They are downloaded "
                        "on first use; offline, pass a local checkpoint file as pretrained "
                        "or use precomputed embedding fields"
                        % (self.model_name, pretrained, e)
                    ) from e
                raise
        model.eval()
        self._model = model
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(self.model_name)

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

    def embed_texts(self, texts, batch_size=None, progress=True):
        import torch

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
                stacklevel=2,
            )
        out = []
        bs = batch_size or self.batch_size
        with torch.no_grad():
            for _, batch in batched(texts, bs, progress, "open_clip captions"):
                tokens = self._tokenizer(batch).to(self._device)
                with _autocast(self._device):
                    out.append(self._model.encode_text(tokens).float().cpu().numpy())
        return normalize_rows(np.concatenate(out)) if out else np.zeros((0, 0), np.float32)

    def embed_images(self, filepaths, batch_size=None, progress=True):
        import torch
        from PIL import Image

        self._load()
        out = []
        bs = batch_size or self.batch_size
        with torch.no_grad():
            for _, batch in batched(list(filepaths), bs, progress, "open_clip images"):
                tensors = []
                for path in batch:
                    try:
                        with Image.open(path) as im:
                            tensors.append(self._preprocess(im.convert("RGB")))
                    except FileNotFoundError:
                        raise FileNotFoundError("image file not found: %s" % path) from None
                    except Exception as e:
                        raise ValueError("cannot read image file %s: %s" % (path, e)) from e
                x = torch.stack(tensors).to(self._device)
                with _autocast(self._device):
                    out.append(self._model.encode_image(x).float().cpu().numpy())
        return normalize_rows(np.concatenate(out)) if out else np.zeros((0, 0), np.float32)


def _autocast(device):
    import contextlib

    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
