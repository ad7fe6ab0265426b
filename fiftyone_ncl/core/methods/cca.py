"""``cca``: a linear CCA of the pairs, refitted on the pairs it finds clean.

Ridge-regularised CCA (:mod:`fiftyone_ncl.core.cca`, ridge and components
chosen on held-out pairs) puts images and captions in one space with a linear
map per side; it standardises every input dimension, so modality-exclusive
factors that dominate the variance do not drown the shared ones, and with few
parameters it cannot memorise swapped pairs. On the regime suite it ranks far
above InfoNCE heads trained on the same noisy pairs whenever the two sides
come from different encoders. ``refine`` rounds then refit it on the pairs
the mixture calls clean, which removes most of the swaps' pull on the fit.

The fitted map is a :class:`~fiftyone_ncl.core.nets.DualEncoder` with linear,
standardising heads, so checkpoints, scoring and suggestions work as for the
other methods. Needs frozen embeddings (fields, arrays or an encoder).
"""
from dataclasses import dataclass

from fiftyone_ncl.core.cca import fit_refined_cca
from fiftyone_ncl.core.methods.baselines import BaselineConfig, GMMMethod
from fiftyone_ncl.core.nets import build_dual_encoder, init_heads


@dataclass
class CCAConfig(BaselineConfig):
    """Options of ``cca`` (the training options of the baselines do not apply).

    Attributes:
        refine: rounds of refitting on the pairs the mixture calls clean
            (0: one fit on all pairs)
        components: canonical components (None: chosen on held-out pairs)
        ridge: covariance ridge (None: chosen on held-out pairs)
        min_refit_pairs: refit only when at least this many pairs are called
            clean (otherwise the round keeps the previous fit)
    """

    refine: int = 2
    components: int = None
    ridge: float = None
    min_refit_pairs: int = 50
    head: str = "linear"
    init: str = "cca"

    def __post_init__(self):
        if self.head != "linear" or self.init != "cca":
            raise ValueError("cca is a linear map started from the CCA solution: head='linear', init='cca'")
        if int(self.refine) != self.refine or self.refine < 0:
            raise ValueError("refine must be a whole number >= 0, got %r" % (self.refine,))


class CCAMethod(GMMMethod):
    """Linear CCA of the pairs, refitted on the pairs it finds clean."""

    name = "cca"
    config_cls = CCAConfig
    needs_embeddings = True  # a linear map of fixed vectors: it cannot train towers
    form_options = ("refine", "device")

    def uses_heads(self, data):
        return True

    def fit(self, data, progress=True):
        if data.towers != "frozen":
            raise ValueError("cca works on embeddings (fields, arrays or an encoder), not on %r inputs" % data.towers)
        c = self.config
        solution, history = fit_refined_cca(data.images, data.texts, data.image_index, refine=c.refine,
                                            n_components=c.components, ridge=c.ridge,
                                            min_refit_pairs=c.min_refit_pairs, seed=c.seed)
        self.model = build_dual_encoder(c, data)
        init_heads(self.model.image_head, self.model.text_head, solution)
        self.model.eval()
        self._spec = data.spec()
        self.history = history
        self.fitted = True
        return self

    def score(self, data, progress=True):
        scores = super().score(data, progress=progress)
        scores.info["space"] = "cca"
        return scores
