"""CRCL: Active Complementary Loss + Self-refining Correspondence Correction.

Qin et al., NeurIPS 2023; semantics of the official code (QinYang79/CRCL,
``model/CRCL.py`` and ``train.py``), see ``reference/crcl-method.md``.

* ACL (:mod:`fiftyone_ncl.core.acl`): in-batch active + complementary loss
  weighted by one soft label per caption.
* SCC (:func:`scc_update`): labels start at 1; in each stage the first
  ``warmup_epochs`` epochs keep them frozen, afterwards every visit of a
  caption (once per epoch) applies ``y = alpha * y_last + (1 - alpha) * p``
  and the cut ``y := 0 where y < cut``; the post-cut y weights that step's
  loss and is written back. At the last warm-up epoch of stage 0 the stored
  label is the raw p instead (labels initialised from the warmed-up model).
* Self-refining stages: every stage trains a network built from scratch (new
  random init, new AdamW state, LR schedule restarted) and only the labels
  are carried over.

Deviations from the official code, all deliberate:

* No validation-based model selection (there is no validation split when
  curating a collection): the model of the last epoch of the last stage is
  kept.
* ``mask_same_image`` (default True): other captions of the *same* image in a
  batch are left out of both in-batch softmaxes (they are false negatives).
  With one caption per image (Flickr30K-style batches almost never hold two)
  this changes nothing; on small multi-caption collections it keeps clean
  pairs from being pushed apart and from getting p ~ 1/2.
* Seeded: stage k builds and trains its network under
  ``seeded(stage_seed(seed, k))`` with its own batch-order generator.

Adaptation (an option): ``scc_probability``. The official SCC estimate is
``p_i = (P^{i2t}_ii + P^{t2i}_ii) / 2``, the pair's in-batch softmax
probability. On many-to-many data (captions written per class, near-duplicate
captions: k pairs of the anchor's kind in a batch of 128) a clean pair shares
its row with the k - 1 others, so p tops out near 1 / k (about 0.08 on
fmnist-captions), under the 0.1 cut: most labels are cut to 0 and training
runs on the complementary term alone. ``scc_probability="relative"`` uses
``P_ii / max_j P_ij`` per direction (same-image exclusions respected),
averaged over the two directions
(:func:`~fiftyone_ncl.core.acl.relative_matching_probability_from_log_probs`):
about 1 for a pair that is as good as the best caption of its row, small for
one whose row another caption wins. ``"official"`` (the default) keeps the
paper's estimate. After :meth:`CRCLMethod.fit` the share of labels cut to 0
is recorded (``label_stats``, the last history and stage records) and a
warning names the option when it is most of them (> ``ZEROED_WARNING``).

The default (``scc_probability=None``) follows the start
(:mod:`fiftyone_ncl.core.start`): ``"relative"`` from the CCA start over
frozen embeddings, ``"official"`` from random heads with towers trained end
to end. Why (``docs/results/crcl-m2m``, one seed):
``"relative"`` fixes the labels (fmnist-captions, look-alike swaps 20-60 %:
clean pairs cut to 0 5-9 % instead of 77-87 %, the labels as a detector
AUROC 0.70-0.90 instead of 0.54-0.60; CCA-started crcl on aligned-classes:
labels zeroed 1-35 % instead of 74-89 %, 74 % already at 0 % noise) but not
the confidence ranking: AUROC moved by -0.08 to +0.03 (fmnist-captions
+0.03 / -0.01 / -0.08 at 20 / 40 / 60 %, where the decision at 40-60 %
flagged almost nothing), -0.015 to +0.015 on the suite regimes and coco-mini,
within 0.005 for the CCA-started variant (whose official labels were 74 %
zeros on clean aligned-classes pairs).

The start (``init="auto"``, the default): over frozen embeddings the heads
start as the linear CCA solution, linear at tau 0.2 (from random MLP heads
at tau 0.05 CRCL ranked below a linear CCA in all 48 noisy cells of the
regime suite; from the CCA start below it by more than 0.01 in 13 when that
CCA was fitted once on all pairs, in 8 now that it is refitted on the pairs
it calls clean); with towers trained end to end the official random MLP
heads at tau 0.05.
"""
import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import torch

from fiftyone_ncl.core.acl import (
    SCC_PROBABILITIES,
    acl_from_log_probs,
    in_batch_log_probs,
    matching_probability_from_log_probs,
)
from fiftyone_ncl.core.alignment import DeviceInputs, encode_all
from fiftyone_ncl.core.data import PairScores
from fiftyone_ncl.core.distributed import split_forward, sync_buffers
from fiftyone_ncl.core.health import LABEL_ZERO
from fiftyone_ncl.core.losses import similarity_logits
from fiftyone_ncl.core.methods.base import CorrespondenceMethod
from fiftyone_ncl.core.nets import build_dual_encoder, initial_solution
from fiftyone_ncl.core.reference import reference_confidence
from fiftyone_ncl.core.start import check_start_options, resolve_start
from fiftyone_ncl.core.training import (
    Progress,
    Stepper,
    TrainConfig,
    amp_dtype,
    StepGraphs,
    autocast,
    device_epoch_batches,
    make_generator,
    make_optimizer,
    report_interval,
    resolve_device,
    seeded,
    use_cuda_graphs,
)
from fiftyone_ncl.core.vectors import pair_similarity

logger = logging.getLogger(__name__)

# warn after fit when more than this share of the labels is cut to 0
ZEROED_WARNING = 0.5
# SCC's probability by start (scc_probability=None): from the CCA start at tau
# 0.2 the official estimate cut 74 % of clean aligned-classes labels to 0 while
# the relative one moved AUROC and decisions by at most 0.005 on every suite
# and coco-mini cell (docs/results/crcl-m2m); from random heads the official
# one (there the relative one ranked 0.08 lower on fmnist-captions at 60 %)
SCC_BY_START = {"scc_probability": {"cca": "relative", "random": "official"}}


# SCC ---------------------------------------------------------------------


def scc_update(y_last, p, alpha=0.8, cut=0.1, frozen=False, store_raw=False):
    """One SCC visit of a set of captions (``CRCL.train_self``).

    Computed in float32 like the official code (labels go through a float32
    tensor there), so boundary cases match it: e.g. a zeroed label comes back
    with ``p = 0.5`` exactly, since ``float32(0.2) * 0.5 == float32(0.1)``
    is not below the cut.

    Args:
        y_last: (n,) stored labels of the captions
        p: (n,) their in-batch matching probabilities
        alpha (0.8): momentum of the old label
        cut (0.1): labels below it become 0 (None or 0: no cut)
        frozen (False): warm-up epoch: keep ``y_last`` (the cut still
            applies, as in the official code; stored labels are already cut,
            so it only matters for labels that were never cut)
        store_raw (False): the last warm-up epoch of stage 0: store the raw
            p (not thresholded) instead of the weight

    Returns:
        ``(weight, stored)``: (n,) float32 loss weights of this step and the
        labels to write back
    """
    y_last = np.asarray(y_last, dtype=np.float32)
    p = np.asarray(p, dtype=np.float32)
    y = y_last.copy() if frozen else np.float32(alpha) * y_last + np.float32(1.0 - alpha) * p
    if cut:
        y[y < np.float32(cut)] = 0.0
    return y, (p.copy() if store_raw else y)


def scc_update_torch(y_last, p, alpha=0.8, cut=0.1, frozen=False, store_raw=False):
    """:func:`scc_update` on tensors, on their device (no host round trip):
    the same float32 arithmetic (each product and the sum rounded to float32,
    the constants rounded to float32 first), so it returns the same numbers
    bit for bit (tested against :func:`scc_update`).

    Returns:
        ``(weight, stored)``: two (n,) float32 tensors
    """
    y_last = y_last.detach().float()
    p = p.detach().float()
    if frozen:
        y = y_last.clone()
    else:
        # float(np.float32(c)) is exactly representable in float32, so the
        # kernel's conversion of the scalar is exact; separate mul / mul / add
        # kernels round each result like numpy (no fused multiply-add)
        y = torch.mul(y_last, float(np.float32(alpha))) + torch.mul(p, float(np.float32(1.0 - alpha)))
    if cut:
        y = y.masked_fill(y < float(np.float32(cut)), 0.0)
    return y, (p.clone() if store_raw else y)


def scc_phase(stage, epoch, warmup_epochs):
    """``(frozen, store_raw)`` for an epoch of a stage (see :func:`scc_update`)."""
    return epoch < warmup_epochs, stage == 0 and epoch == warmup_epochs - 1


def label_stats(labels, bins=10):
    """Summary of soft labels: mean, fraction zeroed, fraction below 0.5 and
    a histogram over [0, 1]."""
    labels = np.asarray(labels, dtype=np.float64)
    return {
        "label_mean": float(labels.mean()) if labels.size else None,
        "label_zero_fraction": float((labels == 0).mean()) if labels.size else None,
        "label_below_half": float((labels < 0.5).mean()) if labels.size else None,
        "label_histogram": np.histogram(np.clip(labels, 0, 1), bins=bins, range=(0.0, 1.0))[0].tolist(),
    }


def zeroed_summary(labels, cut=0.1, probability="official", tau=None):
    """What the SCC labels of a fit came to: ``zeroed`` (share cut to 0),
    ``near_zero`` (share below the health check's
    :data:`~fiftyone_ncl.core.health.LABEL_ZERO`, what its ``labels`` check
    counts), ``mean``, ``n``, and the ``cut``, ``scc_probability`` and
    ``tau`` that produced them."""
    labels = np.asarray(labels, dtype=np.float64)
    n = int(labels.size)
    stats = label_stats(labels)
    return {
        "zeroed": stats["label_zero_fraction"] if n else 0.0,
        "near_zero": float((labels < LABEL_ZERO).mean()) if n else 0.0,
        "mean": stats["label_mean"],
        "n": n,
        "cut": cut,
        "scc_probability": probability,
        "tau": tau,
    }


def zeroed_warning(stats, threshold=ZEROED_WARNING):
    """The warning for a fit whose labels are mostly cut to 0, else None."""
    if not stats or stats["n"] == 0 or stats["zeroed"] <= threshold:
        return None
    head = ("crcl: %.0f%% of the SCC labels were cut to 0 (below cut=%s): those pairs trained on the "
            "complementary term alone and their soft labels (the {key}_label field) are 0"
            % (100 * stats["zeroed"], stats["cut"]))
    if stats["scc_probability"] == "official":
        soft = "" if stats.get("tau") is None else " or the softmax is soft (tau=%s)" % stats["tau"]
        return head + (". The official in-batch probability P_ii of a clean pair stays low when many captions fit "
                       "an image about equally (captions per class, near-duplicates: about 1/k for k of them)%s; "
                       "scc_probability='relative' (P_ii / max_j P_ij, many-to-many-aware) keeps clean pairs' "
                       "labels. The confidence ranking does not come from the labels: rank and decide by it"
                       % soft)
    return head + (" even with scc_probability='relative': the model rarely ranks a pair's own caption first; "
                   "rank and decide by confidence, not by the labels")


def stage_seed(seed, stage):
    """Seed used before building stage ``stage``'s network (stage 0: ``seed``)."""
    return int(seed) + 1000 * int(stage)


def data_fingerprint(data):
    """A hash of a :class:`PairData`'s inputs, to recognise the training data."""
    h = hashlib.blake2b(digest_size=16)
    images = data.images
    if hasattr(images, "paths"):  # lazily loaded images: their files
        h.update("\n".join(images.paths).encode())
        images = np.zeros(0)
    for array in (data.image_index, data.texts, images):
        array = np.ascontiguousarray(array)
        h.update(("%s%s" % (array.dtype.str, array.shape)).encode())
        h.update(memoryview(array).cast("B"))
    return h.hexdigest()


# method --------------------------------------------------------------------


@dataclass
class CRCLConfig(TrainConfig):
    """Options of CRCL; defaults are the official code's.

    Attributes:
        stages: post-warm-up epochs of each self-refining stage (official
            ``--schedules 6,6,6,25``); stage k runs ``warmup_epochs +
            stages[k]`` epochs. An int k is a shortcut for k equal stages of
            ``epochs`` epochs; otherwise ``epochs`` is ignored
        warmup_epochs: epochs per stage with frozen labels (2)
        alpha: momentum of the label update (0.8)
        cut: labels below it are set to 0 (0.1; 0 disables)
        lam: weight of the complementary term (5, hard-coded officially)
        lr_update: LR x0.1 every ``lr_update`` epochs, counted within a stage
            and including warm-up (official 15: the 8-epoch refining stages
            never decay, the long final stage decays once); None: constant LR
        mask_same_image: leave other captions of the same image out of the
            in-batch softmaxes (see the module docstring)
        reference_sets: number of seeded negative sets used to score
            (DisNCL's ``ref_sets``; either name is accepted)
        scc_probability: SCC's per-pair estimate: ``"official"`` (the
            paper's in-batch ``P_ii``, both directions averaged) or
            ``"relative"`` (``P_ii / max_j P_ij`` per direction, averaged:
            usable labels with many-to-many captions, see the module
            docstring); None (default) follows the start: ``"relative"``
            from the CCA start, ``"official"`` from random heads
        init: ``"auto"`` (default): over frozen embeddings the heads start
            from the linear CCA solution (``"cca"``), with towers trained
            end to end at random (``"random"``, the official start); see
            :mod:`fiftyone_ncl.core.start`
        head: None (default) = ``"linear"`` from the CCA start, ``"mlp"``
            otherwise; or as :class:`TrainConfig` says
        tau: None (default) = 0.2 from the CCA start, 0.05 (the official
            temperature) otherwise; or a number, or ``"auto"``

    ``init="random", head="mlp", tau=0.05, scc_probability="official"`` is
    the official code's configuration on any input.
    """

    stages: tuple = (6, 6, 6, 25)
    warmup_epochs: int = 2
    alpha: float = 0.8
    cut: float = 0.1
    lam: float = 5.0
    lr_update: int = 15
    mask_same_image: bool = True
    reference_sets: int = 4
    scc_probability: str = None
    init: str = "auto"
    head: str = None
    tau: float = None

    def __post_init__(self):
        if isinstance(self.stages, (int, np.integer)) and not isinstance(self.stages, bool):
            self.stages = (int(self.epochs),) * int(self.stages)
        self.stages = tuple(int(s) for s in self.stages)
        if not self.stages or min(self.stages) < 0:
            raise ValueError("stages must be a non-empty list of epochs >= 0, got %r" % (self.stages,))
        if self.warmup_epochs < 0:
            raise ValueError("warmup_epochs must be >= 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")
        if not 0.0 <= (self.cut or 0.0) < 1.0:
            raise ValueError("cut must be in [0, 1)")
        if self.lr_update is not None and self.lr_update < 1:
            raise ValueError("lr_update must be >= 1 or None")
        check_start_options(self.init, self.head, self.tau)
        if self.scc_probability is not None and self.scc_probability not in SCC_PROBABILITIES:
            raise ValueError("scc_probability must be one of %s, got %r"
                             % (", ".join(map(repr, SCC_PROBABILITIES)), self.scc_probability))

    def stage_epochs(self, stage):
        return self.warmup_epochs + self.stages[stage]


class CRCLMethod(CorrespondenceMethod):
    """CRCL (ACL + SCC with self-refining stages).

    After :meth:`fit`, ``labels`` holds one SCC label per caption,
    ``history`` one record per epoch (loss terms, LR, label statistics) and
    ``stage_history`` one per stage (label statistics and histogram) and
    ``label_stats`` what the final labels came to (:func:`zeroed_summary`:
    ``zeroed``, the share cut to 0, also in the last history and stage
    records as ``labels_zeroed``); a warning is logged when most labels are
    cut (> :data:`ZEROED_WARNING`).

    Scores: ``similarity`` is the cosine of each pair in the learned space;
    ``confidence`` the clean probability of a 2-component GMM on each pair's
    loss against fixed seeded sets of ``batch_size - 1`` negatives
    (:func:`~fiftyone_ncl.core.reference.reference_scores`), which unlike the
    in-batch p does not depend on batch composition; ``label`` the SCC labels
    when the scored data is the training data (same input fingerprint, also
    after loading a checkpoint of that run), else None.
    """

    name = "crcl"
    config_cls = CRCLConfig
    trains = True
    network_attr = "model"
    checkpoint_extras = ("scc_labels",)
    statistic_sign = -1  # the reference loss
    output_fields = ("label",)
    form_options = ("stages", "warmup_epochs", "device", "seed")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.model = None
        self._init = None
        self.labels = None
        self.label_stats = None
        self.stage_history = []
        self._spec = None
        self._fingerprint = None

    # hooks (no-ops; for tests and diagnostics)

    def on_stage_start(self, stage, model, optimizer):
        """Called after stage ``stage``'s network and optimiser are built."""

    def on_stage_end(self, stage, model, optimizer):
        """Called after the last epoch of stage ``stage``."""

    # training

    def fit(self, data, progress=True):
        cfg = self.config
        if data.n_pairs < 2:
            raise ValueError("CRCL needs at least 2 pairs (in-batch negatives), got %d" % data.n_pairs)
        device = resolve_device(cfg.device)
        dtype = amp_dtype(device, cfg.amp)
        inputs = DeviceInputs(data, device)
        self.config = resolve_start(cfg, data, per_start=SCC_BY_START)
        self._select_heads(data)
        cfg = self.config
        self.labels = np.ones(data.n_pairs, dtype=np.float32)
        self.history, self.stage_history = [], []
        # every stage restarts from the same starting point (random init or
        # the CCA solution): only the labels carry over
        self._init = initial_solution(cfg, data)
        n_batches = int(np.ceil(data.n_pairs / cfg.batch_size))
        total = sum(cfg.stage_epochs(k) for k in range(len(cfg.stages))) * n_batches
        with Progress(total, "crcl", progress) as bar:
            for stage in range(len(cfg.stages)):
                self._fit_stage(stage, data, inputs, device, dtype, bar)
        self._spec = data.spec()
        self._fingerprint = data_fingerprint(data)
        self._record_label_stats()
        self.fitted = True
        return self

    def _record_label_stats(self):
        cfg = self.config
        self.label_stats = self._summarize_labels()
        for record in (self.history[-1:] + self.stage_history[-1:]):
            record.update(labels_zeroed=self.label_stats["zeroed"], scc_probability=cfg.scc_probability)
        message = zeroed_warning(self.label_stats)
        if message:
            logger.warning(message)

    def _summarize_labels(self):
        """:func:`zeroed_summary` of the current labels under this config."""
        c = self.config
        return zeroed_summary(self.labels, c.cut, c.scc_probability, c.tau)

    def _fit_stage(self, stage, data, inputs, device, dtype, bar):
        with seeded(stage_seed(self.config.seed, stage)):
            self._train_stage(stage, data, inputs, device, dtype, bar)

    def _train_stage(self, stage, data, inputs, device, dtype, bar):
        cfg = self.config
        generator = make_generator(stage_seed(cfg.seed, stage))
        model = build_dual_encoder(cfg, data, init=self._init).to(device).train()
        graphs = use_cuda_graphs(cfg, device, dtype, inputs)
        optimizer = make_optimizer(model.parameters(), cfg, capturable=graphs)
        stepper = Stepper(optimizer, model.parameters(), cfg.grad_clip, dtype)
        self.model = model
        self.on_stage_start(stage, model, optimizer)
        # the labels live on the training device for the whole fit (read
        # back into self.labels once per epoch); a step reads and writes its
        # batch's rows there with scc_update_torch, without a host round trip
        labels = torch.as_tensor(self.labels, dtype=torch.float32).to(device)
        # (loss, active, complementary) x pairs in float32 as before; p in float64
        sums = torch.zeros(3, dtype=torch.float32, device=device)
        p_sum = torch.zeros((), dtype=torch.float64, device=device)
        phase = {}

        def step(batch):
            x_img, x_txt, rows = inputs.batch(batch)
            with autocast(device, dtype, cache=not graphs):
                # under torchrun: this rank's slice, gathered into the whole batch
                v = split_forward(model.encode_image, x_img)
                t = split_forward(model.encode_text, x_txt)
            logits = similarity_logits(v, t, cfg.tau)
            exclude = inputs.same_image(rows) if cfg.mask_same_image else None
            # one pair of log-softmaxes gives both SCC's p and the loss
            log_i2t, log_t2i = in_batch_log_probs(logits, exclude)
            p = matching_probability_from_log_probs(log_i2t, log_t2i, cfg.scc_probability)
            weight, stored = scc_update_torch(labels[batch], p, cfg.alpha, cfg.cut, **phase)
            labels[batch] = stored
            terms = acl_from_log_probs(log_i2t, log_t2i, weight, cfg.lam)
            stepper.step(terms.loss)
            sums.add_(len(batch) * torch.stack(
                [terms.loss.detach(), terms.active.mean().detach(), terms.complementary.mean().detach()]
            ))
            p_sum.add_(p.double().sum())

        runner = StepGraphs(step, graphs, zero_grad=lambda: optimizer.zero_grad(set_to_none=True))
        every = report_interval(bar.total)
        for epoch in range(cfg.stage_epochs(stage)):
            lr = cfg.lr * (0.1 ** (epoch // cfg.lr_update) if cfg.lr_update else 1.0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            frozen, store_raw = scc_phase(stage, epoch, cfg.warmup_epochs)
            phase.update(frozen=frozen, store_raw=store_raw)
            sums.zero_()
            p_sum.zero_()
            label_mean = float(self.labels.mean(dtype=np.float64))
            for batch in device_epoch_batches(data.n_pairs, cfg.batch_size, generator, device):
                runner(batch, key=(frozen, store_raw, lr))
                bar.tick(lambda: dict(stage=stage, epoch=epoch, label=label_mean), every)
            self.labels = labels.cpu().numpy().copy()  # a copy: on CPU .numpy() would share the live tensor
            means = (sums / data.n_pairs).tolist()
            p_mean = float(p_sum) / data.n_pairs
            bar.flush(lambda: dict(stage=stage, epoch=epoch, loss=means[0], label=float(self.labels.mean())))
            stats = label_stats(self.labels)
            stats.pop("label_histogram")
            self.history.append(
                dict(
                    stage=stage,
                    epoch=epoch,
                    frozen=bool(frozen),
                    lr=lr,
                    loss=float(means[0]),
                    active=float(means[1]),
                    complementary=float(means[2]),
                    p_mean=p_mean,
                    **stats,
                )
            )
        if runner.captures or runner.failure:
            self.history[-1]["cuda_graphs"] = runner.stats()
        sync_buffers(model)
        self.stage_history.append(dict(stage=stage, epochs=cfg.stage_epochs(stage), scc_probability=cfg.scc_probability,
                                       **label_stats(self.labels)))
        logger.info("crcl stage %d: %s", stage, self.stage_history[-1])
        self.on_stage_end(stage, model, optimizer)

    # scoring

    def is_training_data(self, data):
        """Whether ``data`` is the data the labels were fitted on (same
        number of pairs and same inputs, by fingerprint)."""
        return (
            self.labels is not None
            and self._fingerprint is not None
            and len(self.labels) == data.n_pairs
            and data_fingerprint(data) == self._fingerprint
        )

    def embed(self, data):
        """L2-normalised (image, caption) embeddings of the final model."""
        if self.model is None:
            raise ValueError("method %r must be fitted (or loaded) before scoring" % self.name)
        device = resolve_device(self.config.device)
        self.model.to(device)
        return encode_all(self.model, DeviceInputs(data, device), self.config)

    def score(self, data, progress=True):
        cfg = self.config
        with Progress(3, "crcl score", progress) as bar:
            img, txt = self.embed(data)
            bar.update()
            sim = pair_similarity(img, txt, data.image_index)
            bar.update()
            confidence, ref_loss, ref_prob, fit = reference_confidence(
                img, txt, data.image_index, cfg.tau, cfg.batch_size, n_sets=cfg.reference_sets, seed=cfg.seed
            )
            bar.update()
        label = self.labels.copy() if self.is_training_data(data) else None
        info = {
            "space": "crcl-heads" if self.input_spec().get("towers", "frozen") == "frozen"
            else "crcl-%s" % self.input_spec()["towers"],
            "history": list(self.history),
            "selection": self.selection,
            "stages": list(self.stage_history),
            "label_stats": dict(self.label_stats) if self.label_stats else None,
            "calibration": fit.to_dict() if fit is not None else "none: reference losses are constant",
            "calibration_input": "reference loss",
            "confidence_source": "GMM on the loss against %d seeded sets of %d negatives"
            % (cfg.reference_sets, cfg.batch_size - 1),
            "summary": {
                "reference_probability_mean": float(ref_prob.mean()),
                "reference_loss_mean": float(ref_loss.mean()),
                "confidence_mean": float(confidence.mean()),
                "confidence_below_half": float((confidence < 0.5).mean()),
                "similarity_mean": float(sim.mean()),
                "labels": "training labels" if label is not None else "none: not the training data",
                **(label_stats(label) if label is not None else {}),
            },
        }
        return PairScores(
            confidence=confidence,
            similarity=sim,
            calibration_score=ref_loss,
            image_embeddings=img,
            text_embeddings=txt,
            label=label,
            info=info,
        )

    # checkpoints: the network plus the SCC labels and the training data's
    # fingerprint (labels apply only to the pairs they were refined on)

    def _build_network(self, data):
        return build_dual_encoder(self.config, data)

    def state_dict(self):
        state = super().state_dict()
        if state and self.labels is not None:
            state["scc_labels"] = torch.from_numpy(np.asarray(self.labels, dtype=np.float32))
        return state

    def input_spec(self):
        if not self._spec:
            return {}
        return dict(self._spec, train_fingerprint=self._fingerprint)

    def _build_for(self, spec):
        if not spec:
            return
        super()._build_for({k: v for k, v in spec.items() if k != "train_fingerprint"})
        self._fingerprint = spec.get("train_fingerprint")

    def load_state_dict(self, state):
        state = dict(state)
        labels = state.pop("scc_labels", None)
        self.labels = None if labels is None else labels.float().numpy().copy()
        self.label_stats = None if self.labels is None else self._summarize_labels()
        super().load_state_dict(state)
