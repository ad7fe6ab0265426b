"""The methods, one module each, over :mod:`.base`; the registry that lists
them by name is :mod:`fiftyone_ncl.core.registry`.

The names this module used to export (``build_method``, ``list_methods``,
``CorrespondenceMethod``...) still resolve here, with a deprecation warning.
"""
import importlib
import warnings

_MOVED = {
    "build_method": "fiftyone_ncl.core.registry",
    "list_methods": "fiftyone_ncl.core.registry",
    "get_method_class": "fiftyone_ncl.core.registry",
    "register_method": "fiftyone_ncl.core.registry",
    "CorrespondenceMethod": "fiftyone_ncl.core.methods.base",
    "make_config": "fiftyone_ncl.core.methods.base",
    "pair_similarity": "fiftyone_ncl.core.vectors",
    "l2_normalize": "fiftyone_ncl.core.vectors",
}


def __getattr__(name):
    if name not in _MOVED:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    module = _MOVED[name]
    warnings.warn(
        "fiftyone_ncl.core.methods.%s moved to %s" % (name, module), DeprecationWarning, stacklevel=2
    )
    target = "normalize_rows" if name == "l2_normalize" else name
    return getattr(importlib.import_module(module), target)
