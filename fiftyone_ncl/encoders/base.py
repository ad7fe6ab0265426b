"""The encoder interface: images and/or captions in, L2-normalised vectors out."""
from fiftyone_ncl.core.training import Progress


class Encoder:
    """Embeds image files and/or captions.

    Attributes:
        name: identifier recorded with runs and cached embedding fields, e.g.
            ``"open_clip:ViT-B-32:laion2b_s34b_b79k"``
        space: identifier of the embedding space; an image encoder and a text
            encoder with the same non-None ``space`` produce comparable vectors
            (e.g. the two towers of one CLIP model). None for single-modality
            encoders
        embeds_images, embeds_texts: which sides this encoder can embed
    """

    name = None
    space = None
    embeds_images = False
    embeds_texts = False

    def embed_images(self, filepaths, batch_size=None, progress=True):
        """(N, d) float32 L2-normalised embeddings of the image files."""
        raise NotImplementedError("%s does not embed images" % type(self).__name__)

    def embed_texts(self, texts, batch_size=None, progress=True):
        """(N, d) float32 L2-normalised embeddings of the captions."""
        raise NotImplementedError("%s does not embed captions" % type(self).__name__)

    def __repr__(self):
        return "<%s %s>" % (type(self).__name__, self.name)


def batched(items, batch_size, progress, desc):
    """Yields ``(start, batch)`` over ``items`` with a tqdm bar (or callback)."""
    n = len(items)
    n_batches = (n + batch_size - 1) // batch_size
    with Progress(n_batches, desc, progress) as bar:
        for start in range(0, n, batch_size):
            yield start, items[start : start + batch_size]
            bar.update()

