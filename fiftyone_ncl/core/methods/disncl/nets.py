"""DisNCL's networks: MII / MEI heads, decoders, critics and CLUB estimators
for both modalities, on top of the shared towers.

The critics and the CLUB estimators of the two modalities have the same
shapes (they read MII and MEI features, whose sizes do not depend on the
modality), so each pair is stored as one *grouped* network whose parameters
carry a leading group axis (0 = image, 1 = text) and runs as one batched
matrix product per layer (:class:`GroupedCritic`, :class:`GroupedCLUB`):
half the kernels of two separate networks, the same arithmetic per group.
Checkpoints written with the separate ``critic_image`` / ``club_image`` ...
modules load into the grouped ones (:meth:`DisNCLNet._load_separate`).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from fiftyone_ncl.core.mi import mlp
from fiftyone_ncl.core.nets import ProjectionHead, head_options, init_heads
from fiftyone_ncl.core.towers import build_towers

IMAGE, TEXT = 0, 1


class GroupedLinear(nn.Module):
    """``G`` independent linear layers applied to a (G, B, in) stack with one
    batched product; each group initialised like ``nn.Linear``. The weight is
    stored (G, in, out) (the transpose of ``nn.Linear``'s)."""

    def __init__(self, groups, in_dim, out_dim, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(groups, 1, out_dim)) if bias else None
        bound = 1.0 / math.sqrt(in_dim) if in_dim else 0.0
        for g in range(groups):  # nn.Linear's init: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in))
            w = torch.empty(out_dim, in_dim)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            with torch.no_grad():
                self.weight[g].copy_(w.T)
                if self.bias is not None:
                    self.bias[g].uniform_(-bound, bound)

    def forward(self, x):
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias, x, self.weight)


class GroupedLayerNorm(nn.Module):
    """LayerNorm over the last axis with per-group affine parameters."""

    def __init__(self, groups, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(groups, 1, dim))
        self.bias = nn.Parameter(torch.zeros(groups, 1, dim))
        self.eps = eps

    def forward(self, x):
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:], eps=self.eps), self.weight)


class GroupedProjectionHead(nn.Module):
    """:class:`~fiftyone_ncl.core.nets.ProjectionHead` (without the final
    normalisation) for ``G`` groups at once: ``W x + MLP(LN(x))``."""

    def __init__(self, groups, in_dim, hidden_dim, out_dim):
        super().__init__()
        self.norm = GroupedLayerNorm(groups, in_dim)
        self.fc1 = GroupedLinear(groups, in_dim, hidden_dim)
        self.fc2 = GroupedLinear(groups, hidden_dim, out_dim)
        self.skip = GroupedLinear(groups, in_dim, out_dim, bias=False)

    def forward(self, x):
        x = self.norm(x)
        return self.skip(x) + self.fc2(F.gelu(self.fc1(x)))


class GroupedCritic(nn.Module):
    """The two adversarial critics as one grouped network: group g scores
    ``x[g]`` (an MEI feature) against ``y[g]`` (the other modality's MII)
    like :class:`~fiftyone_ncl.core.mi.SeparableCritic`:
    ``clip * tanh(<f(x_i), g(y_j)> / (sqrt(k) clip))``."""

    def __init__(self, groups, x_dim, y_dim, hidden_dim=128, out_dim=64, clip=10.0):
        super().__init__()
        self.f = GroupedProjectionHead(groups, x_dim, hidden_dim, out_dim)
        self.g = GroupedProjectionHead(groups, y_dim, hidden_dim, out_dim)
        self.scale = 1.0 / math.sqrt(out_dim)
        self.clip = float(clip)

    def forward(self, x, y):
        """(G, B, B) float32 logits; ``[g, i, j]`` = x[g, i] against y[g, j]."""
        raw = torch.bmm(self.f(x.float()), self.g(y.float()).transpose(1, 2))
        return self.clip * torch.tanh(raw * (self.scale / self.clip))


class GroupedCLUB(nn.Module):
    """The two CLUB estimators ``q(e | z)`` (one per modality) as one grouped
    network, each like :class:`~fiftyone_ncl.core.mi.CLUB`: an MLP
    (LayerNorm, Linear-GELU-Linear) reads out the mean and a tanh-squashed
    log-variance of a diagonal Gaussian."""

    def __init__(self, groups, x_dim, y_dim, hidden_dim=128):
        super().__init__()
        self.norm = GroupedLayerNorm(groups, x_dim)
        self.fc1 = GroupedLinear(groups, x_dim, hidden_dim)
        self.fc2 = GroupedLinear(groups, hidden_dim, 2 * y_dim)
        self.y_dim = y_dim

    def params(self, x):
        """(G, B, y) mean and log-variance of q given (G, B, x)."""
        out = self.fc2(F.gelu(self.fc1(self.norm(x.float()))))
        return out[..., : self.y_dim], torch.tanh(out[..., self.y_dim :])

    def learning_loss(self, x, y):
        """The negative log-likelihood of each group (mean over rows, summed
        over groups): the loss that fits q (use detached x, y)."""
        mu, logvar = self.params(x)
        nll = 0.5 * (((y.float() - mu) ** 2) * torch.exp(-logvar) + logvar).sum(-1)
        # + log(2 pi) / 2 per dimension, added once (it moves no gradient)
        return nll.mean(-1).sum() + mu.shape[0] * 0.5 * self.y_dim * math.log(2 * math.pi)

    def forward(self, x, y):
        """The CLUB estimate of each group, summed over groups:
        ``mean_i log q(y_i|x_i) - mean_i mean_j log q(y_j|x_i)``, the mean
        over j in closed form (see :meth:`~fiftyone_ncl.core.mi.CLUB.forward`)."""
        mu, logvar = self.params(x)
        y = y.float()
        inv_var = torch.exp(-logvar)
        y_mean = y.mean(1, keepdim=True)
        y2_mean = (y * y).mean(1, keepdim=True)
        # positive - negative = -1/2 sum_d inv_var ((y - mu)^2 - (E y^2 - 2 mu E y + mu^2))
        #                     = -1/2 sum_d inv_var (y^2 - 2 mu y - E y^2 + 2 mu E y)
        gap = (y * y - y2_mean) - 2.0 * mu * (y - y_mean)
        return (-0.5 * (gap * inv_var).sum(-1)).mean(-1).sum()


class MIIHead(nn.Module):
    """MII head: :class:`~fiftyone_ncl.core.nets.ProjectionHead` for the mean,
    optionally a linear log-variance (stochastic head). Returns the mean, the
    log-variance (None when deterministic) and the unit-norm feature ``z``
    (of a sample when ``sample``, else of the mean)."""

    def __init__(self, in_dim, hidden_dim, out_dim, stochastic=False, **head_options):
        super().__init__()
        self.mean = ProjectionHead(in_dim, hidden_dim, out_dim, normalize=False, **head_options)
        self.logvar = None
        if stochastic:
            self.logvar = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))
            nn.init.zeros_(self.logvar[1].weight)
            nn.init.constant_(self.logvar[1].bias, -4.0)

    def forward(self, h, sample=False):
        mu = self.mean(h)
        logvar = self.logvar(h).clamp(-12.0, 4.0) if self.logvar is not None else None
        u = mu
        if sample and logvar is not None:
            u = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return mu, logvar, F.normalize(u, dim=-1)


class MEIHead(nn.Module):
    """MEI head: :class:`~fiftyone_ncl.core.nets.ProjectionHead` followed by a
    non-affine LayerNorm, so the feature has a fixed scale (the CLUB bound and
    the critics cannot be fooled by shrinking it)."""

    def __init__(self, in_dim, hidden_dim, out_dim):
        super().__init__()
        self.head = ProjectionHead(in_dim, hidden_dim, out_dim, normalize=False)
        self.out_dim = out_dim

    def forward(self, h):
        return F.layer_norm(self.head(h), (self.out_dim,))


class DisNCLNet(nn.Module):
    """Towers, MII / MEI heads and decoders of both modalities, plus the
    critics and CLUB estimators (trained by their own optimisers; saved with
    the rest so a checkpoint holds the whole state)."""

    def __init__(self, image_tower, image_dim, text_dim, config, text_tower=None, backbone=None, head_options=None):
        super().__init__()
        c = config
        head_options = head_options or {}
        mei_dim = c.mei_dim or c.embed_dim
        self.image_tower = image_tower
        self.text_tower = text_tower if text_tower is not None else nn.Identity()
        self.backbone = backbone  # shared by both towers (open_clip), registered once
        # MEI and the decoders get a quarter of the MII heads' width: they
        # carry what one modality alone explains and only have to make the
        # reconstruction possible, and the full width made an epoch ~5x an
        # InfoNCE head's
        small = max(64, c.hidden_dim // 4)
        self.mii_image = MIIHead(image_dim, c.hidden_dim, c.embed_dim, c.stochastic, **head_options)
        self.mii_text = MIIHead(text_dim, c.hidden_dim, c.embed_dim, c.stochastic, **head_options)
        self.mei_image = MEIHead(image_dim, small, mei_dim)
        self.mei_text = MEIHead(text_dim, small, mei_dim)
        dec_hidden = small
        self.dec_image = mlp(c.embed_dim + mei_dim, dec_hidden, image_dim, norm=False)
        self.dec_text = mlp(c.embed_dim + mei_dim, dec_hidden, text_dim, norm=False)
        # critics: group IMAGE tries to match e_V (MEI of images) to z_T,
        # group TEXT e_T to z_V
        self.critics = GroupedCritic(2, mei_dim, c.embed_dim, c.critic_hidden, c.critic_dim, c.critic_clip)
        # q(e | z) within each modality (group IMAGE: q(e_V | z_V))
        self.clubs = GroupedCLUB(2, c.embed_dim, mei_dim, c.club_hidden)
        self._register_load_state_dict_pre_hook(self._load_separate)

    def encoder_modules(self):
        return [
            self.image_tower,
            self.text_tower,
            self.backbone if self.backbone is not None else nn.Identity(),
            self.mii_image,
            self.mii_text,
            self.mei_image,
            self.mei_text,
            self.dec_image,
            self.dec_text,
        ]

    def encoder_parameters(self):
        return [p for m in self.encoder_modules() for p in m.parameters()]

    def critic_parameters(self):
        return list(self.critics.parameters())

    def club_parameters(self):
        return list(self.clubs.parameters())

    # checkpoints of the separate critic_image / club_image ... modules
    _SEPARATE = {
        # grouped name: (separate name, is a Linear weight)
        "critics.f.norm.weight": ("critic_{}.f.norm.weight", False),
        "critics.f.norm.bias": ("critic_{}.f.norm.bias", False),
        "critics.f.fc1.weight": ("critic_{}.f.mlp.0.weight", True),
        "critics.f.fc1.bias": ("critic_{}.f.mlp.0.bias", False),
        "critics.f.fc2.weight": ("critic_{}.f.mlp.2.weight", True),
        "critics.f.fc2.bias": ("critic_{}.f.mlp.2.bias", False),
        "critics.f.skip.weight": ("critic_{}.f.skip.weight", True),
        "critics.g.norm.weight": ("critic_{}.g.norm.weight", False),
        "critics.g.norm.bias": ("critic_{}.g.norm.bias", False),
        "critics.g.fc1.weight": ("critic_{}.g.mlp.0.weight", True),
        "critics.g.fc1.bias": ("critic_{}.g.mlp.0.bias", False),
        "critics.g.fc2.weight": ("critic_{}.g.mlp.2.weight", True),
        "critics.g.fc2.bias": ("critic_{}.g.mlp.2.bias", False),
        "critics.g.skip.weight": ("critic_{}.g.skip.weight", True),
        "clubs.norm.weight": ("club_{}.net.0.weight", False),
        "clubs.norm.bias": ("club_{}.net.0.bias", False),
        "clubs.fc1.weight": ("club_{}.net.1.weight", True),
        "clubs.fc1.bias": ("club_{}.net.1.bias", False),
        "clubs.fc2.weight": ("club_{}.net.3.weight", True),
        "clubs.fc2.bias": ("club_{}.net.3.bias", False),
    }

    @classmethod
    def _load_separate(cls, state_dict, prefix, *args):
        """Load-state pre-hook: stacks the parameters of checkpoints that
        hold separate per-modality critics and CLUB networks into the grouped
        layout (Linear weights transposed to (in, out), vectors to (1, d))."""
        for grouped, (separate, linear) in cls._SEPARATE.items():
            names = [prefix + separate.format(side) for side in ("image", "text")]
            if not all(n in state_dict for n in names):
                continue
            parts = [state_dict.pop(n) for n in names]
            parts = [p.T if linear else p[None, :] for p in parts]
            state_dict[prefix + grouped] = torch.stack(parts)

    def side(self, x, modality, sample=False):
        """Everything one modality produces: ``h, mu, logvar, z, e``."""
        if modality == "image":
            h = self.image_tower(x)
            mu, logvar, z = self.mii_image(h, sample)
            e = self.mei_image(h)
        else:
            h = self.text_tower(x)
            mu, logvar, z = self.mii_text(h, sample)
            e = self.mei_text(h)
        return {"h": h, "mu": mu, "logvar": logvar, "z": z, "e": e}

    def reconstruct(self, z, e, modality):
        dec = self.dec_image if modality == "image" else self.dec_text
        return dec(torch.cat([z, e], dim=-1))

    def encode_image(self, x):
        return self.mii_image(self.image_tower(x))[2]

    def encode_text(self, x):
        return self.mii_text(self.text_tower(x))[2]

    def embed_image(self, x):
        """``[z, e]`` of images (eval mode: z from the mean)."""
        out = self.side(x, "image")
        return torch.cat([out["z"], out["e"]], dim=-1)

    def embed_text(self, x):
        out = self.side(x, "text")
        return torch.cat([out["z"], out["e"]], dim=-1)


def build_disncl_net(config, data, init=None):
    """A :class:`DisNCLNet` sized for ``data`` under ``config``, its MII heads
    started from ``init`` (:func:`~fiftyone_ncl.core.nets.initial_solution`)
    when given."""
    image_tower, image_dim, text_tower, text_dim, backbone = build_towers(data)
    net = DisNCLNet(image_tower, image_dim, text_dim, config, text_tower=text_tower, backbone=backbone,
                    head_options=head_options(config, data))
    if init is not None:
        init_heads(net.mii_image.mean, net.mii_text.mean, init)
    return net
