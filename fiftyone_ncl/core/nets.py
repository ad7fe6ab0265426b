"""Towers and heads: the trainable parts of every method.

``towers="frozen"`` trains only heads over fixed embeddings (fast, any
backbone). ``towers="cnn"`` puts a small CNN under the image head and trains it
end to end on pixels (Fashion-MNIST-sized images, the benchmarks).
"""
import torch
import torch.nn.functional as F
from torch import nn


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


class SmallCNN(nn.Module):
    """Two conv blocks (32 and 64 channels) and a linear layer: a tower for
    small images such as Fashion-MNIST, trained end to end."""

    def __init__(self, in_channels, image_size, out_dim=128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.fc = nn.Linear(64 * side * side, out_dim)
        self.out_dim = out_dim

    def forward(self, x):
        return F.relu(self.fc(self.features(x).flatten(1)))


def build_image_tower(towers, images):
    """The image tower for a ``towers`` mode and input array; returns
    ``(module, output_dim)``."""
    if towers == "frozen":
        if images.ndim != 2:
            raise ValueError(
                "towers='frozen' needs image embeddings (N, D); got inputs of shape %s"
                % (images.shape,)
            )
        return nn.Identity(), int(images.shape[1])
    if towers == "cnn":
        if images.ndim != 4:
            raise ValueError(
                "towers='cnn' needs image pixels (N, C, H, W); got inputs of shape %s"
                % (images.shape,)
            )
        _, c, h, w = images.shape
        if h != w or h % 4:
            raise ValueError("towers='cnn' needs square images with a side divisible by 4")
        tower = SmallCNN(c, h)
        return tower, tower.out_dim
    raise ValueError("unknown towers=%r; expected 'frozen' or 'cnn'" % towers)


class DualEncoder(nn.Module):
    """Image tower + head and text head mapping both sides into one space."""

    def __init__(self, image_tower, image_dim, text_dim, embed_dim, hidden_dim):
        super().__init__()
        self.image_tower = image_tower
        self.image_head = ProjectionHead(image_dim, hidden_dim, embed_dim)
        self.text_head = ProjectionHead(text_dim, hidden_dim, embed_dim)

    def encode_image(self, x):
        return self.image_head(self.image_tower(x))

    def encode_text(self, x):
        return self.text_head(x)


def build_dual_encoder(config, data):
    """A :class:`DualEncoder` sized for ``data`` under ``config``."""
    tower, image_dim = build_image_tower(config.towers, data.images)
    return DualEncoder(tower, image_dim, data.text_dim, config.embed_dim, config.hidden_dim)
