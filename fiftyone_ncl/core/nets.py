"""Heads and the dual encoder: the trainable parts every method shares.

Heads map tower features into the joint space; the towers themselves (frozen
identity, a small CNN, or an open_clip model) come from
:mod:`fiftyone_ncl.core.towers`.
"""
import torch.nn.functional as F
from torch import nn

from fiftyone_ncl.core.towers import build_towers


class ProjectionHead(nn.Module):
    """MLP with a linear skip: ``W x + MLP(x)``, optionally L2-normalised.

    The skip keeps a linear map of the input available from the first step, so
    heads over good frozen embeddings (CLIP) start near a linear alignment
    instead of from a random nonlinear one.
    """

    def __init__(self, in_dim, hidden_dim, out_dim, normalize=True):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
        )
        self.skip = nn.Linear(in_dim, out_dim, bias=False)
        self.normalize = normalize

    def forward(self, x):
        x = self.norm(x)
        z = self.skip(x) + self.mlp(x)
        return F.normalize(z, dim=-1) if self.normalize else z


class DualEncoder(nn.Module):
    """Image and caption towers + heads mapping both sides into one space.

    ``backbone`` is a model shared by both towers (open_clip), registered
    here once; None otherwise.
    """

    def __init__(self, image_tower, image_dim, text_dim, embed_dim, hidden_dim, text_tower=None, backbone=None):
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower if text_tower is not None else nn.Identity()
        self.backbone = backbone
        self.image_head = ProjectionHead(image_dim, hidden_dim, embed_dim)
        self.text_head = ProjectionHead(text_dim, hidden_dim, embed_dim)

    def encode_image(self, x):
        return self.image_head(self.image_tower(x))

    def encode_text(self, x):
        return self.text_head(self.text_tower(x))


def build_dual_encoder(config, data):
    """A :class:`DualEncoder` sized for ``data`` under ``config`` (towers
    from :func:`fiftyone_ncl.core.towers.build_towers`)."""
    image_tower, image_dim, text_tower, text_dim, backbone = build_towers(data)
    return DualEncoder(image_tower, image_dim, text_dim, config.embed_dim, config.hidden_dim, text_tower, backbone)
