"""Where embeddings come from.

Encoders are given as objects or as short spec strings:

* ``"open_clip:ViT-B-32:laion2b_s34b_b79k"``: an open_clip model and
  pretrained tag; ``"open_clip:ViT-B-32:/path/to/weights.pt"`` for a local
  checkpoint; ``"open_clip:ViT-B-32:random"`` for random weights
* ``"sentence-transformers"``: the bundled all-MiniLM-L6-v2 (captions only);
  ``"sentence-transformers:<name or dir>"`` for another model
* ``"pixels"`` / ``"pixels:32"`` / ``"pixels:32:rgb"``: resized raw pixels,
  grey by default (images only)

Precomputed embeddings are read from sample fields by :mod:`fiftyone_ncl.fo`.
"""
from fiftyone_ncl.encoders.base import Encoder
from fiftyone_ncl.encoders.images import LazyImages, check_media_exists, open_image
from fiftyone_ncl.encoders.openclip import (
    CaptionTruncationWarning,
    OpenClipEncoder,
    default_pretrained,
    load_open_clip,
)
from fiftyone_ncl.encoders.pixels import PixelEncoder, load_pixels
from fiftyone_ncl.encoders.text import SentenceTransformerEncoder


def get_encoder(spec, device="auto"):
    """Returns an :class:`Encoder` for an encoder object or spec string."""
    if spec is None or isinstance(spec, Encoder):
        return spec
    if not isinstance(spec, str):
        raise TypeError("an encoder must be an Encoder or a spec string, not %r" % type(spec))
    kind, _, rest = spec.partition(":")
    if kind == "open_clip":
        model, _, pretrained = rest.partition(":")
        if not model:
            raise ValueError("open_clip spec needs a model name, e.g. 'open_clip:ViT-B-32'")
        if pretrained == "random":
            pretrained = None
        elif not pretrained:
            pretrained = default_pretrained(model)
        return OpenClipEncoder(model, pretrained, device=device)
    if kind == "sentence-transformers":
        return SentenceTransformerEncoder(rest or None, device=device)
    if kind == "pixels":
        size, _, colour = rest.partition(":")
        if not (size or "28").isdigit() or colour not in ("", "gray", "rgb"):
            raise ValueError("pixel encoder spec is 'pixels[:<size>[:gray|rgb]]', got %r" % spec)
        return PixelEncoder(int(size or 28), grayscale=colour != "rgb")
    raise ValueError(
        "unknown encoder %r; expected 'open_clip:<model>[:<pretrained>]', "
        "'sentence-transformers[:<model>]' or 'pixels[:<size>[:rgb]]'" % spec
    )


__all__ = [
    "Encoder",
    "OpenClipEncoder",
    "SentenceTransformerEncoder",
    "PixelEncoder",
    "CaptionTruncationWarning",
    "LazyImages",
    "check_media_exists",
    "get_encoder",
    "load_open_clip",
    "load_pixels",
    "open_image",
]
