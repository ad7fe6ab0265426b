"""Raw pixels, for small images when no pretrained image model is at hand.

``PixelEncoder`` flattens a resized, mean-centred image into a unit vector
(heads over frozen pixels); :func:`load_pixels` returns uint8 arrays for a
CNN trained end to end (the ``cnn_minilm`` recipe).
"""
import numpy as np

from fiftyone_ncl.core.vectors import normalize_rows
from fiftyone_ncl.encoders.base import Encoder, batched
from fiftyone_ncl.encoders.images import open_image


def load_pixels(filepaths, size=28, grayscale=True, progress=True):
    """Images resized to ``size`` x ``size`` as a (N, C, size, size) uint8 array.

    Raises:
        FileNotFoundError: naming the first missing file
        ValueError: naming a file that cannot be decoded
    """
    from PIL import Image

    filepaths = list(filepaths)
    channels = 1 if grayscale else 3
    out = np.empty((len(filepaths), channels, size, size), dtype=np.uint8)
    for start, batch in batched(filepaths, 512, progress, "pixels"):
        for j, path in enumerate(batch):
            im = open_image(path, "L" if grayscale else "RGB").resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
            out[start + j] = arr[None] if grayscale else arr.transpose(2, 0, 1)
    return out


class PixelEncoder(Encoder):
    """Resized pixels as a mean-centred, unit-norm vector.

    Args:
        size (28): side of the resized image
        grayscale (True): convert to one channel (``"pixels:32:rgb"`` keeps colour)
    """

    embeds_images = True

    def __init__(self, size=28, grayscale=True):
        self.size = int(size)
        self.grayscale = bool(grayscale)
        self.name = "pixels:%d%s" % (self.size, ":gray" if grayscale else ":rgb")

    def embed_images(self, filepaths, batch_size=None, progress=True):
        filepaths = list(filepaths)
        pixels = load_pixels(filepaths, self.size, self.grayscale, progress=progress)
        x = pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0
        x -= x.mean(axis=1, keepdims=True)
        blank = np.flatnonzero(~np.any(x, axis=1))
        if len(blank):
            raise ValueError(
                "%d images are blank (one colour) and have nothing to match a caption to, e.g. %s; "
                "leave them out of the view you score" % (len(blank), ", ".join(filepaths[i] for i in blank[:5]))
            )
        return normalize_rows(x, "pixel vectors", labels=filepaths, copy=False)
