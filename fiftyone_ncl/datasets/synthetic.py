"""Synthetic factor problems: pairs with known shared and exclusive factors.

Each pair has shared factors ``s`` (what both modalities show),
image-exclusive factors ``x_v`` and text-exclusive factors ``x_t``. The image
embedding is a random nonlinear map of ``[s, x_v]`` and the caption
embedding a *different* random map of ``[s, x_t]`` (2-layer tanh MLPs), so
the two are not in one space and neither reveals ``s`` linearly. With
``exclusive_std`` above ``shared_std`` most of each embedding's variance is
modality-exclusive: the regime in which DisNCL argues that similarity-based
noise filtering is misled. A fraction of pairs then gets another pair's
caption (:func:`fiftyone_ncl.core.noise.inject_random`).

The disentanglement diagnostic (:mod:`fiftyone_ncl.bench.disentanglement`)
probes what the methods' spaces recover of ``s`` and ``x``.
"""
import logging
from dataclasses import dataclass, field

import numpy as np

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.noise import InjectedNoise, inject_random

logger = logging.getLogger(__name__)


@dataclass
class SyntheticTruth:
    """Ground truth of a synthetic problem.

    Attributes:
        noisy: (P,) True where the pair's caption came from another image
        source: (P,) row of the clean caption each pair now carries
        shared: (N, d_s) shared factors s of each image
        excl_image: (N, d_x) image-exclusive factors x_v
        excl_text: (P, d_x) text-exclusive factors x_t of each clean caption
            (before noise injection)
        image_index: (P,) image of each caption before noise injection
        noise: the :class:`~fiftyone_ncl.core.noise.InjectedNoise`
        params: the generator's parameters
    """

    noisy: np.ndarray
    source: np.ndarray
    shared: np.ndarray
    excl_image: np.ndarray
    excl_text: np.ndarray
    image_index: np.ndarray
    noise: InjectedNoise = None
    params: dict = field(default_factory=dict)

    @property
    def shared_text(self):
        """(P, d_s) shared factors of the caption each pair now carries."""
        return self.shared[self.image_index[self.source]]

    @property
    def excl_text_carried(self):
        """(P, d_x) exclusive factors of the caption each pair now carries."""
        return self.excl_text[self.source]


def _random_map(rng, in_dim, hidden_dim, out_dim):
    """A random 2-layer tanh MLP ``x -> W2 tanh(W1 x + b1) + b2``."""
    w1 = rng.normal(0.0, 1.0 / np.sqrt(in_dim), size=(in_dim, hidden_dim))
    b1 = rng.normal(0.0, 0.1, size=hidden_dim)
    w2 = rng.normal(0.0, 1.0 / np.sqrt(hidden_dim), size=(hidden_dim, out_dim))
    b2 = rng.normal(0.0, 0.1, size=out_dim)
    return lambda x: np.tanh(x @ w1 + b1) @ w2 + b2


def make_synthetic(
    n_images=3000,
    captions_per_image=1,
    shared_dim=8,
    exclusive_dim=8,
    shared_std=1.0,
    exclusive_std=3.0,
    image_dim=96,
    text_dim=96,
    map_hidden=256,
    noise_rate=0.4,
    seed=0,
):
    """A seeded synthetic factor problem.

    The inputs of each map are divided by their overall RMS, so the tanh
    layer works in the same range at every ``exclusive_std`` while the share
    of variance that is modality-exclusive grows with
    ``exclusive_std / shared_std``.

    Args:
        n_images (3000): images N
        captions_per_image (1): captions per image (P = N x this), each with
            its own text-exclusive factors
        shared_dim (8), exclusive_dim (8): factor dimensions
        shared_std (1.0), exclusive_std (3.0): factor standard deviations
        image_dim (96), text_dim (96): embedding dimensions
        map_hidden (256): hidden width of the random maps
        noise_rate (0.4): fraction of captions permuted among themselves
        seed (0): seed of factors, maps and noise

    Returns:
        ``(PairData, SyntheticTruth)``
    """
    rng = np.random.default_rng(seed)
    n_pairs = n_images * captions_per_image
    s = rng.normal(0.0, shared_std, size=(n_images, shared_dim))
    x_v = rng.normal(0.0, exclusive_std, size=(n_images, exclusive_dim))
    image_index = np.repeat(np.arange(n_images), captions_per_image)
    x_t = rng.normal(0.0, exclusive_std, size=(n_pairs, exclusive_dim))

    rms = np.sqrt(
        (shared_dim * shared_std**2 + exclusive_dim * exclusive_std**2) / (shared_dim + exclusive_dim)
    )
    map_v = _random_map(rng, shared_dim + exclusive_dim, map_hidden, image_dim)
    map_t = _random_map(rng, shared_dim + exclusive_dim, map_hidden, text_dim)
    images = map_v(np.concatenate([s, x_v], axis=1) / rms).astype(np.float32)
    texts_clean = map_t(np.concatenate([s[image_index], x_t], axis=1) / rms).astype(np.float32)

    noise = inject_random(image_index, noise_rate, seed=seed)
    texts = noise.apply(texts_clean)
    params = dict(
        n_images=n_images,
        captions_per_image=captions_per_image,
        shared_dim=shared_dim,
        exclusive_dim=exclusive_dim,
        shared_std=shared_std,
        exclusive_std=exclusive_std,
        image_dim=image_dim,
        text_dim=text_dim,
        map_hidden=map_hidden,
        noise_rate=noise_rate,
        seed=seed,
        realised_noise_rate=noise.realised_rate,
    )
    data = PairData(
        images=images,
        texts=np.ascontiguousarray(texts),
        image_index=image_index,
        joint_space=False,
        meta={"source": "synthetic-factors", **params},
    )
    truth = SyntheticTruth(
        noisy=noise.noisy,
        source=noise.source,
        shared=s,
        excl_image=x_v,
        excl_text=x_t,
        image_index=image_index,
        noise=noise,
        params=params,
    )
    return data, truth
