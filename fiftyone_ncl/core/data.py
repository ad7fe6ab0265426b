"""The pair problem every method works on.

P captions are paired with N images: caption ``p`` claims to describe image
``image_index[p]``. One image may have several captions (COCO has 5), so the
labels and scores of every method live on captions, as in CRCL's official
code (one soft label per caption index).
"""
from dataclasses import dataclass, field

import numpy as np

TOWERS = ("frozen", "cnn", "open_clip")


@dataclass
class PairData:
    """Inputs of a pair-scoring problem.

    The inputs say how a method trains (its *towers*, the trainable parts
    under the heads): float embeddings (N, D) train heads over frozen
    embeddings (``"frozen"``); uint8 pixels (N, C, H, W) train a small CNN
    end to end (``"cnn"``); lazily loaded images with caption token ids
    fine-tune an open_clip model end to end (``"open_clip"``, with
    ``backbone`` naming the model and its starting weights).

    Attributes:
        images: (N, ...) image inputs: float embeddings (N, D), uint8 pixels
            (N, C, H, W), or a lazy image source (anything with ``load(rows)``
            returning a (B, C, H, W) float tensor, ``shape`` and ``len``)
        texts: (P, D) float caption embeddings, or (P, L) int token ids
        image_index: (P,) int image row of each caption
        joint_space: whether ``images`` and ``texts`` are already embeddings in
            one shared space (e.g. both from the same CLIP model), so that
            their cosine is meaningful without training
        meta: free-form description of where the inputs came from
        towers (None): ``"frozen"``, ``"cnn"`` or ``"open_clip"``; None
            infers it from the inputs
        backbone (None): for ``"open_clip"``, ``{"model": name, "state":
            state dict of the starting weights or None (random)}``
        labels (None): optional (P,) judgements a person made: 1 where the
            pair is known to match, 0 where it is known not to, -1 (or NaN)
            where nobody said. Methods with ``uses_labels`` learn from them
            (``neighbors`` fits its weights); the others ignore them
    """

    images: np.ndarray
    texts: np.ndarray
    image_index: np.ndarray
    joint_space: bool = False
    meta: dict = field(default_factory=dict)
    towers: str = None
    backbone: dict = None
    labels: np.ndarray = None

    def __post_init__(self):
        if self.towers is None:
            self.towers = infer_towers(self.images)
        if self.towers not in TOWERS:
            raise ValueError("unknown towers %r; expected one of %s" % (self.towers, ", ".join(TOWERS)))
        if self.towers == "open_clip" and not (self.backbone or {}).get("model"):
            raise ValueError("open_clip inputs need backbone={'model': <open_clip model name>, 'state': ...}")
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
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.float64)
            if self.labels.shape != self.image_index.shape:
                raise ValueError("labels must give one value per pair (%d), got shape %s"
                                 % (len(self.image_index), self.labels.shape))

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
        """Input shapes (without the row count) and towers: what a checkpoint
        needs to rebuild networks for this data."""
        out = {"images": list(self.images.shape[1:]), "texts": list(self.texts.shape[1:]), "towers": self.towers}
        if self.backbone:
            out["clip_model"] = self.backbone["model"]
        return out

    @classmethod
    def from_spec(cls, spec):
        """A one-pair stand-in with the shapes and towers of :meth:`spec`
        (open_clip backbones with random weights: a checkpoint overwrites them)."""
        towers = spec.get("towers") or infer_towers(np.zeros([1] + list(spec["images"])))
        image_dtype = np.uint8 if towers == "cnn" else np.float32
        return cls(
            images=np.zeros([1] + list(spec["images"]), dtype=image_dtype),
            texts=np.zeros([1] + list(spec["texts"]), dtype=np.int64 if towers == "open_clip" else np.float32),
            image_index=np.zeros(1, dtype=np.int64),
            towers=towers,
            backbone={"model": spec["clip_model"], "state": None} if towers == "open_clip" else None,
        )

    def subset(self, pair_indices):
        """The same images with only the given captions (e.g. clean pairs only)."""
        pair_indices = np.asarray(pair_indices, dtype=np.int64)
        labels = None if self.labels is None else self.labels[pair_indices]
        return self.replace(texts=self.texts[pair_indices], image_index=self.image_index[pair_indices], labels=labels)

    def select_pairs(self, pair_indices):
        """Only the given pairs and the images they use (image rows
        renumbered in order): a self-contained part of the collection, e.g.
        a cross-fitting fold. Needs array images (embeddings or pixels)."""
        if not isinstance(self.images, np.ndarray):
            raise ValueError("select_pairs needs array images, not a lazy image source")
        pair_indices = np.asarray(pair_indices, dtype=np.int64)
        rows = self.image_index[pair_indices]
        keep = np.unique(rows)
        remap = np.full(len(self.images), -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        labels = None if self.labels is None else self.labels[pair_indices]
        return self.replace(images=self.images[keep], texts=self.texts[pair_indices], image_index=remap[rows],
                            labels=labels)

    def replace(self, **changes):
        """A copy with some attributes replaced (e.g. the captions after
        injecting noise); the rest is shared, not copied."""
        kwargs = dict(
            images=self.images,
            texts=self.texts,
            image_index=self.image_index,
            joint_space=self.joint_space,
            meta=dict(self.meta),
            towers=self.towers,
            backbone=self.backbone,
            labels=self.labels,
        )
        kwargs.update(changes)
        if "labels" not in changes and kwargs["labels"] is not None and len(kwargs["labels"]) != len(kwargs["image_index"]):
            kwargs["labels"] = None  # other pairs (e.g. decoys appended): the judgements belonged to the old ones
        return PairData(**kwargs)


def infer_towers(images):
    """The towers a method trains for these image inputs (see :class:`PairData`)."""
    if hasattr(images, "load"):
        return "open_clip"
    if images.ndim == 4:
        return "cnn"
    if images.ndim == 2:
        return "frozen"
    raise ValueError("image inputs must be (N, D) embeddings or (N, C, H, W) pixels, got shape %s" % (images.shape,))


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
