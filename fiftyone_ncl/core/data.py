"""The pair problem every method works on.

P captions are paired with N images: caption ``p`` claims to describe image
``image_index[p]``. One image may have several captions (COCO has 5), so the
labels and scores of every method live on captions, as in CRCL's official
code (one soft label per caption index).
"""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PairData:
    """Inputs of a pair-scoring problem.

    Attributes:
        images: (N, ...) image inputs: float embeddings (N, D), or uint8 pixels
            (N, C, H, W) for trainable image towers
        texts: (P, D) float caption embeddings
        image_index: (P,) int image row of each caption
        joint_space: whether ``images`` and ``texts`` are already embeddings in
            one shared space (e.g. both from the same CLIP model), so that
            their cosine is meaningful without training
        meta: free-form description of where the inputs came from
    """

    images: np.ndarray
    texts: np.ndarray
    image_index: np.ndarray
    joint_space: bool = False
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.image_index = np.asarray(self.image_index, dtype=np.int64)
        if self.image_index.ndim != 1:
            raise ValueError("image_index must be 1-D, got shape %s" % (self.image_index.shape,))
        if len(self.texts) != len(self.image_index):
            raise ValueError(
                "%d caption inputs but %d entries in image_index"
                % (len(self.texts), len(self.image_index))
            )
        if len(self.image_index) and (
            self.image_index.min() < 0 or self.image_index.max() >= len(self.images)
        ):
            raise ValueError("image_index points outside the %d images" % len(self.images))

    @property
    def n_pairs(self):
        return len(self.image_index)

    @property
    def n_images(self):
        return len(self.images)

    @property
    def image_is_pixels(self):
        return self.images.ndim == 4

    @property
    def image_dim(self):
        return None if self.image_is_pixels else int(self.images.shape[1])

    @property
    def text_dim(self):
        return int(self.texts.shape[1])

    def spec(self):
        """Input shapes (without the row count): what a checkpoint needs to
        rebuild networks for this data."""
        return {"images": list(self.images.shape[1:]), "texts": list(self.texts.shape[1:])}

    @classmethod
    def from_spec(cls, spec):
        """A one-pair stand-in with the shapes of :meth:`spec`."""
        return cls(
            images=np.zeros([1] + list(spec["images"]), dtype=np.float32),
            texts=np.zeros([1] + list(spec["texts"]), dtype=np.float32),
            image_index=np.zeros(1, dtype=np.int64),
        )

    def subset(self, pair_indices):
        """The same images with only the given captions (e.g. clean pairs only)."""
        pair_indices = np.asarray(pair_indices, dtype=np.int64)
        return PairData(
            images=self.images,
            texts=self.texts[pair_indices],
            image_index=self.image_index[pair_indices],
            joint_space=self.joint_space,
            meta=dict(self.meta),
        )


@dataclass
class PairScores:
    """What a method says about each pair.

    Attributes:
        confidence: (P,) probability that the pair is clean
        similarity: (P,) similarity in the space the method scores in
        image_embeddings: (N, d) L2-normalised images in that space (used for
            suggestions and retrieval)
        text_embeddings: (P, d) L2-normalised captions in that space
        label: optional (P,) soft correspondence label (CRCL's SCC label)
        calibration_score: optional (P,) the score the clean/noisy mixture was
            fitted to (similarity, or a per-pair loss); ``info`` names it under
            ``"calibration_input"``
        vectors: optional extra embeddings to export, name -> array with N
            (image side) or P (caption side) rows
        info: method-specific statistics (training history, diagnostics,
            calibration) that go into the run record
    """

    confidence: np.ndarray
    similarity: np.ndarray
    image_embeddings: np.ndarray
    text_embeddings: np.ndarray
    label: np.ndarray = None
    calibration_score: np.ndarray = None
    vectors: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
