"""Towers under the heads: what turns a method's inputs into features.

The inputs decide (:attr:`~fiftyone_ncl.core.data.PairData.towers`):

* ``"frozen"``: identity over precomputed embeddings (only heads train);
* ``"cnn"``: :class:`SmallCNN`, trained end to end on uint8 pixels;
* ``"open_clip"``: an open_clip model fine-tuned end to end from the
  starting weights the inputs carry (images loaded lazily, captions as
  token ids; for users with a GPU, it runs on CPU too, slowly).

:func:`build_towers` is the one place every method gets its towers from, so
CRCL, DisNCL and the baselines train the same way in every mode. Nothing here
reads files or downloads weights: the input stage does that.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from fiftyone_ncl.core.distributed import SyncedBatchNorm2d


class SmallCNN(nn.Module):
    """Two conv blocks (32 and 64 channels) and a linear layer: a tower for
    small images such as Fashion-MNIST, trained end to end."""

    def __init__(self, in_channels, image_size, out_dim=128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            SyncedBatchNorm2d(32),  # nn.BatchNorm2d, with global-batch statistics under torchrun
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            SyncedBatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.fc = nn.Linear(64 * side * side, out_dim)
        self.out_dim = out_dim

    def forward(self, x):
        return F.relu(self.fc(self.features(x).flatten(1)))


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


def open_clip_model(model_name, state=None):
    """An open_clip model of architecture ``model_name`` built from the
    library's code (random weights), with ``state`` (a state dict) loaded
    when given."""
    try:
        import open_clip
    except ImportError as e:
        raise ImportError("fine-tuning open_clip needs open-clip-torch: pip install 'fiftyone-ncl[clip]'") from e
    # built where torch builds by default (the meta device when a checkpoint's
    # shapes are checked without allocating)
    model = open_clip.create_model(model_name, pretrained=None, device=torch.get_default_device())
    if state is not None:
        model.load_state_dict(copy.deepcopy(state))
    return model


def build_towers(data):
    """Image and caption towers for ``data``'s inputs.

    Args:
        data: a :class:`~fiftyone_ncl.core.data.PairData` (or a stand-in
            from :meth:`~fiftyone_ncl.core.data.PairData.from_spec`)

    Returns:
        ``(image_tower, image_dim, text_tower, text_dim, backbone)``;
        ``backbone`` is the module to register once (None unless open_clip)
    """
    towers = data.towers
    if towers == "frozen":
        return nn.Identity(), int(data.images.shape[1]), nn.Identity(), int(data.texts.shape[1]), None
    if towers == "cnn":
        _, c, h, w = data.images.shape
        if h != w or h % 4:
            raise ValueError("the CNN image tower needs square images with a side divisible by 4, got %dx%d" % (h, w))
        tower = SmallCNN(c, h)
        return tower, tower.out_dim, nn.Identity(), int(data.texts.shape[1]), None
    backbone = open_clip_model(data.backbone["model"], data.backbone.get("state"))
    dim = _embed_dim(backbone)
    return _Branch(backbone, "image"), dim, _Branch(backbone, "text"), dim, backbone


def _embed_dim(model):
    visual = getattr(model, "visual", None)
    dim = getattr(visual, "output_dim", None)
    if dim is None:
        with torch.no_grad():
            dim = model.encode_text(torch.zeros(1, 77, dtype=torch.long)).shape[-1]
    return int(dim)
