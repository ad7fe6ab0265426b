"""The method interface and registry.

A method takes a :class:`~fiftyone_ncl.core.data.PairData`, optionally trains
on it (:meth:`CorrespondenceMethod.fit`), and scores every pair
(:meth:`CorrespondenceMethod.score`). Methods register themselves by name so
that the SDK, the operators and the benchmark pick up a new one automatically.
"""
import dataclasses
import json
import logging

import numpy as np

logger = logging.getLogger(__name__)

_METHODS = {}


def register_method(cls):
    """Class decorator adding a method to the registry under ``cls.name``."""
    _METHODS[cls.name] = cls
    return cls


def list_methods():
    """Names of the registered methods, in registration order."""
    _import_builtin_methods()
    return list(_METHODS)


def get_method_class(name):
    """The method class registered as ``name``."""
    _import_builtin_methods()
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(
            "unknown method %r; available: %s" % (name, ", ".join(_METHODS))
        ) from None


def build_method(name, **kwargs):
    """Instantiates method ``name`` with its config options."""
    return get_method_class(name)(**kwargs)


def _import_builtin_methods():
    # pylint: disable=unused-import,import-outside-toplevel
    from fiftyone_ncl.core import baselines  # noqa: F401

    for module in ("crcl", "disncl"):
        try:
            __import__("fiftyone_ncl.core.%s" % module)
        except ModuleNotFoundError as e:
            if e.name != "fiftyone_ncl.core.%s" % module:
                raise


def make_config(config_cls, kwargs, method_name):
    """Builds a config dataclass, naming any option the method does not take."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise TypeError(
            "method %r got unknown option(s) %s; it accepts: %s"
            % (method_name, ", ".join(unknown), ", ".join(sorted(names)))
        )
    return config_cls(**kwargs)


class CorrespondenceMethod:
    """Base class of all methods.

    Subclasses set ``name``, ``config_cls`` (a dataclass of options) and
    ``trains``, and implement :meth:`fit` and :meth:`score`. A method whose
    trained state is one torch module names its attribute in
    ``network_attr``, sets ``self._spec = data.spec()`` when it builds it, and
    implements :meth:`_build_network`: checkpoints then round-trip.
    """

    name = None
    config_cls = None
    trains = False
    # attribute holding the trained torch module (None: nothing to save)
    network_attr = None
    # config options the App's form exposes (the rest keep their defaults)
    form_options = ("device", "seed")

    def __init__(self, **kwargs):
        self.config = make_config(self.config_cls, kwargs, self.name)
        self.fitted = False
        self.history = []

    def fit(self, data, progress=True):
        """Trains on ``data``; returns self."""
        self.fitted = True
        return self

    def score(self, data, progress=True):
        """Scores every pair of ``data``; returns a
        :class:`~fiftyone_ncl.core.data.PairScores`."""
        raise NotImplementedError

    def config_dict(self):
        return dataclasses.asdict(self.config)

    # checkpoints --------------------------------------------------------

    def _network(self):
        return getattr(self, self.network_attr, None) if self.network_attr else None

    def _build_network(self, data, pretrained=True):
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

    def _build_for(self, spec):
        """Builds untrained networks for an :meth:`input_spec`."""
        if not spec or not self.network_attr:
            return
        from fiftyone_ncl.core.data import PairData
        from fiftyone_ncl.core.training import seed_everything

        seed_everything(self.config.seed)
        setattr(self, self.network_attr, self._build_network(PairData.from_spec(spec), pretrained=False))
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

    @staticmethod
    def load(path, **overrides):
        """Loads a method saved by :meth:`save`; ``overrides`` replace config
        options that do not affect the network shapes (e.g. ``device``)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as e:
            raise ValueError("cannot read checkpoint file %r: %s" % (str(path), e)) from e
        if meta.get("format") != "fiftyone-ncl/1":
            raise ValueError("%r is not a fiftyone-ncl checkpoint" % str(path))
        config = json.loads(meta["config"])
        config.update(overrides)
        method = build_method(meta["method"], **config)
        method._build_for(json.loads(meta["input_spec"]))
        method.load_state_dict(load_file(str(path)))
        method.fitted = True
        return method


def pair_similarity(image_embeddings, text_embeddings, image_index, chunk_size=65536):
    """Cosine of each caption with its own image, without materialising the
    (P, d) gathered image matrix all at once."""
    image_index = np.asarray(image_index)
    out = np.empty(len(image_index), dtype=np.float32)
    for start in range(0, len(image_index), chunk_size):
        sl = slice(start, start + chunk_size)
        out[sl] = np.einsum(
            "ij,ij->i", image_embeddings[image_index[sl]], text_embeddings[sl]
        )
    return out


def l2_normalize(x):
    """Rows of ``x`` scaled to unit norm. Returns ``x`` itself (no copy) when
    it already is, which is what the encoders produce."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    if np.all(np.abs(norms - 1.0) < 1e-3):
        return x
    if np.any(norms == 0):
        raise ValueError("%d embeddings have zero norm" % int((norms == 0).sum()))
    return x / norms[:, None]
