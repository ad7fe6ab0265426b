"""The methods by name: listing, building and loading them.

This module sits above the concrete methods (it imports them; they never
import it), so the SDK, the operators and the benchmark pick up every method
from one place. Code outside the package can add its own method with
:func:`register_method`.
"""
import json

import torch

from fiftyone_ncl.core.checkpoint import check_shapes, read_header, read_tensors
from fiftyone_ncl.core.methods.base import MOVED_TO_INPUTS, CorrespondenceMethod, make_config
from fiftyone_ncl.core.methods.baselines import CosineMethod, GMMMethod
from fiftyone_ncl.core.methods.cca import CCAMethod
from fiftyone_ncl.core.methods.crcl import CRCLMethod
from fiftyone_ncl.core.methods.disncl import DisNCLMethod
from fiftyone_ncl.core.methods import ensemble as _ensemble
from fiftyone_ncl.core.methods.ensemble import EnsembleMethod
from fiftyone_ncl.core.methods.neighbors import NeighborsMethod

_METHODS = {
    cls.name: cls
    for cls in (CosineMethod, GMMMethod, CCAMethod, CRCLMethod, DisNCLMethod, NeighborsMethod, EnsembleMethod)
}


def register_method(cls):
    """Adds a :class:`CorrespondenceMethod` subclass under ``cls.name``
    (usable as a class decorator); returns ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, CorrespondenceMethod)) or not cls.name:
        raise TypeError("register_method takes a CorrespondenceMethod subclass with a name, got %r" % (cls,))
    _METHODS[cls.name] = cls
    return cls


def list_methods():
    """Names of the registered methods, built-in ones first."""
    return list(_METHODS)


def get_method_class(name):
    """The method class registered as ``name``."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise ValueError("unknown method %r; available: %s" % (name, ", ".join(_METHODS))) from None


# ensemble members are looked up here too (methods registered later included)
_ensemble.use_registry(get_method_class)


def build_method(name, **options):
    """Instantiates method ``name`` with its options."""
    return get_method_class(name)(**options)


def method_capabilities(name):
    """What the App and the CLI need to know about a method without
    building it: ``{"name", "summary", "trains", "uses_labels", "options":
    {option: default}, "form_options": [...]}`` (``uses_labels``: whether
    it learns from the ``labels`` argument of
    :func:`fiftyone_ncl.compute_correspondence`)."""
    import dataclasses

    if name == "auto":  # not a class: it picks one of the others per run
        from fiftyone_ncl.core.auto import capabilities

        return capabilities(method_capabilities)
    cls = get_method_class(name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls.config_cls)}
    return {
        "name": cls.name,
        "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else cls.name,
        "trains": bool(cls.trains),
        "uses_labels": bool(cls.uses_labels),
        "options": defaults,
        "form_options": [o for o in cls.form_options if o in defaults],
    }


def load_method(path, **overrides):
    """Loads a method saved by :meth:`CorrespondenceMethod.save`.

    The header is validated (size, method, declared shapes) before any tensor
    is allocated, and the tensors are checked against the network the header
    describes, so a damaged or foreign file fails with a message naming it.

    Args:
        path: the ``.safetensors`` file
        **overrides: options that do not change the network (``device``,
            ``eval_batch_size``, ``amp``)
    """
    header = read_header(path)
    config = {k: v for k, v in json.loads(header["config"]).items() if k not in MOVED_TO_INPUTS}
    spec = json.loads(header["input_spec"])
    if "towers" not in spec:  # checkpoints written before the inputs named their towers
        spec["towers"] = json.loads(header["config"]).get("towers", "frozen")
    try:
        cls = get_method_class(header["method"])
        make_config(cls.config_cls, config, cls.name)  # unknown options fail here, naming them
    except (ValueError, TypeError) as e:
        raise ValueError("checkpoint %r: %s" % (str(path), e)) from None
    config.update(overrides)
    # the described network on the meta device: its shapes, no memory
    with torch.device("meta"):
        probe = cls(**config)
        probe._build_for(spec)
        expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    check_shapes(path, header["tensors"], expected, extras=probe.checkpoint_extras)
    method = cls(**config)
    method._build_for(spec)
    method.load_state_dict(read_tensors(path))
    method.fitted = True
    return method
