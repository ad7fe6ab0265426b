"""DisNCL: Disentangled Noisy Correspondence Learning (Dang et al., TIP 2025).

Our re-implementation of the objective in ``reference/disncl-method.md``
(sections 4.4, 5.3 and 6.2; the paper body is not public, so the concrete
estimators are the reference's recommended ones).

Each modality's tower output ``h`` is split by two heads into a
modality-invariant feature (MII, ``z``, unit norm, optionally stochastic)
and a modality-exclusive feature (MEI, ``e``, standardised by a non-affine
LayerNorm); decoders map ``[z, e]`` back to ``h``. Per batch of B pairs with
clean confidences ``w`` (fixed for the epoch, no gradient)::

    L = L_match + lambda_dis * (gamma * L_S + (1 - gamma) * L_X) + lambda_reg * L_reg

    L_match  soft-target in-batch cross-entropy on <z_V, z_T> / tau, both
             directions (:mod:`fiftyone_ncl.core.soft_targets`)
    L_S      w-weighted symmetric InfoNCE on <z_V, z_T> / tau_mi
             + beta_s * symmetric KL between the MII posteriors of the two
             sides, over pairs with w_i > 0.5: learned Gaussians with
             ``stochastic=True``, else N(z, kl_sigma^2 I), i.e.
             ||z_V - z_T||^2 / kl_sigma^2
    L_X      reconstruction ||r([z, e]) - LN(h)||^2 of both sides
             + beta_x * adversarial critics c(e_V, z_T), c(e_T, z_V): InfoNCE
             critics with their own optimiser and w-weighted positives; the
             encoders get the reversed gradient (coefficient ramped 0 -> 1)
    L_reg    CLUB(z_V; e_V) + CLUB(z_T; e_T), q refitted every step on
             detached features with its own optimiser

The clean confidence ``w`` comes from the model of the previous epoch: once
per epoch after warm-up every pair is scored in eval mode against fixed
seeded reference negatives (:func:`~fiftyone_ncl.core.reference.reference_scores`)
and a two-component GMM on the per-pair loss gives the posterior of the
low-loss component. During warm-up ``w = 1``; the parts that rely on ``w``
(soft targets, the KL on confident pairs) ramp in over ``ramp_epochs`` after
it. The exported confidence is the same computation with the final model.
"""
import copy
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fiftyone_ncl.core.alignment import DeviceInputs
from fiftyone_ncl.core.calibration import clean_probability
from fiftyone_ncl.core.data import PairScores
from fiftyone_ncl.core.losses import infonce, similarity_logits
from fiftyone_ncl.core.methods import CorrespondenceMethod, pair_similarity, register_method
from fiftyone_ncl.core.mi import (
    CLUB,
    mlp,
    SeparableCritic,
    critic_infonce,
    estimate_club_mi,
    estimate_infonce_mi,
    grad_reverse,
)
from fiftyone_ncl.core.nets import ProjectionHead
from fiftyone_ncl.core.towers import build_towers
from fiftyone_ncl.core.reference import reference_scores
from fiftyone_ncl.core.soft_targets import hard_targets, soft_cross_entropy, soft_targets
from fiftyone_ncl.core.training import (
    Progress,
    Stepper,
    TrainConfig,
    adam,
    amp_dtype,
    autocast,
    embed_rows,
    epoch_batches,
    make_optimizer,
    resolve_device,
    same_image_mask,
    seed_everything,
)

logger = logging.getLogger(__name__)


@dataclass
class DisNCLConfig(TrainConfig):
    """Options of DisNCL (on top of :class:`~fiftyone_ncl.core.training.TrainConfig`,
    whose ``embed_dim`` is the MII dimension and ``tau`` the temperature of
    L_match and of the reference-set split).

    Attributes:
        mei_dim: dimension of the MEI features (None: ``embed_dim``). Spare
            dimensions in either space keep traces of the input that a
            linear probe can read even at a tiny scale, so keep both near
            what the data needs
        stochastic: Gaussian MII heads (mean, log-variance) sampled in
            training, with the symmetric KL term of L_S; scoring uses the mean
        kl_sigma: deterministic heads: the MII posteriors are taken as
            ``N(z, kl_sigma^2 I)`` so the symmetric KL of L_S is
            ``||z_V - z_T||^2 / kl_sigma^2`` (an alignment term on confident pairs)
        warmup_epochs: epochs without filtering (w = 1), soft targets or KL term
        gamma: L_Dis = gamma * L_S + (1 - gamma) * L_X
        lambda_dis: weight of L_Dis
        lambda_reg: weight of L_reg (CLUB between MII and MEI per modality)
        beta_s: weight of the symmetric KL inside L_S
        beta_x: weight of the adversarial critic term inside L_X
        tau_mi: temperature of L_S's InfoNCE (None: ``tau``)
        use_soft_targets: False replaces the soft targets by hard ones with
            w-weighted rows (an ablation: plain loss-GMM filtering)
        soft_k: neighbours per row of the soft targets (plus the diagonal and
            same-image entries)
        soft_tau: temperature of the soft-target prior
        soft_a0: soft mass of a fully clean pair
        ramp_epochs: epochs over which the confidence-dependent parts (the
            soft part of the targets and the KL term of L_S) ramp in, step by
            step, after warm-up
        soft_min_mass: rows whose candidates' total w is below this are down-weighted
        teacher: ``"epoch"`` (the previous epoch's eval-mode MII features, the
            ones the split is computed from) or ``"ema"`` (an EMA copy of the
            MII encoders) for the soft-target affinities
        ema_momentum: momentum of the EMA teacher
        grl_ramp_epochs: epochs over which the gradient-reversal coefficient
            ramps from 0 to 1
        critic_steps: critic updates per training step (on detached features)
        critic_lr: learning rate of the critics' own optimiser
        critic_hidden, critic_dim, critic_clip: size and logit bound of the critics
        club_steps: CLUB q updates per training step (on detached features)
        club_lr: learning rate of CLUB's own optimiser
        club_hidden: hidden width of CLUB's q
        ref_sets: reference negative sets averaged for the per-pair loss
        min_noisy_fraction: NCR's safeguard, for the training split only: when
            fewer pairs than this fraction are judged noisy, the highest-loss
            ones get w = 0 (the exported confidence is not changed)
        mi_diagnostics: compute MI diagnostics when scoring
        mi_samples: pairs (judged clean) used by the diagnostics
        mi_steps: optimisation steps of each diagnostic estimator
    """

    epochs: int = 15
    mei_dim: int = None
    stochastic: bool = False
    kl_sigma: float = 0.03
    warmup_epochs: int = 3
    gamma: float = 0.5
    lambda_dis: float = 0.1
    lambda_reg: float = 0.01
    beta_s: float = 0.1
    beta_x: float = 0.1
    tau_mi: float = None
    use_soft_targets: bool = True
    soft_k: int = 5
    soft_tau: float = 0.05
    soft_a0: float = 0.1
    ramp_epochs: int = 2
    soft_min_mass: float = 0.5
    teacher: str = "epoch"
    ema_momentum: float = 0.999
    grl_ramp_epochs: int = 3
    critic_steps: int = 1
    critic_lr: float = 1e-3
    critic_hidden: int = 256
    critic_dim: int = 64
    critic_clip: float = 10.0
    club_steps: int = 5
    club_lr: float = 3e-3
    club_hidden: int = 256
    ref_sets: int = 4
    min_noisy_fraction: float = 0.01
    mi_diagnostics: bool = True
    mi_samples: int = 2048
    mi_steps: int = 300


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


def build_disncl_net(config, data, pretrained=True):
    """A :class:`DisNCLNet` sized for ``data`` under ``config``."""
    image_tower, image_dim, text_tower, text_dim, backbone = build_towers(config, data, pretrained=pretrained)
    return DisNCLNet(image_tower, image_dim, text_dim, config, text_tower=text_tower, backbone=backbone)


def symmetric_gaussian_kl(mu_a, logvar_a, mu_b, logvar_b):
    """(B,) ``KL(a||b) + KL(b||a)`` of diagonal Gaussians, averaged over dims."""
    mu_a, mu_b = mu_a.float(), mu_b.float()
    logvar_a, logvar_b = logvar_a.float(), logvar_b.float()
    var_a, var_b = logvar_a.exp(), logvar_b.exp()
    diff2 = (mu_a - mu_b) ** 2
    kl_ab = 0.5 * (logvar_b - logvar_a + (var_a + diff2) / var_b - 1.0)
    kl_ba = 0.5 * (logvar_a - logvar_b + (var_b + diff2) / var_a - 1.0)
    return (kl_ab + kl_ba).mean(-1)


def fixed_variance_kl(z_a, z_b, sigma):
    """(B,) symmetric KL between ``N(z_a, sigma^2 I)`` and ``N(z_b, sigma^2 I)``:
    ``||z_a - z_b||^2 / sigma^2`` (the deterministic heads' version of the
    KL between MII posteriors)."""
    return ((z_a.float() - z_b.float()) ** 2).sum(-1) / float(sigma) ** 2


class _Frozen:
    """Context that turns off ``requires_grad`` of some parameters (their
    gradients would only be discarded: they have their own optimisers)."""

    def __init__(self, params):
        self.params = [p for p in params if p.requires_grad]

    def __enter__(self):
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *args):
        for p in self.params:
            p.requires_grad_(True)


@register_method
class DisNCLMethod(CorrespondenceMethod):
    """DisNCL: MII/MEI disentanglement, soft many-to-many targets and a
    clean/noisy split in MII space."""

    name = "disncl"
    config_cls = DisNCLConfig
    trains = True
    network_attr = "net"
    form_options = ("epochs", "warmup_epochs", "gamma", "device", "seed")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.config
        if c.teacher not in ("epoch", "ema"):
            raise ValueError("teacher must be 'epoch' or 'ema', got %r" % c.teacher)
        if not 0.0 <= c.gamma <= 1.0:
            raise ValueError("gamma must be in [0, 1], got %r" % c.gamma)
        if c.warmup_epochs < 0:
            raise ValueError("warmup_epochs must be >= 0")
        self.net = None
        self._spec = None

    # training -------------------------------------------------------------

    @property
    def tau_mi(self):
        return self.config.tau if self.config.tau_mi is None else self.config.tau_mi

    def fit(self, data, progress=True):
        c = self.config
        generator = seed_everything(c.seed)
        device = resolve_device(c.device)
        dtype = amp_dtype(device, c.amp)
        self.net = build_disncl_net(c, data).to(device)
        self._spec = data.spec()
        net = self.net
        net.train()
        inputs = DeviceInputs(data, device)

        enc_params = net.encoder_parameters()
        stepper = Stepper(make_optimizer(enc_params, c), enc_params, c.grad_clip, dtype)
        critic_opt = adam(net.critic_parameters(), c.critic_lr)
        club_opt = adam(net.club_parameters(), c.club_lr)
        ema = None
        if c.teacher == "ema":
            ema = copy.deepcopy(net).eval()
            for p in ema.parameters():
                p.requires_grad_(False)

        n_pairs = data.n_pairs
        n_batches = max(1, int(np.ceil(n_pairs / c.batch_size)))
        grl_steps = max(1, c.grl_ramp_epochs * n_batches)
        warm_steps = c.warmup_epochs * n_batches
        ramp_steps = max(1, c.ramp_epochs * n_batches)
        w_train = torch.ones(n_pairs, device=device)
        teacher_img = teacher_txt = None
        self.history = []
        step = 0
        frac_clean = 1.0
        with Progress(c.epochs * n_batches, "disncl", progress) as bar:
            for epoch in range(c.epochs):
                record = {"epoch": epoch}
                filtering = epoch >= c.warmup_epochs
                if filtering:
                    img, txt, _, _ = self._embed_all(inputs)
                    w, loss_ref, fit = self._reference_confidence(img, txt, data.image_index)
                    w_np = self._training_weights(w, loss_ref)
                    w_train = torch.as_tensor(w_np, dtype=torch.float32, device=device)
                    frac_clean = float((w_np > 0.5).mean())
                    record["fraction_clean"] = frac_clean
                    record["mean_w"] = float(w_np.mean())
                    record["calibration"] = fit.to_dict() if fit is not None else None
                    if c.teacher == "epoch":
                        teacher_img = torch.as_tensor(img, device=device)
                        teacher_txt = torch.as_tensor(txt, device=device)
                else:
                    record["fraction_clean"] = 1.0

                sums = {}
                n_done = 0
                for batch in epoch_batches(n_pairs, c.batch_size, generator):
                    grl_coef = min(1.0, step / grl_steps)
                    ramp = 0.0
                    if filtering:
                        ramp = min(1.0, (step - warm_steps + 1) / ramp_steps)
                    terms = self._train_step(
                        net, inputs, batch, w_train, ramp, grl_coef, teacher_img,
                        teacher_txt, ema, stepper, critic_opt, club_opt, device, dtype,
                    )
                    if ema is not None:
                        self._update_ema(ema, net, c.ema_momentum)
                    step += 1
                    n_done += 1
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + v
                    bar.update(epoch=epoch, loss=terms["loss"], clean=frac_clean)
                record.update({k: v / max(1, n_done) for k, v in sums.items()})
                record["grl_coef"] = min(1.0, step / grl_steps)
                record["ramp"] = ramp if filtering else 0.0
                self.history.append(record)
        net.eval()
        self.fitted = True
        return self

    def _train_step(
        self, net, inputs, batch, w_train, ramp, grl_coef, teacher_img, teacher_txt,
        ema, stepper, critic_opt, club_opt, device, dtype,
    ):
        c = self.config
        x_img, x_txt, rows = inputs.batch(batch)
        bidx = torch.as_tensor(batch, device=device)
        bw = w_train[bidx]
        same = same_image_mask(rows)
        with autocast(device, dtype):
            ov = net.side(x_img, "image", sample=c.stochastic)
            ot = net.side(x_txt, "text", sample=c.stochastic)
            rec_v = net.reconstruct(ov["z"], ov["e"], "image").float()
            rec_t = net.reconstruct(ot["z"], ot["e"], "text").float()
        z_v, z_t = ov["z"].float(), ot["z"].float()
        e_v, e_t = ov["e"].float(), ot["e"].float()

        # inner steps of the critics and of CLUB's q, on detached features
        zv_d, zt_d, ev_d, et_d = z_v.detach(), z_t.detach(), e_v.detach(), e_t.detach()
        critic_fit = 0.0
        for _ in range(c.critic_steps):
            lc = critic_infonce(net.critic_image(ev_d, zt_d), same, bw) + critic_infonce(
                net.critic_text(et_d, zv_d), same, bw
            )
            critic_opt.zero_grad(set_to_none=True)
            lc.backward()
            critic_opt.step()
            critic_fit = lc.item()
        club_fit = 0.0
        for _ in range(c.club_steps):
            lq = net.club_image.learning_loss(zv_d, ev_d) + net.club_text.learning_loss(zt_d, et_d)
            club_opt.zero_grad(set_to_none=True)
            lq.backward()
            club_opt.step()
            club_fit = lq.item()

        with _Frozen(net.critic_parameters() + net.club_parameters()):
            # L_match: soft many-to-many targets (hard targets before they ramp in)
            logits = similarity_logits(z_v, z_t, c.tau)
            if ramp > 0 and c.use_soft_targets:
                if ema is not None:
                    with torch.no_grad(), autocast(device, dtype):
                        t_img = ema.encode_image(x_img).float()
                        t_txt = ema.encode_text(x_txt).float()
                else:
                    t_img, t_txt = teacher_img[rows], teacher_txt[bidx]
                kw = dict(k=c.soft_k, tau_s=c.soft_tau, a0=c.soft_a0, ramp=ramp, min_mass=c.soft_min_mass)
                y_vt, rw_vt, _ = soft_targets(t_img, bw, same, same_image_in_prior=True, **kw)
                y_tv, rw_tv, _ = soft_targets(t_txt, bw, same, same_image_in_prior=False, **kw)
                l_match = 0.5 * (
                    soft_cross_entropy(logits, y_vt, rw_vt) + soft_cross_entropy(logits.T, y_tv, rw_tv)
                )
            else:
                y = hard_targets(same)
                rw = bw if (ramp > 0 and not c.use_soft_targets) else None
                l_match = 0.5 * (soft_cross_entropy(logits, y, rw) + soft_cross_entropy(logits.T, y, rw))

            # L_S: confidence-weighted InfoNCE (+ KL between the MII posteriors)
            l_nce = infonce(z_v, z_t, self.tau_mi, positives=same, weights=bw)
            confident = (bw > 0.5).float()
            if c.stochastic:
                kl = symmetric_gaussian_kl(ov["mu"], ov["logvar"], ot["mu"], ot["logvar"])
            else:
                kl = fixed_variance_kl(z_v, z_t, c.kl_sigma)
            l_kl = (confident * kl).sum() / confident.sum().clamp_min(1.0)
            l_s = l_nce + ramp * c.beta_s * l_kl

            # L_X: reconstruction + adversarial critics through gradient reversal
            tgt_v = F.layer_norm(ov["h"].float(), (rec_v.shape[-1],)).detach()
            tgt_t = F.layer_norm(ot["h"].float(), (rec_t.shape[-1],)).detach()
            l_rec = F.mse_loss(rec_v, tgt_v) + F.mse_loss(rec_t, tgt_t)
            l_adv = critic_infonce(
                net.critic_image(grad_reverse(e_v, grl_coef), z_t.detach()), same, bw
            ) + critic_infonce(net.critic_text(grad_reverse(e_t, grl_coef), z_v.detach()), same, bw)
            l_x = l_rec + c.beta_x * l_adv

            # L_reg: CLUB upper bound on I(MII; MEI) within each modality
            l_reg = net.club_image(z_v, e_v) + net.club_text(z_t, e_t)

            loss = (
                l_match
                + c.lambda_dis * (c.gamma * l_s + (1.0 - c.gamma) * l_x)
                + c.lambda_reg * l_reg
            )
            stepper.step(loss)
        return {
            "loss": loss.item(),
            "match": l_match.item(),
            "s_infonce": l_nce.item(),
            "s_kl": l_kl.item(),
            "x_recon": l_rec.item(),
            "x_adv": l_adv.item(),
            "reg_club": l_reg.item(),
            "critic_fit": critic_fit,
            "club_fit": club_fit,
        }

    @staticmethod
    @torch.no_grad()
    def _update_ema(ema, net, momentum):
        for pe, p in zip(ema.parameters(), net.parameters()):
            pe.mul_(momentum).add_(p.detach(), alpha=1.0 - momentum)
        for be, b in zip(ema.buffers(), net.buffers()):
            be.copy_(b)

    def _training_weights(self, w, loss_ref):
        """The split used for training: the GMM posterior, with NCR's
        minimum noisy fraction enforced on the highest-loss pairs."""
        w = np.asarray(w, dtype=np.float64).copy()
        n_min = int(math.ceil(self.config.min_noisy_fraction * len(w)))
        if n_min > 0 and int((w <= 0.5).sum()) < n_min:
            worst = np.argsort(-np.asarray(loss_ref), kind="stable")[:n_min]
            w[worst] = 0.0
        return w

    # scoring --------------------------------------------------------------

    def _embed_all(self, inputs):
        """Eval-mode MII and MEI features of every image and caption:
        ``(z_img (N, d), z_txt (P, d), e_img (N, d_x), e_txt (P, d_x))``."""
        net = self.net
        was_training = net.training
        net.eval()
        dtype = amp_dtype(inputs.device, self.config.amp)
        bs = self.config.eval_batch_size
        img = embed_rows(net.embed_image, inputs.images, bs, inputs.device, dtype)
        txt = embed_rows(net.embed_text, inputs.texts, bs, inputs.device, dtype)
        net.train(was_training)
        d = self.config.embed_dim
        z_img = np.ascontiguousarray(img[:, :d])
        z_txt = np.ascontiguousarray(txt[:, :d])
        # re-normalise (autocast may have rounded)
        z_img /= np.maximum(np.linalg.norm(z_img, axis=1, keepdims=True), 1e-12)
        z_txt /= np.maximum(np.linalg.norm(z_txt, axis=1, keepdims=True), 1e-12)
        return z_img, z_txt, np.ascontiguousarray(img[:, d:]), np.ascontiguousarray(txt[:, d:])

    def _reference_confidence(self, img, txt, image_index):
        """Per-pair loss against the fixed reference negatives and its GMM
        clean posterior: ``(w, loss, fit)``."""
        c = self.config
        n_neg = max(1, min(c.batch_size - 1, len(image_index) - 1))
        _, loss = reference_scores(
            img, txt, image_index, c.tau, n_negatives=n_neg, n_sets=c.ref_sets, seed=c.seed
        )
        w, fit = clean_probability(loss, higher_is_clean=False, seed=c.seed)
        return w, loss, fit

    def score(self, data, progress=True):
        if self.net is None:
            raise ValueError("method %r must be fitted (or loaded) before scoring" % self.name)
        c = self.config
        device = resolve_device(c.device)
        self.net.to(device)
        with Progress(3 if c.mi_diagnostics else 2, "disncl score", progress) as bar:
            z_img, z_txt, e_img, e_txt = self._embed_all(DeviceInputs(data, device))
            bar.update()
            sim = pair_similarity(z_img, z_txt, data.image_index)
            confidence, loss_ref, fit = self._reference_confidence(z_img, z_txt, data.image_index)
            bar.update(clean=float((confidence > 0.5).mean()))
            info = {
                "space": "mii",
                "history": list(self.history),
                "calibration": fit.to_dict() if fit is not None else "none: losses are constant",
                "calibration_input": "reference loss",
                "fraction_clean": float((confidence > 0.5).mean()),
                "reference_loss": {"mean": float(loss_ref.mean()), "std": float(loss_ref.std())},
            }
            if c.mi_diagnostics:
                info["mi"] = self.mi_diagnostics(z_img, z_txt, e_img, e_txt, data.image_index, confidence)
                bar.update()
        return PairScores(
            confidence=confidence,
            similarity=sim,
            calibration_score=loss_ref,
            image_embeddings=z_img,
            text_embeddings=z_txt,
            vectors={"mii_image": z_img, "mii_text": z_txt, "mei_image": e_img, "mei_text": e_txt},
            info=info,
        )

    def mi_diagnostics(self, z_img, z_txt, e_img, e_txt, image_index, confidence):
        """MI estimates with freshly fitted estimators on (at most
        ``mi_samples``) pairs judged clean:

        * ``mii_image__mii_text``: InfoNCE lower bound (high, at most ``log B``)
        * ``mei_image__mii_text``, ``mei_text__mii_image``: InfoNCE lower
          bounds (near 0 when MEI carries no cross-modal information)
        * ``club_mii_mei_image``, ``club_mii_mei_text``: CLUB estimates of
          I(MII; MEI) within each modality (near 0 when disentangled)
        """
        c = self.config
        image_index = np.asarray(image_index)
        clean = np.flatnonzero(np.asarray(confidence) > 0.5)
        judged_clean = len(clean) >= 64
        if not judged_clean:
            clean = np.arange(len(image_index))
        rng = np.random.default_rng(c.seed)
        sub = np.sort(rng.choice(clean, min(c.mi_samples, len(clean)), replace=False))
        rows = image_index[sub]
        bs = int(min(c.batch_size, max(2, len(sub) // 2)))
        kw = dict(batch_size=bs, steps=c.mi_steps, seed=c.seed)
        zv, zt, ev, et = z_img[rows], z_txt[sub], e_img[rows], e_txt[sub]
        images = np.unique(rows)
        out = {
            "n_pairs": int(len(sub)),
            "judged_clean_only": bool(judged_clean),
            "batch_size": bs,
            "log_batch": math.log(bs),
            "mii_image__mii_text": estimate_infonce_mi(zv, zt, groups=rows, **kw),
            "mei_image__mii_text": estimate_infonce_mi(ev, zt, groups=rows, **kw),
            "mei_text__mii_image": estimate_infonce_mi(et, zv, groups=rows, **kw),
            "club_mii_mei_image": estimate_club_mi(z_img[images], e_img[images], steps=2 * c.mi_steps, seed=c.seed),
            "club_mii_mei_text": estimate_club_mi(zt, et, steps=2 * c.mi_steps, seed=c.seed),
        }
        return out

    # checkpoints ----------------------------------------------------------

    def _build_network(self, data, pretrained=True):
        return build_disncl_net(self.config, data, pretrained=pretrained)
