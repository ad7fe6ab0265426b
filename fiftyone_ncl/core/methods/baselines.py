"""The baselines every result is compared with.

``cosine``: the cosine of each pair, mapped to [0, 1] as ``(1 + s) / 2``. It
is *not* calibrated (what CLIP-score filtering uses). ``gmm``: the same cosine
turned into a clean probability by a 2-component Gaussian mixture fitted on
this dataset's similarities.

Both score in the given embedding space when it is a shared one (e.g. image
and text embeddings of one CLIP model). Otherwise (different encoders, or
pixels) they first fit plain InfoNCE heads on the collection's own pairs, the
"baseline trained on the same data" the trained methods must beat.
"""
from dataclasses import dataclass, fields

import numpy as np

from fiftyone_ncl.core.alignment import DeviceInputs, encode_all, train_infonce
from fiftyone_ncl.core.calibration import clean_probability
from fiftyone_ncl.core.data import PairScores
from fiftyone_ncl.core.methods.base import CorrespondenceMethod
from fiftyone_ncl.core.nets import build_dual_encoder, initial_solution
from fiftyone_ncl.core.training import TrainConfig, make_generator, resolve_device, seeded
from fiftyone_ncl.core.vectors import normalize_rows, pair_similarity


@dataclass
class BaselineConfig(TrainConfig):
    """Options of the baselines.

    Attributes:
        train_heads: True to always fit plain InfoNCE heads first, False to
            never (the embeddings must then share a space), None to fit them
            only when the inputs are not a shared space
    """

    train_heads: bool = None


class CosineMethod(CorrespondenceMethod):
    """Cosine similarity of each pair (uncalibrated confidence ``(1+s)/2``)."""

    name = "cosine"
    config_cls = BaselineConfig
    trains = False
    network_attr = "model"
    form_options = ("train_heads", "epochs", "device")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.model = None
        self._spec = None

    def uses_heads(self, data):
        """Whether heads must be trained to put ``data`` in one space."""
        if data.towers != "frozen":
            return True
        if self.config.train_heads is not None:
            return bool(self.config.train_heads)
        return not data.joint_space

    def fit(self, data, progress=True):
        if not self.uses_heads(data):
            self._check_raw_space(data)
            self.fitted = True
            return self
        self._select_heads(data)
        with seeded(self.config.seed):
            self.model = build_dual_encoder(self.config, data, init=initial_solution(self.config, data))
            self._spec = data.spec()
            _, self.history = train_infonce(
                self.model, data, self.config, make_generator(self.config.seed), progress=progress,
                desc="%s heads" % self.name,
            )
        self.fitted = True
        return self

    def adopt_fit(self, other):
        """Takes over the fitted heads of another baseline with the same
        options (``gmm`` after ``cosine``: they differ only in calibration),
        instead of training the same heads twice; returns self."""
        if not isinstance(other, CosineMethod) or not other.fitted or other.training_options() != self.training_options():
            raise ValueError("only a fitted cosine/gmm/neighbors baseline with the same training options can be adopted")
        self.model, self._spec, self.history = other.model, other._spec, list(other.history)
        self.fitted = True
        return self

    def training_options(self):
        """The options that decide the heads (those of :class:`BaselineConfig`):
        two baselines with equal ones train the very same heads."""
        names = [f.name for f in fields(BaselineConfig)]
        return {n: getattr(self.config, n) for n in names}

    def _check_raw_space(self, data):
        if data.image_dim != data.text_dim:
            raise ValueError(
                "image embeddings are %d-d and caption embeddings %d-d: they are not in "
                "one space, so their cosine is undefined. Use embeddings from one joint "
                "model (e.g. CLIP) or let the method train heads (train_heads=True)"
                % (data.image_dim, data.text_dim)
            )

    def embed(self, data):
        """The (image, caption) embeddings this method scores in."""
        if self.model is None:
            if self.uses_heads(data):
                raise ValueError("method %r must be fitted before scoring" % self.name)
            self._check_raw_space(data)
            return normalize_rows(data.images, "image embeddings"), normalize_rows(data.texts, "caption embeddings")
        device = resolve_device(self.config.device)
        self.model.to(device)
        return encode_all(self.model, DeviceInputs(data, device), self.config)

    def score(self, data, progress=True):
        img, txt = self.embed(data)
        sim = pair_similarity(img, txt, data.image_index)
        confidence, info = self.confidence_from_similarity(sim)
        info["space"] = "infonce-heads" if self.model is not None else "given"
        info["history"] = list(self.history)
        info["calibration_input"] = "similarity"
        if self.selection is not None:
            info["selection"] = self.selection
        return PairScores(
            confidence=confidence,
            similarity=sim,
            calibration_score=sim,
            image_embeddings=img,
            text_embeddings=txt,
            info=info,
        )

    def confidence_from_similarity(self, sim):
        return np.clip((1.0 + sim) / 2.0, 0.0, 1.0), {"calibration": "none: (1 + cosine) / 2"}

    # checkpoints

    def _build_network(self, data):
        return build_dual_encoder(self.config, data)


class GMMMethod(CosineMethod):
    """Cosine calibrated per dataset by a 2-component Gaussian mixture."""

    name = "gmm"

    def confidence_from_similarity(self, sim):
        prob, fit = clean_probability(sim, higher_is_clean=True, seed=self.config.seed)
        calibration = fit.to_dict() if fit is not None else "none: similarities are constant"
        return prob, {"calibration": calibration}
