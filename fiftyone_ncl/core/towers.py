"""Towers under the heads: what turns a method's inputs into features.

* ``"frozen"``: identity over precomputed embeddings (heads only train);
* ``"cnn"``: a small CNN trained end to end on uint8 pixels (benchmarks);
* ``"open_clip"``: an open_clip model fine-tuned end to end, images loaded
  lazily from their files and captions as token ids (for users with a GPU;
  it runs on CPU too, slowly).

:func:`build_towers` is the one place every method gets its towers from, so
CRCL, DisNCL and the baselines train the same way in every mode.
"""
import numpy as np
import torch
from torch import nn

from fiftyone_ncl.core.nets import SmallCNN

TOWERS = ("frozen", "cnn", "open_clip")


class LazyImages:
    """Images read from files batch by batch (too many to hold as pixels).

    Behaves enough like an (N, C, H, W) array for the trainers: ``len``,
    ``ndim``, ``shape`` and :meth:`load`.

    Args:
        paths: image file paths
        transform: callable PIL image -> (C, H, W) float tensor (e.g. an
            open_clip preprocess)
        image_size: the side of the transformed images
    """

    ndim = 4

    def __init__(self, paths, transform, image_size=224):
        self.paths = list(paths)
        self.transform = transform
        self.shape = (len(self.paths), 3, int(image_size), int(image_size))

    def __len__(self):
        return len(self.paths)

    def load(self, indices):
        """(B, C, H, W) float tensor of the images at ``indices``."""
        from PIL import Image

        tensors = []
        for i in np.asarray(indices).ravel():
            path = self.paths[int(i)]
            try:
                with Image.open(path) as im:
                    tensors.append(self.transform(im.convert("RGB")))
            except FileNotFoundError:
                raise FileNotFoundError("image file not found: %s" % path) from None
        return torch.stack(tensors)


class _Branch(nn.Module):
    """One side of a shared backbone. The backbone is held without being
    registered here (its owner registers it once), so parameters and
    checkpoints do not list it twice."""

    def __init__(self, backbone, side):
        super().__init__()
        object.__setattr__(self, "_backbone", backbone)
        self.side = side

    def forward(self, x):
        if self.side == "image":
            return self._backbone.encode_image(x)
        return self._backbone.encode_text(x)


def open_clip_backbone(model_name, pretrained=None):
    """An open_clip model (random weights when ``pretrained`` is None), its
    image preprocess and tokenizer."""
    try:
        import open_clip
    except ImportError as e:
        raise ImportError("towers='open_clip' needs open-clip-torch: pip install 'fiftyone-ncl[clip]'") from e
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
    return model, preprocess, open_clip.get_tokenizer(model_name)


def build_towers(config, data, pretrained=True):
    """Image and caption towers for ``config.towers`` and ``data``.

    Args:
        config: a :class:`~fiftyone_ncl.core.training.TrainConfig`
        data: a :class:`~fiftyone_ncl.core.data.PairData` (or a stand-in
            with its shapes)
        pretrained (True): for open_clip, load ``config.clip_pretrained``;
            False builds random weights (a checkpoint overwrites them)

    Returns:
        ``(image_tower, image_dim, text_tower, text_dim, backbone)``;
        ``backbone`` is the module to register once (None unless open_clip)
    """
    towers = config.towers
    if towers == "frozen":
        if data.images.ndim != 2:
            raise ValueError(
                "towers='frozen' needs image embeddings (N, D); got inputs of shape %s" % (data.images.shape,)
            )
        return nn.Identity(), int(data.images.shape[1]), nn.Identity(), int(data.texts.shape[1]), None
    if towers == "cnn":
        if data.images.ndim != 4:
            raise ValueError(
                "towers='cnn' needs image pixels (N, C, H, W); got inputs of shape %s" % (data.images.shape,)
            )
        _, c, h, w = data.images.shape
        if h != w or h % 4:
            raise ValueError("towers='cnn' needs square images with a side divisible by 4")
        tower = SmallCNN(c, h)
        return tower, tower.out_dim, nn.Identity(), int(data.texts.shape[1]), None
    if towers == "open_clip":
        weights = config.clip_pretrained if pretrained else None
        backbone, _, _ = open_clip_backbone(config.clip_model, weights)
        dim = _embed_dim(backbone)
        return _Branch(backbone, "image"), dim, _Branch(backbone, "text"), dim, backbone
    raise ValueError("unknown towers=%r; expected one of %s" % (towers, ", ".join(TOWERS)))


def _embed_dim(model):
    visual = getattr(model, "visual", None)
    dim = getattr(visual, "output_dim", None)
    if dim is None:
        with torch.no_grad():
            dim = model.encode_text(torch.zeros(1, 77, dtype=torch.long)).shape[-1]
    return int(dim)
