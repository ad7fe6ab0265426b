"""``ensemble``: a rank consensus of named methods.

Each member (default ``gmm`` and ``neighbors``: a baseline trained on the
collection when its inputs need heads, and the training-free neighbour
score) is built, fitted and scored on the same data through the public method
API. Each member's per-pair scores are turned into ranks (its calibration
score, oriented like its confidence, so saturated probabilities do not tie),
the ranks into normal quantiles (``combine="probit"``, the default: a pair
that one member puts in its extreme tail keeps weight) or left uniform
(``"mean"``), and averaged: the consensus orders the pairs. Ranks are
uniform whatever the data, so the consensus is given the members' average
score distribution (the mean of their robustly standardised quantile
functions, assigned in consensus order) before it is calibrated by the same
single call every method uses (:func:`fiftyone_ncl.core.calibration.clean_probability`).

Members that train the very same heads (``gmm`` and ``neighbors`` with the
same head options) train them once: the second adopts the first's heads.

Checkpoints hold every member's tensors under ``members.<name>.``; a member
with nothing to save (a baseline in a joint space) is rebuilt from its
options. Members' extra outputs (CRCL's labels, DisNCL's MII/MEI vectors) are
not written by an ensemble run: run those methods on their own for them.
"""
import dataclasses

import numpy as np
from scipy.stats import norm, rankdata, spearmanr

from fiftyone_ncl.core.calibration import clean_probability
from fiftyone_ncl.core.data import PairScores
from fiftyone_ncl.core.methods.base import CorrespondenceMethod
from fiftyone_ncl.core.methods.baselines import BaselineConfig, CosineMethod, GMMMethod
from fiftyone_ncl.core.methods.crcl import CRCLMethod
from fiftyone_ncl.core.methods.disncl import DisNCLMethod
from fiftyone_ncl.core.methods.neighbors import NeighborsMethod

DEFAULT_MEMBERS = ("gmm", "neighbors")
COMBINES = ("probit", "mean")
_BUILTIN = {cls.name: cls for cls in (CosineMethod, GMMMethod, CRCLMethod, DisNCLMethod, NeighborsMethod)}
# the registry hands its lookup over (methods registered later can be members)
_lookup = None


def use_registry(lookup):
    """Called by :mod:`fiftyone_ncl.core.registry`: members are then looked
    up there (so methods registered later can be members)."""
    global _lookup
    _lookup = lookup


def member_class(name):
    if name == "ensemble":
        raise ValueError("an ensemble cannot be a member of an ensemble")
    if _lookup is not None:
        return _lookup(name)
    try:
        return _BUILTIN[name]
    except KeyError:
        raise ValueError("unknown member method %r; available: %s" % (name, ", ".join(_BUILTIN))) from None


# options given to every member that takes them (None: the member's own default)
_SHARED = [f.name for f in dataclasses.fields(BaselineConfig)]
EnsembleConfig = dataclasses.make_dataclass(
    "EnsembleConfig",
    [
        ("members", tuple, dataclasses.field(default=DEFAULT_MEMBERS)),
        ("member_options", dict, dataclasses.field(default=None)),
        ("combine", str, dataclasses.field(default="probit")),
    ]
    # the seed is always set (the decision layer seeds its decoys with it)
    + [(name, object, dataclasses.field(default=0 if name == "seed" else None)) for name in _SHARED],
)
EnsembleConfig.__doc__ = """Options of ``ensemble``.

Attributes:
    members: names of the member methods (default ``("gmm", "neighbors")``;
        a comma-separated string works too)
    member_options: ``{member name: {option: value}}`` for one member
    combine: ``"probit"`` (mean of the ranks' normal quantiles) or
        ``"mean"`` (mean of the uniform ranks)
    epochs, batch_size, device, ... (the shared training options): given
        to every member that takes them; None = each member's default
    seed: the seed of every member (default 0)
"""


class EnsembleMethod(CorrespondenceMethod):
    """Rank consensus of several methods (default gmm + neighbors), calibrated."""

    name = "ensemble"
    config_cls = EnsembleConfig
    trains = True
    uses_labels = True
    form_options = ("members", "combine", "device")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.config
        members = c.members
        if isinstance(members, str):
            members = [m.strip() for m in members.split(",") if m.strip()]
        members = tuple(members or ())
        if len(members) < 2 or len(set(members)) != len(members):
            raise ValueError("method 'ensemble': members must name at least 2 distinct methods, got %r" % (c.members,))
        options = dict(c.member_options or {})
        unknown = sorted(set(options) - set(members))
        if unknown:
            raise ValueError("method 'ensemble': member_options names %s, which are not members (%s)"
                             % (", ".join(unknown), ", ".join(members)))
        if c.combine not in COMBINES:
            raise ValueError("method 'ensemble': combine must be one of %s, got %r" % (", ".join(COMBINES), c.combine))
        self.config.members = members
        self.config.member_options = {k: dict(v) for k, v in options.items()}
        shared = {n: getattr(c, n) for n in _SHARED if getattr(c, n) is not None}
        self.members = []
        for name in members:
            cls = member_class(name)
            accepted = {f.name for f in dataclasses.fields(cls.config_cls)}
            kwargs = {k: v for k, v in shared.items() if k in accepted}
            kwargs.update(options.get(name, {}))
            self.members.append(cls(**kwargs))
        # whether fit reads PairData.labels (some member learns from them)
        self.uses_labels = any(m.uses_labels for m in self.members)
        self.checkpoint_extras = tuple(
            "members.%s.%s" % (m.name, key) for m in self.members for key in type(m).checkpoint_extras
        )
        if c.seed is None:
            self.config.seed = 0
        self._seed = int(self.config.seed)

    def config_dict(self):
        out = dataclasses.asdict(self.config)
        # unset shared options stay unset (each member's own default)
        return {k: v for k, v in out.items() if not (k in _SHARED and v is None)}

    # fitting ----------------------------------------------------------------

    def fit(self, data, progress=True):
        fitted = []
        for i, member in enumerate(self.members):
            donor = next((f for f in fitted if _same_heads(f, member)), None)
            if donor is not None:
                member.adopt_fit(donor)
                if hasattr(member, "fit_weights"):
                    member.fit_weights(data)
            else:
                member.fit(data, progress=_sub_progress(progress, i, len(self.members), member.name))
            fitted.append(member)
        self.history = [{"member": m.name, "history": list(m.history)} for m in self.members]
        self.fitted = True
        return self

    # scoring ------------------------------------------------------------------

    def score(self, data, progress=True):
        results = [m.score(data, progress=_sub_progress(progress, i, len(self.members), m.name))
                   for i, m in enumerate(self.members)]
        p = data.n_pairs
        parts, quantiles = [], []
        for res in results:
            oriented = _oriented(res)
            u = (rankdata(oriented, method="average") - 0.5) / max(p, 1)
            parts.append(norm.ppf(u) if self.config.combine == "probit" else u)
            quantiles.append(np.sort(_standardized(oriented)))
        consensus = np.mean(parts, axis=0)
        # the consensus orders the pairs; its scale is the members' average
        # distribution (the mean of their standardised quantile functions),
        # so the mixture sees the clean and mismatched modes the members see
        # (ranks alone are uniform: nothing to calibrate)
        combined = np.empty(p)
        combined[np.argsort(consensus, kind="stable")] = np.mean(quantiles, axis=0)
        prob, fit = clean_probability(combined, higher_is_clean=True, seed=self._seed)
        first = results[0]
        agreement = {}
        for i in range(len(parts)):
            for j in range(i + 1, len(parts)):
                rho = spearmanr(parts[i], parts[j]).statistic if p > 2 else None
                agreement["%s~%s" % (self.members[i].name, self.members[j].name)] = (
                    None if rho is None or not np.isfinite(rho) else float(rho)
                )
        info = {
            "members": list(self.config.members),
            "combine": self.config.combine,
            "space": "%s (%s)" % (first.info.get("space", "given"), self.members[0].name),
            "calibration": fit.to_dict() if fit is not None else "none: the scores are constant",
            "calibration_input": "mean %s rank of the members" % self.config.combine,
            "rank_agreement": agreement,
            "member_info": {m.name: r.info for m, r in zip(self.members, results)},
            "history": list(self.history),
        }
        return PairScores(
            confidence=prob,
            similarity=np.asarray(first.similarity),
            image_embeddings=first.image_embeddings,
            text_embeddings=first.text_embeddings,
            calibration_score=combined,
            info=info,
        )

    # checkpoints ----------------------------------------------------------------

    def state_dict(self):
        out, seen = {}, set()
        for m in self.members:
            for key, value in m.state_dict().items():
                # members sharing adopted heads: each keeps its own copy on disk
                ptr = value.data_ptr() if value.numel() else None
                out["members.%s.%s" % (m.name, key)] = value.clone() if ptr in seen else value
                seen.add(ptr)
        return out

    def load_state_dict(self, state):
        for m in self.members:
            prefix = "members.%s." % m.name
            m.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            m.fitted = True
        self.fitted = True

    def input_spec(self):
        specs = {m.name: m.input_spec() for m in self.members if m.input_spec()}
        if not specs:
            return {}
        out = dict(next(iter(specs.values())))  # the data's shapes, for check_inputs
        out["members"] = specs
        return out

    def check_inputs(self, data):
        for m in self.members:
            m.check_inputs(data)

    def _build_for(self, spec):
        specs = (spec or {}).get("members") or {}
        for m in self.members:
            m._build_for(specs.get(m.name) or {})


def _same_heads(donor, member):
    """Whether ``member`` would train exactly ``donor``'s heads."""
    return (
        isinstance(donor, CosineMethod)
        and isinstance(member, CosineMethod)
        and donor.fitted
        and donor.training_options() == member.training_options()
    )


def _oriented(scores):
    """A member's per-pair score, higher = more likely clean: its
    calibration score turned the way its confidence goes (ranks without the
    ties of saturated probabilities), else its confidence."""
    conf = np.asarray(scores.confidence, dtype=np.float64)
    raw = scores.calibration_score
    if raw is None:
        return conf
    raw = np.asarray(raw, dtype=np.float64)
    if len(raw) < 3 or np.ptp(raw) == 0 or np.ptp(conf) == 0:
        return conf
    rho = spearmanr(raw, conf).statistic
    if not np.isfinite(rho):
        return conf
    return raw if rho >= 0 else -raw


def _standardized(x):
    """``x`` less its median, over its IQR (robust to the mismatched tail)."""
    x = np.asarray(x, dtype=np.float64)
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    scale = q75 - q25
    if not np.isfinite(scale) or scale <= 1e-12:
        scale = np.std(x) or 1.0
    return (x - q50) / scale


def _sub_progress(progress, i, n, name):
    """The share of a progress callback that member ``i`` of ``n`` reports to."""
    if not callable(progress):
        return progress

    def report(fraction, label=None):
        progress((i + float(fraction)) / n, "%s: %s" % (name, label) if label else name)

    return report
