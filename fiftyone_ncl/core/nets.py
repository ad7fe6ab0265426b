"""Heads and the dual encoder: the trainable parts every method shares.

Heads map tower features into the joint space; the towers themselves (frozen
identity, a small CNN, or an open_clip model) come from
:mod:`fiftyone_ncl.core.towers`.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fiftyone_ncl.core.towers import build_towers


class Standardize(nn.Module):
    """Per-dimension standardisation with statistics fixed from the data (buffers
    saved with checkpoints): what CCA sees, so heads initialised from a CCA
    solution start as exactly that linear map."""

    def __init__(self, dim):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def forward(self, x):
        return (x - self.mean) / self.scale


class ProjectionHead(nn.Module):
    """MLP with a linear skip: ``W x + MLP(x)``, optionally L2-normalised.

    The skip keeps a linear map of the input available from the first step, so
    heads over good frozen embeddings (CLIP) start near a linear alignment
    instead of from a random nonlinear one.

    Args:
        in_dim, hidden_dim, out_dim: sizes
        normalize (True): L2-normalise the output
        linear (False): the skip alone, no MLP (a linear head)
        standardize (False): per-dimension standardisation with fixed
            statistics instead of a LayerNorm (for heads initialised from CCA)
    """

    def __init__(self, in_dim, hidden_dim, out_dim, normalize=True, linear=False, standardize=False):
        super().__init__()
        self.norm = Standardize(in_dim) if standardize else nn.LayerNorm(in_dim)
        self.mlp = None if linear else nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
        )
        self.skip = nn.Linear(in_dim, out_dim, bias=False)
        self.normalize = normalize

    def forward(self, x):
        x = self.norm(x)
        z = self.skip(x) if self.mlp is None else self.skip(x) + self.mlp(x)
        return F.normalize(z, dim=-1) if self.normalize else z

    @torch.no_grad()
    def init_linear(self, mean, scale, projection):
        """Starts the head as the linear map ``standardize(x) @ projection``
        (a (in_dim, k) matrix, k <= out_dim; the other outputs start at 0 and
        the MLP's output layer at 0)."""
        if not isinstance(self.norm, Standardize):
            raise ValueError("a head initialised from a linear solution needs standardize=True")
        self.norm.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.norm.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        k = min(projection.shape[1], self.skip.weight.shape[0])
        self.skip.weight.zero_()
        self.skip.weight[:k] = torch.as_tensor(projection[:, :k].T, dtype=torch.float32)
        if self.mlp is not None:
            self.mlp[-1].weight.zero_()
            self.mlp[-1].bias.zero_()


class DualEncoder(nn.Module):
    """Image and caption towers + heads mapping both sides into one space.

    ``backbone`` is a model shared by both towers (open_clip), registered
    here once; None otherwise.
    """

    def __init__(self, image_tower, image_dim, text_dim, embed_dim, hidden_dim, text_tower=None, backbone=None,
                 **head_options):
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower if text_tower is not None else nn.Identity()
        self.backbone = backbone
        self.image_head = ProjectionHead(image_dim, hidden_dim, embed_dim, **head_options)
        self.text_head = ProjectionHead(text_dim, hidden_dim, embed_dim, **head_options)

    def encode_image(self, x):
        return self.image_head(self.image_tower(x))

    def encode_text(self, x):
        return self.text_head(self.text_tower(x))


def head_options(config, data):
    """How heads are built for ``config`` on ``data``: linear or MLP, and a
    fixed per-dimension standardisation instead of a LayerNorm when they
    start from a CCA solution (over frozen embeddings only)."""
    return {
        "linear": getattr(config, "head", "mlp") == "linear",
        "standardize": getattr(config, "init", "random") == "cca" and data.towers == "frozen",
    }


# refits of the CCA start on the pairs it calls clean (the cca method's default)
START_REFINE = 2


def initial_solution(config, data):
    """The linear CCA solution heads start from (``config.init == "cca"`` over
    frozen embeddings), or None: the ``cca`` method's own solution, fitted on
    all pairs of ``data`` and refitted twice on the pairs it calls clean
    (:func:`~fiftyone_ncl.core.cca.fit_refined_cca`).

    A CCA with a ridge and components chosen on held-out pairs is a strong
    baseline exactly where MLP heads trained on noisy pairs are weak (two
    encoders, modality-exclusive variance dominating): starting there, the
    methods refine it instead of searching from a random map. The refits
    matter on small sets: on 250 pairs of 384- and 512-d vectors one fit on
    all pairs ranked 0.67 where the refitted one ranked 0.99 (README, "The
    refitted start")."""
    if not head_options(config, data)["standardize"]:
        return None
    from fiftyone_ncl.core.cca import fit_refined_cca

    return fit_refined_cca(data.images, data.texts, data.image_index, refine=START_REFINE, seed=config.seed)[0]


def init_heads(image_head, text_head, solution):
    """Starts two heads as the CCA map of :func:`initial_solution` (each
    canonical component weighted by the square root of its correlation, as
    :func:`~fiftyone_ncl.core.cca.cca_similarity` scores)."""
    w = np.sqrt(np.clip(solution.correlations, 1e-6, None))
    image_head.init_linear(solution.image_mean, solution.image_scale, solution.image_proj * w)
    text_head.init_linear(solution.text_mean, solution.text_scale, solution.text_proj * w)


def build_dual_encoder(config, data, init=None):
    """A :class:`DualEncoder` sized for ``data`` under ``config`` (towers
    from :func:`fiftyone_ncl.core.towers.build_towers`), its heads started
    from ``init`` (an :func:`initial_solution`) when given."""
    image_tower, image_dim, text_tower, text_dim, backbone = build_towers(data)
    model = DualEncoder(image_tower, image_dim, text_dim, config.embed_dim, config.hidden_dim, text_tower, backbone,
                        **head_options(config, data))
    if init is not None:
        init_heads(model.image_head, model.text_head, init)
    return model
