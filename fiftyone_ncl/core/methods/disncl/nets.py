"""DisNCL's networks: MII / MEI heads, decoders, critics and CLUB estimators
for both modalities, on top of the shared towers."""
import torch
import torch.nn.functional as F
from torch import nn

from fiftyone_ncl.core.mi import CLUB, SeparableCritic, mlp
from fiftyone_ncl.core.nets import ProjectionHead
from fiftyone_ncl.core.towers import build_towers


class MIIHead(nn.Module):
    """MII head: :class:`~fiftyone_ncl.core.nets.ProjectionHead` for the mean,
    optionally a linear log-variance (stochastic head). Returns the mean, the
    log-variance (None when deterministic) and the unit-norm feature ``z``
    (of a sample when ``sample``, else of the mean)."""

    def __init__(self, in_dim, hidden_dim, out_dim, stochastic=False):
        super().__init__()
        self.mean = ProjectionHead(in_dim, hidden_dim, out_dim, normalize=False)
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

    def __init__(self, image_tower, image_dim, text_dim, config, text_tower=None, backbone=None):
        super().__init__()
        c = config
        mei_dim = c.mei_dim or c.embed_dim
        self.image_tower = image_tower
        self.text_tower = text_tower if text_tower is not None else nn.Identity()
        self.backbone = backbone  # shared by both towers (open_clip), registered once
        # MEI and the decoders get a quarter of the MII heads' width: they
        # carry what one modality alone explains and only have to make the
        # reconstruction possible, and the full width made an epoch ~5x an
        # InfoNCE head's
        small = max(64, c.hidden_dim // 4)
        self.mii_image = MIIHead(image_dim, c.hidden_dim, c.embed_dim, c.stochastic)
        self.mii_text = MIIHead(text_dim, c.hidden_dim, c.embed_dim, c.stochastic)
        self.mei_image = MEIHead(image_dim, small, mei_dim)
        self.mei_text = MEIHead(text_dim, small, mei_dim)
        dec_hidden = small
        self.dec_image = mlp(c.embed_dim + mei_dim, dec_hidden, image_dim, norm=False)
        self.dec_text = mlp(c.embed_dim + mei_dim, dec_hidden, text_dim, norm=False)
        # critic_image tries to match e_V (MEI of images) to z_T; critic_text e_T to z_V
        self.critic_image = SeparableCritic(mei_dim, c.embed_dim, c.critic_hidden, c.critic_dim, c.critic_clip)
        self.critic_text = SeparableCritic(mei_dim, c.embed_dim, c.critic_hidden, c.critic_dim, c.critic_clip)
        # q(e | z) within each modality
        self.club_image = CLUB(c.embed_dim, mei_dim, c.club_hidden)
        self.club_text = CLUB(c.embed_dim, mei_dim, c.club_hidden)

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
        return list(self.critic_image.parameters()) + list(self.critic_text.parameters())

    def club_parameters(self):
        return list(self.club_image.parameters()) + list(self.club_text.parameters())

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


def build_disncl_net(config, data):
    """A :class:`DisNCLNet` sized for ``data`` under ``config``."""
    image_tower, image_dim, text_tower, text_dim, backbone = build_towers(data)
    return DisNCLNet(image_tower, image_dim, text_dim, config, text_tower=text_tower, backbone=backbone)
