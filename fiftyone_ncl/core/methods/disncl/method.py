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

High-noise safeguards (issue 15; :mod:`.split`): ``split_gate`` does not
trust a mixture that fitted the loss's tail (or whose components overlap)
and trains that epoch on fallback weights instead; ``kl_min_w`` /
``kl_deterministic`` keep the KL pull of L_S to confident pairs (or off for
deterministic heads); ``robust_loss="acl"`` trains the unconfident rows of
L_match with CRCL's active complementary loss (y = w) instead of the soft
targets. Each epoch's history record says whether the gate fired and why.
"""
import copy
import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from fiftyone_ncl.core.alignment import DeviceInputs
from fiftyone_ncl.core.data import PairScores
from fiftyone_ncl.core.distributed import split_forward, sync_buffers, sync_gradients
from fiftyone_ncl.core.methods.base import CorrespondenceMethod
from fiftyone_ncl.core.methods.disncl.nets import build_disncl_net
from fiftyone_ncl.core.methods.disncl.split import GATE_FALLBACKS, fallback_weights, split_credibility
from fiftyone_ncl.core.nets import initial_solution
from fiftyone_ncl.core.methods.disncl.terms import (
    club_fit_loss,
    critic_loss,
    exclusivity_loss,
    invariance_loss,
    log_probs,
    match_loss,
    mi_regulariser,
)
from fiftyone_ncl.core.mi import estimate_club_mi, estimate_infonce_mi
from fiftyone_ncl.core.reference import reference_confidence
from fiftyone_ncl.core.start import check_start_options, resolve_start
from fiftyone_ncl.core.training import (
    DeviceSums,
    Progress,
    StepGraphs,
    Stepper,
    TrainConfig,
    adam,
    amp_dtype,
    autocast,
    device_epoch_batches,
    embed_rows,
    make_generator,
    make_optimizer,
    report_interval,
    resolve_device,
    seeded,
    use_cuda_graphs,
)
from fiftyone_ncl.core.vectors import normalize_rows, pair_similarity

logger = logging.getLogger(__name__)


@dataclass
class DisNCLConfig(TrainConfig):
    """Options of DisNCL (on top of :class:`~fiftyone_ncl.core.training.TrainConfig`,
    whose ``embed_dim`` is the MII dimension and ``tau`` the temperature of
    L_match and of the reference-set split).

    Attributes:
        init: ``"random"`` (default): the paper's random MLP heads at tau
            0.05; ``"cca"``: over frozen embeddings the MII heads start as
            the linear CCA solution, linear at tau 0.2; ``"auto"``: ``"cca"``
            over frozen embeddings, ``"random"`` with towers (CRCL's
            default, :mod:`fiftyone_ncl.core.start`). The CCA start ranks
            far closer to a linear CCA on the synthetic regime suite (below
            it in 17 of 48 noisy cells instead of 48) but is not the default:
            linear MII heads keep the modality-exclusive factors (held-out
            probe R^2 of x from MII 0.78 / 0.85 instead of 0.01 / 0.10 on
            ``fiftyone-ncl bench synthetic``), which defeats the MII/MEI
            split DisNCL exists for, and over raw pixel vectors it ranked
            worse than the random start (coco-mini; the demo's Fashion-MNIST
            photos 0.945 -> 0.617)
        head: None (default) = ``"linear"`` when the heads start from CCA,
            ``"mlp"`` otherwise; or as :class:`TrainConfig` says
        tau: None (default) = 0.2 when the heads start from CCA, 0.05
            (the paper's) otherwise; or a number, or ``"auto"``
        mei_dim: dimension of the MEI features (None: ``embed_dim``). Spare
            dimensions in either space keep traces of the input that a
            linear probe can read even at a tiny scale, so keep both near
            what the data needs
        stochastic: Gaussian MII heads (mean, log-variance) sampled in
            training, with the symmetric KL term of L_S; scoring uses the mean
        kl_sigma: deterministic heads: the MII posteriors are taken as
            ``N(z, kl_sigma^2 I)`` so the symmetric KL of L_S is
            ``||z_V - z_T||^2 / kl_sigma^2`` (an alignment term on confident
            pairs; at 0.03 a pull of ~1100x a unit squared distance, times
            ``lambda_dis * gamma * beta_s``)
        kl_min_w: the KL term of L_S acts on pairs with ``w > kl_min_w`` only
            (in [0, 1); 0.5, the default, = every pair the split calls clean).
            A high bar (0.9) keeps the pull of each pair's two MII features
            together to confident anchors. Ablation (docs/results/disncl-ablation,
            seed 0): with 0.9 fmnist-captions n=2000 category swaps 40 % read
            0.857 -> 0.915 and 60 % (with the gate) 0.684 -> 0.710, and
            aligned-classes 40 / 60 % +0.016 / +0.007, but heldout-mimic 40 /
            60 % (with the gate) 0.748 / 0.606 -> 0.713 / 0.584: no gain on the
            suite overall, so not the default. The pull itself matters:
            ``kl_deterministic=False`` lost up to 0.19 AUROC
        kl_deterministic: False drops the KL term for deterministic heads
            (``stochastic=False``), where it is a plain squared-distance pull
            rather than a posterior match; stochastic heads keep it
        split_gate: do not trust a split that is not credible
            (:func:`~fiftyone_ncl.core.methods.disncl.split.split_credibility`):
            a noisy component lighter than ``gate_tail_weight`` whose mean
            lies beyond the ``gate_tail_quantile`` quantile of the losses (the
            mixture fitted the loss's tail), or components whose Ashman's D is
            below ``gate_min_separation``. The epoch then trains on
            ``gate_fallback`` weights; each history record has ``gate``
            (fired), ``gate_reason``, ``gate_fallback`` and ``split_check``
            (the numbers read; recorded with the gate off too). On by
            default: it never fired on the suite's easy regimes (identical
            results), raised heldout-mimic 40 / 60 % from 0.742 / 0.588 to
            0.748 / 0.606 and fmnist-captions n=2000 at 60 % category swaps
            from 0.596 to 0.684 (0.710 with ``kl_min_w=0.9``)
        gate_tail_weight: see ``split_gate`` (0 turns the tail check off)
        gate_tail_quantile: see ``split_gate``, in (0, 1)
        gate_min_separation: see ``split_gate`` (0, the default, turns the
            overlap check off; 2 = the mixture density must have two modes).
            Off until calibrated: the splits that went wrong read D 0.7-2.4,
            and a clean two-mode sample reads ~5, but D of good splits on
            the suite was not measured
        gate_fallback: the weights of an epoch whose split is not trusted:
            ``"neutral"`` (w = 0.5 for every pair: none confident, none
            dropped), ``"previous"`` (the last trusted split's; neutral
            before the first) or ``"rank"`` (w = 1 - the pair's loss
            quantile: keeps the ranking, half the pairs above 0.5); on
            fmnist-captions n=2000 at 60 % neutral read 0.684, rank 0.657
        robust_loss: None (L_match's soft-target cross-entropy on every row)
            or ``"acl"``: rows whose ``w`` is below ``robust_min_w`` are
            trained with CRCL's active complementary loss with ``y = w``
            instead (:mod:`fiftyone_ncl.core.acl`): the pull of the labelled
            partner scaled by w, plus a bounded push away from the other
            items of the batch (same-image items are not pushed); after
            warm-up only
        robust_min_w: see ``robust_loss``, in (0, 1]; at 0.9 the rows of an
            epoch whose split the gate distrusted (w = 0.5) all take ACL.
            Off by default: ``robust_loss="acl"`` lost AUROC on most cells of
            the ablation (heldout-mimic 40 % 0.742 -> 0.657; fmnist 60 % with
            the gate and ``kl_min_w=0.9`` 0.710 -> 0.661)
        acl_lam: weight of ACL's complementary term (CRCL's 5)
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
        club_steps: CLUB q updates per training step (on detached features,
            both modalities in one grouped pass)
        club_rows: share of the batch each of the ``club_steps`` updates
            reads (consecutive windows of the shuffled batch, wrapping
            around): 0.4 = two passes over the batch in all with 5 steps;
            None = ``1 / club_steps`` (one pass); 1.0 = the whole batch every
            time (``club_steps`` passes, as before: the CLUB fit then costs
            more than the MII heads themselves). What keeps MEI free of
            shared information is the number of updates q gets per encoder
            step more than the rows each reads: on the synthetic diagnostic
            (exclusive std 1, seeds 0-2) the MEI->s probe R^2 reads 0.024 /
            0.027 / 0.032 / 0.039 with five full-batch updates (before / with
            the shared critic pass) / 0.4 / one pass, and 0.48 with a single
            full-batch update
        club_lr: learning rate of CLUB's own optimiser
        club_hidden: hidden width of CLUB's q
        reference_sets: reference negative sets averaged for the per-pair loss
        min_noisy_fraction: NCR's safeguard, for the training split only: when
            fewer pairs than this fraction are judged noisy, the highest-loss
            ones get w = 0 (the exported confidence is not changed)
        mi_diagnostics: compute MI diagnostics when scoring
        mi_samples: pairs (judged clean) used by the diagnostics
        mi_steps: optimisation steps of each diagnostic estimator
    """

    epochs: int = 15
    init: str = "random"
    head: str = None
    tau: float = None
    mei_dim: int = None
    stochastic: bool = False
    kl_sigma: float = 0.03
    kl_min_w: float = 0.5
    kl_deterministic: bool = True
    split_gate: bool = True
    gate_tail_weight: float = 0.1
    gate_tail_quantile: float = 0.95
    gate_min_separation: float = 0.0
    gate_fallback: str = "neutral"
    robust_loss: str = None
    robust_min_w: float = 0.9
    acl_lam: float = 5.0
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
    club_rows: float = 0.4
    club_lr: float = 3e-3
    club_hidden: int = 256
    reference_sets: int = 4
    min_noisy_fraction: float = 0.01
    mi_diagnostics: bool = True
    mi_samples: int = 2048
    mi_steps: int = 300


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


class _Optimisers(NamedTuple):
    encoders: Stepper  # towers, MII/MEI heads, decoders
    critic: torch.optim.Optimizer  # the adversarial critics (own loss)
    club: torch.optim.Optimizer  # CLUB's q (own loss)
    # the critics learn from the adversarial pass itself (see _fit)
    shared_critic: bool = False


class _Schedule:
    """Step-indexed ramps: the gradient-reversal coefficient (0 -> 1 over
    ``grl_ramp_epochs``) and the confidence-dependent parts (0 -> 1 over
    ``ramp_epochs`` after warm-up)."""

    def __init__(self, config, n_batches):
        self.grl_steps = max(1, config.grl_ramp_epochs * n_batches)
        self.warm_steps = config.warmup_epochs * n_batches
        self.ramp_steps = max(1, config.ramp_epochs * n_batches)

    def grl(self, step):
        return min(1.0, step / self.grl_steps)

    def ramp(self, step):
        return min(1.0, (step - self.warm_steps + 1) / self.ramp_steps)


class _EpochState:
    """What the epoch's split sets for its steps: the per-pair clean
    confidences ``w`` and the teachers of the soft targets; and the step's
    ramps as device scalars (``ramp_t``, ``grl_t``: filled before each step,
    read by it, so a captured CUDA graph sees each step's values).

    ``w`` and the teachers keep their storage once set: a new value of the
    same shape is copied into it (a captured graph reads these addresses).
    """

    def __init__(self, w, ema=None, dtype=None, device="cpu", graphs=False):
        self._w = None
        self._teacher_img = self._teacher_txt = None
        self.trusted_w = None  # the last split the gate trusted (host array)
        self.w = w
        self.ema = ema
        self.dtype = dtype
        self.graphs = graphs
        self.ramp_t = torch.zeros((), device=device)
        self.grl_t = torch.zeros((), device=device)

    @staticmethod
    def _keep(old, new):
        if new is None:
            return None
        if old is not None and old.shape == new.shape and old.dtype == new.dtype and old.device == new.device:
            return old.copy_(new)
        return new

    @property
    def w(self):
        return self._w

    @w.setter
    def w(self, value):
        self._w = self._keep(self._w, value)

    @property
    def teacher_img(self):
        return self._teacher_img

    @teacher_img.setter
    def teacher_img(self, value):
        self._teacher_img = self._keep(self._teacher_img, value)

    @property
    def teacher_txt(self):
        return self._teacher_txt

    @teacher_txt.setter
    def teacher_txt(self, value):
        self._teacher_txt = self._keep(self._teacher_txt, value)


ROBUST_LOSSES = (None, "acl")


def _is_number(x):
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_)) \
        and math.isfinite(float(x))


def _check_unit(value, name, low_open, high_open):
    """Raises a ValueError naming ``name`` unless ``value`` is a number in
    the unit interval (ends open or closed as asked)."""
    ok = _is_number(value)
    if ok:
        v = float(value)
        ok = (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
    if not ok:
        raise ValueError("%s must be a number in %s0, 1%s, got %r"
                         % (name, "(" if low_open else "[", ")" if high_open else "]", value))


def _normalize_on_device(x, where):
    """:func:`~fiftyone_ncl.core.vectors.normalize_rows` for a device tensor:
    the same checks (one host read), unit rows float32 kept as they are."""
    sq = (x.double() ** 2).sum(1)
    bad_finite, bad_zero, off = torch.stack(
        [(~torch.isfinite(sq)).sum().double(), (sq == 0).sum().double(), (sq - 1.0).abs().max()]
    ).tolist() if len(x) else (0, 0, 0.0)
    for count, what in ((bad_finite, "NaN or infinite values"), (bad_zero, "all-zero vectors")):
        if count:
            raise ValueError("%s has %s in %d rows" % (where, what, int(count)))
    if off < 2e-3:
        return x
    return x / sq.sqrt().float()[:, None]


def _inner_step(optimizer, loss):
    """One optimiser step of an estimator with its own loss; returns the
    detached loss (no host synchronisation). Under torchrun the gradient is
    averaged over the ranks first (core.distributed)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sync_gradients(optimizer)
    optimizer.step()
    return loss.detach()


_TERMS = ("loss", "match", "s_infonce", "s_kl", "x_recon", "x_adv", "reg_club", "critic_fit", "club_fit")


class DisNCLMethod(CorrespondenceMethod):
    """DisNCL: MII/MEI disentanglement, soft many-to-many targets and a
    clean/noisy split in MII space."""

    name = "disncl"
    config_cls = DisNCLConfig
    trains = True
    network_attr = "net"
    statistic_sign = -1  # the reference loss
    output_fields = ("mii_image", "mii_text", "mei_image", "mei_text")
    form_options = ("epochs", "warmup_epochs", "gamma", "device", "seed")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.config
        check_start_options(c.init, c.head, c.tau)
        if c.teacher not in ("epoch", "ema"):
            raise ValueError("teacher must be 'epoch' or 'ema', got %r" % c.teacher)
        if not 0.0 <= c.gamma <= 1.0:
            raise ValueError("gamma must be in [0, 1], got %r" % c.gamma)
        if c.warmup_epochs < 0:
            raise ValueError("warmup_epochs must be >= 0")
        _check_unit(c.kl_min_w, "kl_min_w", low_open=False, high_open=True)
        _check_unit(c.gate_tail_weight, "gate_tail_weight", low_open=False, high_open=False)
        _check_unit(c.gate_tail_quantile, "gate_tail_quantile", low_open=True, high_open=True)
        _check_unit(c.robust_min_w, "robust_min_w", low_open=True, high_open=False)
        if not _is_number(c.gate_min_separation) or c.gate_min_separation < 0:
            raise ValueError("gate_min_separation must be a number >= 0, got %r" % (c.gate_min_separation,))
        if not _is_number(c.acl_lam) or c.acl_lam < 0:
            raise ValueError("acl_lam must be a number >= 0, got %r" % (c.acl_lam,))
        if c.gate_fallback not in GATE_FALLBACKS:
            raise ValueError("gate_fallback must be one of %s, got %r"
                             % (", ".join(map(repr, GATE_FALLBACKS)), c.gate_fallback))
        if c.robust_loss not in ROBUST_LOSSES:
            raise ValueError("robust_loss must be None or 'acl', got %r" % (c.robust_loss,))
        for name in ("split_gate", "kl_deterministic"):
            if not isinstance(getattr(c, name), (bool, np.bool_)):
                raise ValueError("%s must be True or False, got %r" % (name, getattr(c, name)))
        self.net = None
        self._spec = None

    # training -------------------------------------------------------------

    @property
    def tau_mi(self):
        return self.config.tau if self.config.tau_mi is None else self.config.tau_mi

    def fit(self, data, progress=True):
        self.config = resolve_start(self.config, data)
        self._select_heads(data)
        with seeded(self.config.seed):
            self._fit(data, progress)
        self.fitted = True
        return self

    def _fit(self, data, progress):
        c = self.config
        generator = make_generator(c.seed)
        device = resolve_device(c.device)
        dtype = amp_dtype(device, c.amp)
        self.net = net = build_disncl_net(c, data, init=initial_solution(c, data)).to(device).train()
        self._spec = data.spec()
        inputs = DeviceInputs(data, device)
        graphs = use_cuda_graphs(c, device, dtype, inputs)
        enc_params = net.encoder_parameters()
        encoders = Stepper(make_optimizer(enc_params, c, capturable=graphs), enc_params, c.grad_clip, dtype)
        # The critics learn from the adversarial pass itself (one forward and
        # backward serve the critics' InfoNCE fit and, through the gradient
        # reversal, the encoders' adversarial term: simultaneous updates, as
        # gradient reversal is usually trained). Their gradient then carries
        # the term's weight lambda_dis (1 - gamma) beta_x; Adam is invariant
        # to a constant gradient scale once its eps is scaled alike, so the
        # critics' steps are those of their own loss. Not with fp16 loss
        # scaling (a scale that changes between steps) or other critic_steps.
        adv_weight = c.lambda_dis * (1.0 - c.gamma) * c.beta_x
        shared_critic = c.critic_steps == 1 and adv_weight > 0 and encoders.scaler is None
        opt = _Optimisers(
            encoders,
            adam(net.critic_parameters(), c.critic_lr, eps=1e-8 * (adv_weight if shared_critic else 1.0),
                 capturable=graphs),
            adam(net.club_parameters(), c.club_lr, capturable=graphs),
            shared_critic,
        )
        ema = None
        if c.teacher == "ema":
            ema = copy.deepcopy(net).eval()
            for p in ema.parameters():
                p.requires_grad_(False)

        n_batches = max(1, int(np.ceil(data.n_pairs / c.batch_size)))
        schedule = _Schedule(c, n_batches)
        state = _EpochState(w=torch.ones(data.n_pairs, device=device), ema=ema, dtype=dtype, device=device,
                            graphs=graphs)
        sums = DeviceSums(_TERMS, device)
        phase = {"ramp": 0.0}

        def step(batch):
            self._train_step(inputs, batch, state, opt, phase["ramp"], sums)
            if ema is not None:
                self._update_ema(ema, net, c.ema_momentum)

        def zero_grad():
            for o in (opt.encoders.optimizer, opt.critic, opt.club):
                o.zero_grad(set_to_none=True)

        runner = StepGraphs(step, graphs, zero_grad=zero_grad)
        self.history = []
        step_no = 0
        every = report_interval(c.epochs * n_batches)
        with Progress(c.epochs * n_batches, "disncl", progress) as bar:
            for epoch in range(c.epochs):
                record = {"epoch": epoch, "fraction_clean": 1.0}
                filtering = epoch >= c.warmup_epochs
                if filtering:
                    record.update(self._split(inputs, data.image_index, state))
                sums.reset()
                ramp = 0.0
                for batch in device_epoch_batches(data.n_pairs, c.batch_size, generator, device):
                    ramp = schedule.ramp(step_no) if filtering else 0.0
                    phase["ramp"] = ramp
                    state.ramp_t.fill_(ramp)
                    state.grl_t.fill_(schedule.grl(step_no))
                    # graphs keyed by what the step decides in Python: soft or hard targets
                    runner(batch, key=(ramp > 0,))
                    step_no += 1
                    bar.tick(lambda: {"epoch": epoch, "loss": sums.peek()["loss"],
                                      "clean": record["fraction_clean"]}, every)
                record.update(sums.read())
                record["grl_coef"] = schedule.grl(step_no)
                record["ramp"] = ramp
                bar.flush(lambda: {"epoch": epoch, "loss": record["loss"], "clean": record["fraction_clean"]})
                self.history.append(record)
        if runner.captures or runner.failure:
            self.history[-1]["cuda_graphs"] = runner.stats()
        sync_buffers(net)
        net.eval()

    def _split(self, inputs, image_index, state):
        """The epoch's clean/noisy split from the previous epoch's model:
        updates ``state.w`` (and the epoch teacher); returns what the history
        records of it."""
        c = self.config
        img, txt, _, _ = self._embed_all(inputs, mei=False)
        w, loss_ref, _, fit = reference_confidence(
            img, txt, image_index, c.tau, c.batch_size, n_sets=c.reference_sets, seed=c.seed, device=inputs.device
        )
        w, gate = self._gated_weights(w, loss_ref, fit, state)
        state.w = torch.as_tensor(w, dtype=torch.float32, device=inputs.device)
        if c.teacher == "epoch":
            state.teacher_img = torch.as_tensor(img, device=inputs.device)
            state.teacher_txt = torch.as_tensor(txt, device=inputs.device)
        return {
            "fraction_clean": float((w > 0.5).mean()),
            "mean_w": float(w.mean()),
            "calibration": fit.to_dict() if fit is not None else None,
            **gate,
        }

    def _gated_weights(self, w, loss_ref, fit, state):
        """The epoch's training weights from the split's posterior ``w``:
        with ``split_gate``, an untrusted split is replaced by the fallback
        weights; a trusted one gets NCR's minimum noisy fraction
        (:meth:`_training_weights`) and becomes the last trusted split.
        Returns ``(w, record)``, what the history records of the gate."""
        c = self.config
        check = split_credibility(loss_ref, fit, c.gate_tail_weight, c.gate_tail_quantile, c.gate_min_separation)
        record = {"gate": False, "gate_reason": None, "gate_fallback": None, "split_check": check.to_dict()}
        if c.split_gate and check.fired:
            w, used = fallback_weights(c.gate_fallback, loss_ref, previous=state.trusted_w)
            record.update(gate=True, gate_reason=check.reason, gate_fallback=used)
            return w, record
        w = self._training_weights(w, loss_ref)
        state.trusted_w = w
        return w, record

    def _train_step(self, inputs, batch, state, opt, ramp, sums):
        """One step: CLUB's inner fit on detached features, then the
        encoders' step on the four terms of the objective, with the critics
        stepped from the same backward pass (or their own inner step, see
        :meth:`_fit`). Adds the step's terms to ``sums`` (on the device)."""
        c, net = self.config, self.net
        device = inputs.device
        x_img, x_txt, rows = inputs.batch(batch)
        w = state.w[batch]
        same = inputs.same_image(rows)
        with autocast(device, state.dtype, cache=not state.graphs):
            # under torchrun: this rank's slice, gathered into the whole batch
            ov = split_forward(lambda x: net.side(x, "image", sample=c.stochastic), x_img)
            ot = split_forward(lambda x: net.side(x, "text", sample=c.stochastic), x_txt)
            rec_v = net.reconstruct(ov["z"], ov["e"], "image").float()
            rec_t = net.reconstruct(ot["z"], ot["e"], "text").float()
        z_v, z_t = ov["z"].float(), ot["z"].float()
        # group 0 = images, 1 = captions: the grouped critics and CLUB read these
        zs = torch.stack([z_v, z_t])
        es = torch.stack([ov["e"].float(), ot["e"].float()])
        zs_d, es_d = zs.detach(), es.detach()

        club_fit = self._fit_club(opt.club, zs_d, es_d)
        critic_fit = None
        if not opt.shared_critic:
            critic_fit = torch.zeros((), device=device)
            for _ in range(c.critic_steps):
                critic_fit = _inner_step(opt.critic, critic_loss(net, zs_d, es_d, same, w))

        frozen = net.club_parameters() + ([] if opt.shared_critic else net.critic_parameters())
        with _Frozen(frozen):
            teacher = None
            if ramp > 0 and c.use_soft_targets:
                teacher = self._teacher(state, x_img, x_txt, rows, batch)
            lp = log_probs(z_v, z_t, c.tau)
            lp_mi = lp if self.tau_mi == c.tau else log_probs(z_v, z_t, self.tau_mi)
            l_match = match_loss(lp, same, w, ramp, state.ramp_t, c, teacher)
            mu_logvar = (ov["mu"], ov["logvar"], ot["mu"], ot["logvar"]) if c.stochastic else None
            l_s, l_nce, l_kl = invariance_loss(lp_mi, z_v, z_t, mu_logvar, same, w, state.ramp_t, c)
            l_x, l_rec, l_adv = exclusivity_loss(net, ov, ot, rec_v, rec_t, zs, es, same, w, state.grl_t, c.beta_x)
            l_reg = mi_regulariser(net, zs, es)
            loss = l_match + c.lambda_dis * (c.gamma * l_s + (1.0 - c.gamma) * l_x) + c.lambda_reg * l_reg
            if opt.shared_critic:
                opt.critic.zero_grad(set_to_none=True)
            opt.encoders.step(loss)
            if opt.shared_critic:
                sync_gradients(opt.critic)
                opt.critic.step()
                critic_fit = l_adv.detach()
        sums.add(loss, l_match, l_nce, l_kl, l_rec, l_adv, l_reg, critic_fit, club_fit)

    def _fit_club(self, optimizer, zs, es):
        """CLUB's inner fit: ``club_steps`` updates of both modalities' q on
        the detached stacks, each on a ``club_rows`` share of the batch;
        returns the last update's loss (detached)."""
        c, net = self.config, self.net
        steps = int(c.club_steps)
        if steps <= 0:
            return torch.zeros((), device=zs.device)
        n = zs.shape[1]
        rows = 1.0 / steps if c.club_rows is None else float(c.club_rows)
        size = min(n, max(2, int(round(rows * n))))
        if size >= n:
            parts = [(zs, es)] * steps
        else:  # consecutive windows of the (shuffled) batch, wrapping around
            parts = []
            for i in range(steps):
                start = int(round(i * n / steps)) % n
                if start + size <= n:
                    parts.append((zs[:, start:start + size], es[:, start:start + size]))
                else:
                    idx = torch.arange(start, start + size, device=zs.device) % n
                    parts.append((zs[:, idx], es[:, idx]))
        loss = None
        for z, e in parts:
            loss = _inner_step(optimizer, club_fit_loss(net, z, e))
        return loss

    @staticmethod
    def _teacher(state, x_img, x_txt, rows, bidx):
        """Detached features the soft targets' affinities come from: the EMA
        copy's, or the previous epoch's eval-mode MII features."""
        if state.ema is None:
            return state.teacher_img[rows], state.teacher_txt[bidx]
        with torch.no_grad(), autocast(x_img.device, state.dtype, cache=not state.graphs):
            return state.ema.encode_image(x_img).float(), state.ema.encode_text(x_txt).float()

    @staticmethod
    @torch.no_grad()
    def _update_ema(ema, net, momentum):
        ema_params, params = list(ema.parameters()), [p.detach() for p in net.parameters()]
        torch._foreach_mul_(ema_params, momentum)
        torch._foreach_add_(ema_params, params, alpha=1.0 - momentum)
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

    def _embed_all(self, inputs, mei=True):
        """Eval-mode MII and MEI features of every image and caption:
        ``(z_img (N, d), z_txt (P, d), e_img (N, d_x), e_txt (P, d_x))``;
        ``mei=False`` skips the MEI heads (the split reads MII only; the MII
        features are the same numbers either way) and returns None for them."""
        net = self.net
        sync_buffers(net)  # under torchrun: the ranks' BatchNorm statistics averaged
        was_training = net.training
        net.eval()
        dtype = amp_dtype(inputs.device, self.config.amp)
        bs = self.config.eval_batch_size
        fn_img, fn_txt = (net.embed_image, net.embed_text) if mei else (net.encode_image, net.encode_text)
        # the split on a GPU keeps its features there (no round trip of
        # millions of rows through the host; the reference losses are
        # computed there too)
        on_device = not mei and inputs.device.type != "cpu"
        img = embed_rows(fn_img, inputs.images, bs, inputs.device, dtype, to_host=not on_device)
        txt = embed_rows(fn_txt, inputs.texts, bs, inputs.device, dtype, to_host=not on_device)
        net.train(was_training)
        d = self.config.embed_dim
        if on_device:
            return (_normalize_on_device(img, "MII image features"),
                    _normalize_on_device(txt, "MII caption features"), None, None)
        if not mei:
            return (normalize_rows(img, "MII image features", copy=False),
                    normalize_rows(txt, "MII caption features", copy=False), None, None)
        # re-normalised: autocast may have rounded them
        z_img = normalize_rows(np.ascontiguousarray(img[:, :d]), "MII image features", copy=False)
        z_txt = normalize_rows(np.ascontiguousarray(txt[:, :d]), "MII caption features", copy=False)
        return z_img, z_txt, np.ascontiguousarray(img[:, d:]), np.ascontiguousarray(txt[:, d:])

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
            confidence, loss_ref, _, fit = reference_confidence(
                z_img, z_txt, data.image_index, c.tau, c.batch_size, n_sets=c.reference_sets, seed=c.seed
            )
            bar.update(clean=float((confidence > 0.5).mean()))
            info = {
                "space": "mii",
                "history": list(self.history),
                "selection": self.selection,
                "calibration": fit.to_dict() if fit is not None else "none: losses are constant",
                "calibration_input": "reference loss",
                "fraction_clean": float((confidence > 0.5).mean()),
                "reference_loss": {"mean": float(loss_ref.mean()), "std": float(loss_ref.std())},
                # whether the split gate would distrust the exported split
                # (the exported confidence is the posterior either way)
                "split_check": split_credibility(loss_ref, fit, c.gate_tail_weight, c.gate_tail_quantile,
                                                 c.gate_min_separation).to_dict(),
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

    def _build_network(self, data):
        return build_disncl_net(self.config, data)
