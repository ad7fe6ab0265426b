"""Raw pixels, for small images when no pretrained image model is at hand.

``PixelEncoder`` flattens a resized, mean-centred image into a vector (heads
over frozen pixels); :func:`load_pixels` returns uint8 arrays for towers that
are trained end to end (``towers="cnn"``).
"""
import numpy as np

from fiftyone_ncl.encoders.base import Encoder, batched, normalize_rows


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
    mode = "L" if grayscale else "RGB"
    for start, batch in batched(filepaths, 512, progress, "pixels"):
        for j, path in enumerate(batch):
            try:
                with Image.open(path) as im:
                    im = im.convert(mode).resize((size, size), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except FileNotFoundError:
                raise FileNotFoundError("image file not found: %s" % path) from None
            except Exception as e:
                raise ValueError("cannot read image file %s: %s" % (path, e)) from e
            out[start + j] = arr[None] if grayscale else arr.transpose(2, 0, 1)
    return out


class PixelEncoder(Encoder):
    """Resized pixels as a mean-centred, unit-norm vector.

    Args:
        size (28): side of the resized image
        grayscale (True): convert to one channel
    """

    embeds_images = True

    def __init__(self, size=28, grayscale=True):
        self.size = int(size)
        self.grayscale = bool(grayscale)
        self.name = "pixels:%d%s" % (self.size, ":gray" if grayscale else ":rgb")

    def embed_images(self, filepaths, batch_size=None, progress=True):
        pixels = load_pixels(filepaths, self.size, self.grayscale, progress=progress)
        x = pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0
        x -= x.mean(axis=1, keepdims=True)
        return normalize_rows(x)
