"""``neighbors``: the training-free multimodal-neighbour score as a method.

Scores each pair with :func:`fiftyone_ncl.core.neighbors.neighbor_scores`
(LEMoN-style neighbour terms plus the hubness-corrected cosine, CSLS) in one
shared space:

* the given embeddings when they already are one space (one CLIP model, or a
  DisNCL run's ``mii_image`` / ``mii_text`` fields, recorded as one space);
* otherwise the space of the plain InfoNCE heads the ``cosine`` / ``gmm``
  baselines train on the collection's own pairs (this class *is* that
  baseline with another score: same heads, same options, and ``adopt_fit``
  takes over heads a baseline already trained).

The label-free default scores with the pair's own distance plus its
hubness-corrected one (``cross + csls``, k = 5), chosen on the benchmark
suite (see :mod:`fiftyone_ncl.core.neighbors`). When a person has
judged some pairs (``PairData.labels``: 1 right, 0 wrong, -1 unknown; the
SDK's ``labels`` argument), :meth:`NeighborsMethod.fit` fits the weights of
the four distances on them (:func:`~fiftyone_ncl.core.neighbors.fit_neighbor_weights`),
as LEMoN fits its weights on a labelled split.

The confidence is the calibrated clean probability of the neighbour score
(one call to :func:`fiftyone_ncl.core.calibration.clean_probability`).
"""
from dataclasses import dataclass

import numpy as np
import torch

from fiftyone_ncl.core.calibration import clean_probability
from fiftyone_ncl.core.data import PairScores
from fiftyone_ncl.core.methods.baselines import BaselineConfig, CosineMethod
from fiftyone_ncl.core.neighbors import (
    BACKENDS,
    COMPONENTS,
    DEFAULT_K,
    DEFAULT_TAU_NEIGHBOR,
    DEFAULT_TAU_PAIR,
    DEFAULT_WEIGHTS,
    METRICS,
    NeighborWeights,
    fit_neighbor_weights,
    neighbor_scores,
)
from fiftyone_ncl.core.training import resolve_device
from fiftyone_ncl.core.vectors import pair_similarity

# LEMoN caps its reference set at 50k; above it neighbours are searched among
# a seeded random subset, which keeps the cost linear in the collection
DEFAULT_MAX_REFERENCE = 50_000
_WEIGHT_KEYS = ("weights", "intercept", "center", "scale")
_PREFIX = "neighbor_weights."


@dataclass
class NeighborsConfig(BaselineConfig):
    """Options of ``neighbors`` (plus those of the heads, used only when the
    inputs are not one space: see :class:`~fiftyone_ncl.core.methods.baselines.BaselineConfig`).

    Attributes:
        k: neighbours per side
        weights: 4 weights of the standardised distances ``cross``, ``csls``,
            ``image_side``, ``text_side``; None = the label-free default
            (``cross + csls``). Weights fitted from labels replace them
        metric: ``"cosine"`` or ``"euclidean"`` (LEMoN's)
        tau_neighbor, tau_pair: LEMoN's neighbour weights
        backend: neighbour search, ``"auto"`` (torch, on the method's device),
            ``"torch"``, ``"exact"`` (numpy) or ``"sklearn"``
        max_reference: search neighbours among at most this many images and
            captions (a seeded subset above it); None = all
        label_c: inverse regularisation of the weights fitted from labels
    """

    k: int = DEFAULT_K
    weights: tuple = None
    metric: str = "cosine"
    tau_neighbor: float = DEFAULT_TAU_NEIGHBOR
    tau_pair: float = DEFAULT_TAU_PAIR
    backend: str = "auto"
    max_reference: int = DEFAULT_MAX_REFERENCE
    label_c: float = 1.0


class NeighborsMethod(CosineMethod):
    """Training-free multimodal-neighbour score (LEMoN-style, hubness-corrected)."""

    name = "neighbors"
    config_cls = NeighborsConfig
    trains = False
    uses_labels = True
    form_options = ("k", "train_heads", "epochs", "device")
    checkpoint_extras = tuple(_PREFIX + key for key in _WEIGHT_KEYS)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.config
        if isinstance(c.k, bool) or not isinstance(c.k, (int, np.integer)) or c.k < 1:
            raise ValueError("method 'neighbors': k must be a whole number >= 1, got %r" % (c.k,))
        if c.metric not in METRICS:
            raise ValueError("method 'neighbors': metric must be one of %s, got %r" % (", ".join(METRICS), c.metric))
        if c.backend not in BACKENDS:
            raise ValueError("method 'neighbors': backend must be one of %s, got %r" % (", ".join(BACKENDS), c.backend))
        if c.weights is not None:
            w = np.asarray(c.weights, dtype=np.float64)
            if w.shape != (len(COMPONENTS),) or not np.all(np.isfinite(w)):
                raise ValueError("method 'neighbors': weights must be %d numbers (%s), got %r"
                                 % (len(COMPONENTS), ", ".join(COMPONENTS), c.weights))
            self.config.weights = tuple(float(x) for x in w)
        if c.max_reference is not None and (isinstance(c.max_reference, bool) or c.max_reference < 1):
            raise ValueError("method 'neighbors': max_reference must be >= 1 or None, got %r" % (c.max_reference,))
        # weights fitted from a person's judgements (None: the configured ones)
        self.fitted_weights = None

    # fitting -------------------------------------------------------------

    def fit(self, data, progress=True):
        """Puts the inputs in one space (the baseline's heads when they are
        not one already), then fits the weights from ``data.labels`` when a
        person judged some pairs; returns self."""
        super().fit(data, progress=progress)
        self.fit_weights(data)
        return self

    def fit_weights(self, data):
        """Fits the weights of the four distances on the pairs ``data.labels``
        judges (1 right, 0 wrong, -1 / NaN unknown); nothing when there are
        no labels. Raises a ValueError when the labels do not hold both a
        right and a wrong pair. Returns self."""
        self.fitted_weights = None
        labels = data.labels
        if labels is None:
            return self
        labels = np.asarray(labels, dtype=np.float64)
        known = np.isfinite(labels) & (labels >= 0)
        if not known.any():
            return self
        n_right, n_wrong = int((labels[known] >= 0.5).sum()), int((labels[known] < 0.5).sum())
        if not n_right or not n_wrong:
            raise ValueError(
                "method 'neighbors': fitting its weights from labels needs pairs marked right and pairs "
                "marked wrong; got %d right and %d wrong" % (n_right, n_wrong)
            )
        img, txt = self.embed(data)
        components = self._neighbors(img, txt, data.image_index, weights=None, terms=COMPONENTS).components
        self.fitted_weights = fit_neighbor_weights(components, labels, C=self.config.label_c)
        return self

    def weights(self):
        """The :class:`~fiftyone_ncl.core.neighbors.NeighborWeights` this method scores with."""
        if self.fitted_weights is not None:
            return self.fitted_weights
        w = DEFAULT_WEIGHTS if self.config.weights is None else self.config.weights
        return NeighborWeights(np.asarray(w, dtype=np.float64),
                               info={"source": "default" if self.config.weights is None else "given"})

    # scoring --------------------------------------------------------------

    def embed(self, data):
        if self.model is None and self.fitted and self.uses_heads(data):
            raise ValueError(
                "this 'neighbors' model scores in the given space (it has no heads), but these inputs are "
                "not one space; fit it on them (without model=) so that it trains heads"
            )
        return super().embed(data)

    def _neighbors(self, img, txt, image_index, weights, terms):
        c = self.config
        device = resolve_device(c.device)
        return neighbor_scores(
            img, txt, image_index, k=c.k, weights=weights, metric=c.metric, tau_neighbor=c.tau_neighbor,
            tau_pair=c.tau_pair, backend=c.backend, max_reference=c.max_reference, seed=c.seed, terms=terms,
            device=device if device.type == "cuda" else None,
        )

    def score(self, data, progress=True):
        img, txt = self.embed(data)
        weights = self.weights()
        # the pair's own distance is cheap; a neighbour term only where it weighs
        terms = [t for t, w in zip(COMPONENTS, weights.weights) if w != 0 or t == "cross"]
        result = self._neighbors(img, txt, data.image_index, weights, terms)
        sim = pair_similarity(img, txt, data.image_index)
        confidence, calibration = self.confidence_from_score(result.score)
        info = dict(result.info)
        info.update(
            space="infonce-heads" if self.model is not None else "given",
            history=list(self.history),
            calibration=calibration,
            calibration_input="neighbour score",
            weights_info=dict(weights.info),
            intercept=float(weights.intercept),
        )
        return PairScores(
            confidence=confidence,
            similarity=sim,
            calibration_score=result.score,
            image_embeddings=img,
            text_embeddings=txt,
            info=info,
        )

    def confidence_from_score(self, score):
        """The clean probability of each pair from its neighbour score (one
        calibration call, shared with the other methods)."""
        prob, fit = clean_probability(score, higher_is_clean=True, seed=self.config.seed)
        return prob, fit.to_dict() if fit is not None else "none: the scores are constant"

    # checkpoints ------------------------------------------------------------

    def state_dict(self):
        state = super().state_dict()
        w = self.fitted_weights
        if w is not None:
            for key in _WEIGHT_KEYS:
                value = getattr(w, key)
                state[_PREFIX + key] = torch.as_tensor(np.atleast_1d(np.asarray(value, dtype=np.float64)))
        return state

    def load_state_dict(self, state):
        state = dict(state)
        mine = {k[len(_PREFIX):]: state.pop(k) for k in list(state) if k.startswith(_PREFIX)}
        if mine:
            values = {k: np.asarray(v.detach().cpu().numpy(), dtype=np.float64) for k, v in mine.items()}
            self.fitted_weights = NeighborWeights(
                values["weights"], float(values["intercept"][0]), values["center"], values["scale"],
                info={"source": "fitted (checkpoint)"},
            )
        if state:
            super().load_state_dict(state)

    def _build_for(self, spec):
        # a model fitted in the given space has no heads to build
        if spec and "images" in spec:
            super()._build_for(spec)
