"""Reading image files: the one place that opens them, with errors that name
the file, and a lazily loaded image source for end-to-end training."""
import os

import numpy as np

MIN_SIDE = 4  # pixels: below this an image shows nothing a caption could describe
_VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def open_image(path, mode="RGB"):
    """The image at ``path`` as a PIL image in ``mode`` ("RGB" or "L").

    High-bit-depth images (16-bit PNG, 32-bit TIFF) are scaled to 8 bits by
    their own range rather than clipped, so they do not read as all white.

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist
        ValueError: naming ``path`` when it is a video, cannot be decoded, or
            is smaller than 4 x 4 pixels
    """
    from PIL import Image

    if str(path).lower().endswith(_VIDEO_EXTS):
        raise ValueError("%s is a video: fiftyone-ncl scores image-caption pairs (use an image dataset, "
                         "or frames exported with to_frames())" % path)
    try:
        with Image.open(path) as im:
            im.load()
            if min(im.size) < MIN_SIDE:
                raise _TooSmall("%s is %dx%d pixels: too small to show anything a caption could describe "
                                "(at least %dx%d); leave it out of the view you score"
                                % (path, im.size[0], im.size[1], MIN_SIDE, MIN_SIDE))
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                im = _to_8bit(im)
            return im.convert(mode)
    except FileNotFoundError:
        raise FileNotFoundError("image file not found: %s" % path) from None
    except _TooSmall as e:
        raise ValueError(str(e)) from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError("cannot read image file %s: %s" % (path, e)) from e


class _TooSmall(Exception):
    pass


def _to_8bit(im):
    from PIL import Image

    arr = np.asarray(im, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L")


def check_media_exists(filepaths, show=5):
    """Raises FileNotFoundError naming missing image files (ValueError for
    videos) before anything is computed."""
    videos = [p for p in filepaths if str(p).lower().endswith(_VIDEO_EXTS)]
    if videos:
        raise ValueError(
            "%d of %d media files are videos (e.g. %s): fiftyone-ncl scores image-caption pairs"
            % (len(videos), len(filepaths), ", ".join(videos[:show]))
        )
    missing = [p for p in filepaths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            "%d of %d image files do not exist (e.g. %s)" % (len(missing), len(filepaths), ", ".join(missing[:show]))
        )


class LazyImages:
    """Images read from files batch by batch (too many to hold as pixels).

    Behaves enough like an (N, C, H, W) array for the trainers: ``len``,
    ``ndim``, ``shape`` and :meth:`load`.

    Args:
        paths: image file paths
        transform: callable PIL image -> (C, H, W) float tensor (e.g. an
            open_clip preprocess)
        image_size: the side of the transformed images
    """

    ndim = 4

    def __init__(self, paths, transform, image_size=224):
        self.paths = list(paths)
        self.transform = transform
        self.shape = (len(self.paths), 3, int(image_size), int(image_size))

    def __len__(self):
        return len(self.paths)

    def load(self, indices):
        """(B, C, H, W) float tensor of the images at ``indices``."""
        import torch

        return torch.stack([self.transform(open_image(self.paths[int(i)])) for i in np.asarray(indices).ravel()])
