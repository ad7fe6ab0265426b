"""The interface every method implements.

A method takes a :class:`~fiftyone_ncl.core.data.PairData`, optionally trains
on it (:meth:`CorrespondenceMethod.fit`), and scores every pair
(:meth:`CorrespondenceMethod.score`). The registry
(:mod:`fiftyone_ncl.core.registry`) sits above the concrete methods and lists
them by name for the SDK, the operators and the benchmark.
"""
import dataclasses
import json
import logging
import numbers
import warnings

import numpy as np

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.training import seeded

logger = logging.getLogger(__name__)

# Options that describe the inputs, not the method: they moved to the input
# recipe (fiftyone_ncl.recipes); checkpoints written before still carry them.
MOVED_TO_INPUTS = ("towers", "clip_model", "clip_pretrained")
# Options renamed; the old name keeps working with a warning.
RENAMED_OPTIONS = {"ref_sets": "reference_sets"}


def make_config(config_cls, kwargs, method_name):
    """Builds a config dataclass, naming any option the method does not take."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    moved = sorted(set(kwargs) & set(MOVED_TO_INPUTS))
    if moved:
        warnings.warn(
            "method option(s) %s are deprecated and ignored here: the inputs decide the towers "
            "(pass them to compute_correspondence, or build PairData with pixels / open_clip inputs)"
            % ", ".join(moved),
            DeprecationWarning,
            stacklevel=3,
        )
        kwargs = {k: v for k, v in kwargs.items() if k not in MOVED_TO_INPUTS}
    for old, new in RENAMED_OPTIONS.items():
        if old in kwargs:
            warnings.warn("option %r is now called %r" % (old, new), DeprecationWarning, stacklevel=3)
            kwargs.setdefault(new, kwargs.pop(old))
            kwargs.pop(old, None)
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise TypeError(
            "method %r got unknown option(s) %s; it accepts: %s"
            % (method_name, ", ".join(unknown), ", ".join(sorted(names)))
        )
    for name in _POSITIVE_INTS:
        if name in kwargs:
            value = kwargs[name]
            if name == "epochs" and value == "auto":
                continue  # chosen on held-out pairs (fiftyone_ncl.core.selection)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError("method %r: %s must be a whole number >= 1, got %r" % (method_name, name, value))
    return config_cls(**kwargs)


# options that make no sense below 1 (epochs=0 would score with an untrained model)
_POSITIVE_INTS = ("epochs", "batch_size", "eval_batch_size", "hidden_dim", "embed_dim")


class CorrespondenceMethod:
    """Base class of all methods.

    Subclasses set ``name``, ``config_cls`` (a dataclass of options) and
    ``trains``, and implement :meth:`fit` and :meth:`score`. A method whose
    trained state is one torch module names its attribute in
    ``network_attr``, sets ``self._spec = data.spec()`` when it builds it, and
    implements :meth:`_build_network`: checkpoints then round-trip
    (:meth:`save`, :func:`fiftyone_ncl.core.registry.load_method`).
    """

    name = None
    config_cls = None
    trains = False
    # attribute holding the trained torch module (None: nothing to save)
    network_attr = None
    # config options the App's form exposes (the rest keep their defaults)
    form_options = ("device", "seed")
    # tensors a checkpoint may hold beside the network's (e.g. CRCL's labels)
    checkpoint_extras = ()
    # per-pair outputs besides confidence and similarity ("label"), and the
    # embedding spaces its scores export (PairScores.vectors), so the fields
    # a run writes are known before it trains
    output_fields = ()
    # whether fit learns from the judgements in PairData.labels (the SDK's
    # ``labels`` argument is refused for methods that would ignore it)
    uses_labels = False

    def __init__(self, **kwargs):
        self.config = make_config(self.config_cls, kwargs, self.name)
        self.fitted = False
        self.history = []
        self.selection = None

    def _select_heads(self, data):
        """Resolves ``head`` / ``tau`` / ``epochs`` set to ``"auto"`` on pairs
        held out from ``data`` (:func:`fiftyone_ncl.core.selection.resolve_config`);
        the concrete values replace them in the config (and the checkpoint),
        the record of the choice is kept in ``selection``."""
        from fiftyone_ncl.core.selection import needs_selection, resolve_config

        if needs_selection(self.config):
            self.config, self.selection = resolve_config(self.config, data)

    def fit(self, data, progress=True):
        """Trains on ``data``; returns self."""
        self.fitted = True
        return self

    def score(self, data, progress=True):
        """Scores every pair of ``data``; returns a
        :class:`~fiftyone_ncl.core.data.PairScores`."""
        raise NotImplementedError

    # +1 when PairScores.calibration_score rises with the chance that a pair
    # matches (similarities), -1 when it falls (losses)
    statistic_sign = 1

    def statistic(self, scores):
        """(P,) the score this method ranks pairs by, oriented so that higher
        means more likely matched (what the decision layer works on)."""
        raw = scores.calibration_score if scores.calibration_score is not None else scores.similarity
        return self.statistic_sign * np.asarray(raw, dtype=np.float64)

    def config_dict(self):
        return dataclasses.asdict(self.config)

    # checkpoints --------------------------------------------------------

    def _network(self):
        return getattr(self, self.network_attr, None) if self.network_attr else None

    def _build_network(self, data):
        """Builds the method's untrained torch module for ``data``'s shapes."""
        raise NotImplementedError

    def state_dict(self):
        """Tensors to save (empty for untrained methods)."""
        net = self._network()
        return {} if net is None else dict(net.state_dict())

    def load_state_dict(self, state):
        net = self._network()
        if net is not None:
            net.load_state_dict(state)
            net.eval()

    def input_spec(self):
        """Shapes the networks were built for (saved with checkpoints)."""
        return getattr(self, "_spec", None) or {}

    def check_inputs(self, data):
        """Raises a ValueError when a fitted network cannot take ``data``'s
        inputs (e.g. a checkpoint trained on 512-d embeddings given 384-d)."""
        spec = self.input_spec()
        if not spec:
            return
        got = data.spec()
        mismatch = [
            "%s %s, the data has %s" % (what, _shape(spec[key]), _shape(got[key]))
            for key, what in (("towers", "towers"), ("images", "image inputs"), ("texts", "caption inputs"))
            if key in spec and _shape(spec[key]) != _shape(got[key])
        ]
        if mismatch:
            raise ValueError("the %r model was trained on %s" % (self.name, "; ".join(mismatch)))

    def _build_for(self, spec):
        """Builds untrained networks for an :meth:`input_spec`."""
        if not spec or not self.network_attr:
            return
        with seeded(self.config.seed):
            setattr(self, self.network_attr, self._build_network(PairData.from_spec(spec)))
        self._spec = spec

    def save(self, path):
        """Saves the trained networks and config to a safetensors file.

        Only tensors and a JSON header are written: loading never unpickles.
        """
        from safetensors.torch import save_file

        if not self.fitted:
            raise ValueError("method %r has not been fitted; nothing to save" % self.name)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {
            "method": self.name,
            "config": json.dumps(self.config_dict()),
            "input_spec": json.dumps(self.input_spec()),
            "format": "fiftyone-ncl/1",
        }
        save_file(state, str(path), metadata=meta)
        return path


def _shape(value):
    return value if isinstance(value, str) else "x".join(str(int(d)) for d in value) + "-d"
