"""A varied suite of synthetic pair regimes, for choosing defaults and for
held-out checks.

Every regime draws *clean* pairs from one factor model and varies what a
single benchmark holds fixed:

* **space**: aligned (one joint encoder: the same map for both modalities,
  one embedding space, ``joint_space=True``, as with CLIP) or unaligned (two
  different random maps, different output sizes, e.g. 384 vs 512);
* **exclusive variance**: modality-exclusive factors from half the scale of
  the shared ones to four times it;
* **tails**: Gaussian or Student-t (df 2-3) exclusive factors;
* **map**: from nearly linear to strongly nonlinear;
* **size**: 1k to 100k pairs (``size`` override);
* **correspondence**: one-to-one, several captions per image, or class-level
  (captions carry only the class of their image, so a caption matches every
  image of its class, like ``fmnist-captions``);
* **measurement noise** on each embedding, and an optional modality gap.

Pair ``p``'s image has shared factors ``s`` and image-exclusive factors
``x_v``; its caption has the shared factors of what it describes (the image,
or its class) and its own text-exclusive factors ``x_t``. Embeddings are
``f_v([s, x_v])`` and ``f_t([s, x_t])``, each map being
``sqrt(1 - a) L z + sqrt(a) W2 tanh(g W1 z + b)`` (``a`` = ``nonlinearity``,
``g`` = ``gain``) on inputs scaled by the factors' nominal RMS.

:data:`REGIMES` names ~15 regimes; about a third are ``held_out``: defaults
are chosen on the others, the held-out ones are only evaluated. Noise is
injected afterwards by :func:`inject` (random, near-neighbour in the shared
factors, or mixed). Numpy only.
"""
import inspect
import math
from dataclasses import dataclass, field

import numpy as np

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.noise import inject_mixed, inject_neighbors, inject_random

NOISE_KINDS = ("random", "neighbor", "mixed")


def _t_quartile(df):
    """The 0.75 quantile of Student's t with ``df`` degrees of freedom (numeric
    integration of the density, then bisection; numpy only)."""
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(q):
        x = np.linspace(0.0, q, 4001)
        pdf = np.exp(logc - (df + 1) / 2 * np.log1p(x**2 / df))
        return 0.5 + float(np.sum((pdf[1:] + pdf[:-1]) * np.diff(x)) / 2)

    lo, hi = 0.0, 3.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < 0.75 else (lo, mid)
    return (lo + hi) / 2


def _draw(rng, size, scale, tails, df):
    """Factors of robust scale ``scale``: Gaussian, or Student-t rescaled so
    that its interquartile range equals the Gaussian's (the bulk looks the
    same; only the tails differ)."""
    if tails == "gaussian":
        return rng.normal(0.0, scale, size=size)
    if tails != "student":
        raise ValueError("tails must be 'gaussian' or 'student', got %r" % tails)
    return rng.standard_t(df, size=size) * scale * 0.6744897501960817 / _t_quartile(df)


def _random_map(rng, in_dim, out_dim, hidden, nonlinearity, gain):
    """``z -> sqrt(1-a) z L + sqrt(a) tanh(g z W1 + b1) W2 / c``: a linear part
    (which lets heavy tails through, as real encoders' residual paths do) plus
    a tanh MLP, each of about unit variance per output on unit inputs."""
    lin = rng.normal(0.0, 1.0 / np.sqrt(in_dim), size=(in_dim, out_dim))
    w1 = rng.normal(0.0, 1.0 / np.sqrt(in_dim), size=(in_dim, hidden))
    b1 = rng.normal(0.0, 0.1, size=hidden)
    w2 = rng.normal(0.0, 1.0 / np.sqrt(hidden), size=(hidden, out_dim))
    # RMS of tanh(g u), u ~ N(0, 1): normalises the MLP part whatever the gain
    u = np.random.default_rng(0).normal(size=20000)
    c = np.sqrt(np.mean(np.tanh(gain * u) ** 2))
    a = float(nonlinearity)

    def f(z, chunk=16384):
        out = np.empty((len(z), out_dim), dtype=np.float32)
        for i in range(0, len(z), chunk):  # bounded memory at 100k pairs
            zi = z[i : i + chunk]
            out[i : i + chunk] = np.sqrt(1 - a) * (zi @ lin) + np.sqrt(a) / c * (np.tanh(gain * (zi @ w1) + b1) @ w2)
        return out

    return f


def make_pairs(
    n_pairs=3000,
    captions_per_image=1,
    n_classes=0,
    class_spread=0.5,
    shared_dim=8,
    exclusive_dim=16,
    shared_std=1.0,
    exclusive_std=1.0,
    tails="gaussian",
    df=3.0,
    joint_space=False,
    image_dim=384,
    text_dim=512,
    map_hidden=256,
    nonlinearity=0.7,
    gain=2.0,
    measurement_noise=0.1,
    modality_gap=0.0,
    seed=0,
):
    """Clean pairs from the factor model of this module.

    Args:
        n_pairs (3000): captions P (images N = P // captions_per_image)
        captions_per_image (1): captions per image, each with its own x_t
        n_classes (0): 0 for instance-level correspondence; K > 0 gives each
            image one of K classes, shared factors ``s = centre[class] +
            class_spread * shared_std * noise``, captions carrying only the
            class centre: truth is class level
        class_spread (0.5): within-class spread of the images' shared factors
        shared_dim (8), exclusive_dim (16): factor dimensions
        shared_std (1.0), exclusive_std (1.0): factor scales (robust scale for
            Student-t factors)
        tails ("gaussian"): exclusive factors ``"gaussian"`` or ``"student"``
        df (3.0): degrees of freedom of Student-t factors
        joint_space (False): True: one map for both modalities (aligned, one
            space, ``text_dim`` ignored); False: two different maps
        image_dim (384), text_dim (512): embedding sizes
        map_hidden (256): hidden width of the maps
        nonlinearity (0.7): share of each map's variance from its tanh part
        gain (2.0): tanh input gain (higher: more saturated, less linear)
        measurement_noise (0.1): iid Gaussian noise added to each embedding,
            relative to the embedding's per-dimension RMS
        modality_gap (0.0): aligned spaces only: opposite constant offsets of
            the two modalities, relative to the embedding norm (CLIP's gap)
        seed (0): seed of factors and maps

    Returns:
        ``(PairData, truth)``; ``truth`` holds ``shared`` (N, d_s) per image
        (the space of neighbour swaps), ``classes`` (P,) per pair or None,
        ``image_classes`` (N,) or None, ``excl_image`` (N, d_x),
        ``excl_text`` (P, d_x) and ``params``
    """
    params = {k: v for k, v in locals().items()}
    rng = np.random.default_rng(seed)
    n_images = max(1, n_pairs // captions_per_image)
    n_pairs = n_images * captions_per_image
    image_index = np.repeat(np.arange(n_images), captions_per_image)

    if n_classes:
        centres = rng.normal(0.0, shared_std, size=(n_classes, shared_dim))
        image_classes = rng.permutation(np.arange(n_images) % n_classes)
        s_image = centres[image_classes] + rng.normal(0.0, class_spread * shared_std, size=(n_images, shared_dim))
        s_text = centres[image_classes[image_index]]
        classes = image_classes[image_index]
    else:
        image_classes = classes = None
        s_image = rng.normal(0.0, shared_std, size=(n_images, shared_dim))
        s_text = s_image[image_index]
    x_v = _draw(rng, (n_images, exclusive_dim), exclusive_std, tails, df)
    x_t = _draw(rng, (n_pairs, exclusive_dim), exclusive_std, tails, df)

    # nominal RMS: the tanh works in the same range at every exclusive scale,
    # while the exclusive share of the variance grows with it
    rms = np.sqrt((shared_dim * shared_std**2 + exclusive_dim * exclusive_std**2) / (shared_dim + exclusive_dim))
    in_dim = shared_dim + exclusive_dim
    map_v = _random_map(rng, in_dim, image_dim, map_hidden, nonlinearity, gain)
    map_t = map_v if joint_space else _random_map(rng, in_dim, text_dim, map_hidden, nonlinearity, gain)
    images = map_v(np.concatenate([s_image, x_v], axis=1) / rms)
    texts = map_t(np.concatenate([s_text, x_t], axis=1) / rms)

    for emb in (images, texts):
        if measurement_noise:
            scale = measurement_noise * np.sqrt(np.mean(emb.astype(np.float64) ** 2))
            emb += rng.normal(0.0, scale, size=emb.shape).astype(np.float32)
    if joint_space and modality_gap:
        direction = rng.normal(size=image_dim)
        direction /= np.linalg.norm(direction)
        norm = np.sqrt(np.mean(np.sum(images.astype(np.float64) ** 2, axis=1)))
        images += (0.5 * modality_gap * norm * direction).astype(np.float32)
        texts -= (0.5 * modality_gap * norm * direction).astype(np.float32)

    data = PairData(images, texts, image_index, joint_space=bool(joint_space), meta={"source": "regime", **params})
    truth = {
        "shared": s_image,
        "classes": classes,
        "image_classes": image_classes,
        "excl_image": x_v,
        "excl_text": x_t,
        "params": params,
    }
    return data, truth


@dataclass
class Regime:
    """A named generator setting.

    Attributes:
        name: registry key
        description: one line on what it stresses
        params: :func:`make_pairs` options
        held_out: True if method defaults must not be chosen on it
        neighbor_k: neighbours of a near-neighbour swap
    """

    name: str
    description: str
    params: dict = field(default_factory=dict)
    held_out: bool = False
    neighbor_k: int = 10

    def make(self, seed=0, size=None):
        """Clean pairs and truth (:func:`make_pairs`); ``size`` overrides the
        number of pairs (1k..100k)."""
        params = dict(self.params)
        if size is not None:
            params["n_pairs"] = int(size)
        data, truth = make_pairs(seed=seed, **params)
        data.meta["regime"] = truth["regime"] = self.name
        truth["neighbor_k"] = self.neighbor_k
        return data, truth

    def axes(self):
        """The suite axes this regime sits on, as short strings."""
        p = dict(_DEFAULTS, **self.params)
        return {
            "space": "aligned" if p["joint_space"] else "unaligned %d/%d" % (p["image_dim"], p["text_dim"]),
            "excl/shared": p["exclusive_std"] / p["shared_std"],
            "factors shared/exclusive": "%d/%d" % (p["shared_dim"], p["exclusive_dim"]),
            "tails": "gaussian" if p["tails"] == "gaussian" else "t(df=%g)" % p["df"],
            "pairs": p["n_pairs"],
            "correspondence": (
                "class-level (%d classes)" % p["n_classes"] if p["n_classes"]
                else "1:%d" % p["captions_per_image"]
            ),
            "nonlinearity": "%g (gain %g)" % (p["nonlinearity"], p["gain"]),
            "measurement_noise": p["measurement_noise"],
            "modality_gap": p["modality_gap"],
        }


_DEFAULTS = {k: v.default for k, v in inspect.signature(make_pairs).parameters.items()}


def inject(regime_data, kind, rate, seed=0, k=None):
    """Noisy pairs from clean ones.

    Args:
        regime_data: ``(PairData, truth)`` from :meth:`Regime.make`
        kind: ``"random"`` (NCR permutation), ``"neighbor"`` (a caption of one
            of the k nearest other images in the shared factors; another class
            with class-level truth) or ``"mixed"`` (half each)
        rate: fraction of captions chosen
        seed (0): noise seed
        k (None): neighbours (default: the regime's ``neighbor_k``, else 10)

    Returns:
        ``(noisy PairData, noisy mask (P,))``; the data's ``meta["noise"]``
        describes the injection (requested and realised rate)
    """
    data, truth = regime_data
    k = k or truth.get("neighbor_k", 10)
    classes = truth.get("classes")
    if kind == "random":
        noise = inject_random(data.image_index, rate, seed=seed, classes=classes)
    elif kind == "neighbor":
        noise = inject_neighbors(truth["shared"], data.image_index, rate, seed=seed, k=k, classes=classes)
    elif kind == "mixed":
        noise = inject_mixed(truth["shared"], data.image_index, rate, seed=seed, k=k, classes=classes)
    else:
        raise ValueError("kind must be one of %s, got %r" % (", ".join(NOISE_KINDS), kind))
    noisy = PairData(
        images=data.images,
        texts=np.ascontiguousarray(data.texts[noise.source]),
        image_index=data.image_index,
        joint_space=data.joint_space,
        meta=dict(data.meta, noise=noise.to_dict()),
    )
    return noisy, noise.noisy


def _r(name, description, held_out=False, **params):
    return Regime(name, description, params, held_out)


REGIMES = {
    r.name: r
    for r in [
        # aligned: one joint encoder (raw cosine is meaningful)
        _r("aligned-easy", "one space, shared factors dominate, light tails",
           joint_space=True, image_dim=512, exclusive_std=0.5, exclusive_dim=8),
        _r("aligned-heavy", "one space, t(3) exclusive factors 2x the shared",
           joint_space=True, image_dim=512, exclusive_std=2.0, tails="student", df=3.0),
        _r("aligned-classes", "one space, class-level truth (20 classes), 2 captions per image",
           joint_space=True, image_dim=512, exclusive_std=1.0, n_classes=20, captions_per_image=2),
        # unaligned: two different encoders, different sizes
        _r("unaligned-easy", "two maps 384/512, shared factors dominate",
           exclusive_std=0.5, exclusive_dim=8),
        _r("unaligned-balanced", "two maps, exclusive factors of the shared scale",
           exclusive_std=1.0),
        _r("unaligned-dominant", "two maps, 8 Gaussian exclusive factors 3x the shared (synthetic-high-like)",
           exclusive_std=3.0, exclusive_dim=8),
        _r("unaligned-wide", "two maps, 64 exclusive factors of the shared scale (many, not large)",
           exclusive_std=1.0, exclusive_dim=64),
        _r("unaligned-heavy", "two maps, 32 t(3) exclusive factors 3x the shared",
           exclusive_std=3.0, exclusive_dim=32, tails="student", df=3.0),
        _r("unaligned-multicap", "two maps, 5 captions per image, t(3) exclusive 1.5x",
           exclusive_std=1.5, tails="student", df=3.0, captions_per_image=5, n_pairs=5000),
        _r("unaligned-linear", "two nearly linear maps (CCA's home ground), 32 t(3) exclusive factors 2x",
           exclusive_std=2.0, exclusive_dim=32, tails="student", df=3.0, nonlinearity=0.1, gain=1.0),
        _r("unaligned-noisy-small", "two maps, 1k pairs, strong measurement noise",
           exclusive_std=1.0, exclusive_dim=8, n_pairs=1000, measurement_noise=0.5),
        # held out: method defaults are never chosen on these
        _r("aligned-gap-coco", "one space with a CLIP-like modality gap, 5 captions per image, t(3)",
           held_out=True, joint_space=True, image_dim=512, exclusive_std=1.5, tails="student", df=3.0,
           captions_per_image=5, n_pairs=4000, modality_gap=0.6),
        _r("unaligned-extreme", "two maps, 32 t(2) exclusive factors 4x the shared",
           held_out=True, exclusive_std=4.0, exclusive_dim=32, tails="student", df=2.0),
        _r("unaligned-nonlinear", "two strongly nonlinear maps (saturated tanh), exclusive 1x",
           held_out=True, exclusive_std=1.0, nonlinearity=0.95, gain=4.0),
        _r("unaligned-classes", "two maps, class-level truth (10 classes) like fmnist-captions, exclusive 2x",
           held_out=True, exclusive_std=2.0, n_classes=10, class_spread=0.5),
        # tuned so that a plain sklearn CCA (8 components, raw inputs) scores
        # about 0.76-0.8 and gmm on trained heads 0.55-0.6 at 40 % mixed noise
        _r("heldout-mimic",
           "mimics the external held-out benchmark: two nonlinear maps 384/512 of 8 shared factors plus 16 "
           "heavy-tailed t(2.5) exclusive factors 3x the shared (95 % of the factor variance), 3k pairs; "
           "use kind='mixed'",
           held_out=True, exclusive_std=3.0, exclusive_dim=16, tails="student", df=2.5, measurement_noise=0.2),
    ]
}


def list_regimes(held_out=None):
    """Regime names; ``held_out`` True / False keeps only those / the others."""
    return [n for n, r in REGIMES.items() if held_out is None or r.held_out == held_out]


def get_regime(name):
    """The regime registered as ``name``."""
    try:
        return REGIMES[name]
    except KeyError:
        raise ValueError("unknown regime %r; available: %s" % (name, ", ".join(REGIMES))) from None
