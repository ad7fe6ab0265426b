"""Where a trained method starts, chosen by its inputs (``init="auto"``).

With ``init="auto"``, over frozen embeddings (vectors the user stored,
pixels + MiniLM) the heads start as the linear CCA solution of the pairs
(the ``cca`` method's, refitted on the pairs it calls clean:
:func:`fiftyone_ncl.core.nets.initial_solution`), as linear maps at tau
0.2: on the regime suite (README) CRCL and DisNCL from random MLP heads at
tau 0.05 ranked below a linear CCA in every one of the 48 noisy cells, and
from a CCA start far closer to it (CRCL below it by more than 0.01 in 13
from a CCA fitted once on all pairs, in 8 from the refitted one; DisNCL in
17 from the former). With towers trained end to end (a
CNN on pixels, open_clip) there is no linear solution to start from and the
paper's random MLP heads at tau 0.05 stay. Values the user sets explicitly always win; the concrete ones replace
``"auto"`` / None in the config, so a checkpoint records what ran.

CRCL takes this start by default; DisNCL only when asked (``init="cca"`` or
``"auto"``): linear MII heads keep the modality-exclusive factors, which
defeats its MII/MEI split, and on raw pixel vectors (coco-mini, the demo's
Fashion-MNIST photos: 0.945 -> 0.617) it ranked worse than the random start
while the same start lifted CRCL there (0.851 -> 0.942). The README's
regime section has the tables.
"""
import dataclasses
import math
import numbers

import numpy as np

INITS = ("auto", "cca", "random")
# head and temperature of each start
STARTS = {"cca": {"head": "linear", "tau": 0.2}, "random": {"head": "mlp", "tau": 0.05}}


HEADS = (None, "mlp", "linear", "auto")


def check_init(init):
    """A ValueError naming ``init`` unless it is one of :data:`INITS`."""
    if init not in INITS:
        raise ValueError("init must be one of %s, got %r" % (", ".join(map(repr, INITS)), init))


def check_start_options(init, head, tau):
    """A ValueError naming the option unless ``init``, ``head`` and ``tau``
    are values :func:`resolve_start` takes (None: follow the start;
    ``"auto"``: chosen on held-out pairs)."""
    check_init(init)
    if head not in HEADS:
        raise ValueError("head must be None, 'mlp', 'linear' or 'auto', got %r" % (head,))
    if tau is not None and tau != "auto" and not (
            isinstance(tau, numbers.Real) and not isinstance(tau, (bool, np.bool_)) and math.isfinite(tau)
            and tau > 0):
        raise ValueError("tau must be a number > 0, 'auto' or None, got %r" % (tau,))


def start_kind(init, data):
    """``"cca"`` or ``"random"``: the start ``init`` gives on ``data``'s
    inputs (a CCA start needs frozen embeddings)."""
    if init == "auto":
        init = "cca" if data.towers == "frozen" else "random"
    return "cca" if init == "cca" and data.towers == "frozen" else "random"


def resolve_start(config, data, per_start=None):
    """``config`` with ``init="auto"`` and every option left at None
    (``head``, ``tau`` and the ``per_start`` ones) replaced by the concrete
    start for ``data``.

    Args:
        config: a :class:`~fiftyone_ncl.core.training.TrainConfig` with
            ``init``, ``head`` and ``tau``
        data: the :class:`~fiftyone_ncl.core.data.PairData` it will fit
        per_start (None): a method's own options that follow the start,
            ``{option: {"cca": value, "random": value}}``

    Returns:
        a copy of ``config``
    """
    kind = start_kind(config.init, data)
    changes = {"init": kind if config.init == "auto" else config.init}
    options = dict(STARTS[kind])
    options.update({name: values[kind] for name, values in (per_start or {}).items()})
    for name, value in options.items():
        if getattr(config, name) is None:
            changes[name] = value
    return dataclasses.replace(config, **changes)
