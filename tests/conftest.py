"""Test set-up shared by every suite.

Runs before FiftyOne is imported: tests use their own database name (never
the user's datasets), no analytics, and a plugins dir holding only this
repository (a symlink), so the operators are found through FiftyOne's real
plugin discovery.
"""
import os
import pathlib
import shutil
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ["FIFTYONE_DATABASE_NAME"] = os.environ.get("NCL_TEST_DATABASE_NAME", "fiftyone_ncl_tests")
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# checkpoints and other files FiftyOne writes under its dataset dir
_SCRATCH = tempfile.mkdtemp(prefix="ncl-test-files-")
os.environ["FIFTYONE_DEFAULT_DATASET_DIR"] = _SCRATCH
_PLUGINS = tempfile.mkdtemp(prefix="ncl-plugins-")
os.symlink(REPO, os.path.join(_PLUGINS, "fiftyone-ncl"))
os.environ["FIFTYONE_PLUGINS_DIR"] = _PLUGINS

PLUGIN = "@fiftyone-ncl/ncl"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_PLUGINS, ignore_errors=True)
    shutil.rmtree(_SCRATCH, ignore_errors=True)


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture(scope="session")
def skimage_photos():
    """Real photos shipped inside scikit-image, with captions we wrote."""
    import skimage.data

    root = pathlib.Path(skimage.data.__file__).parent
    captions = {
        "astronaut.png": "an astronaut in a white space suit in front of an american flag",
        "camera.png": "a black and white photo of a man with a camera on a tripod",
        "chelsea.png": "a ginger tabby cat looking to the side",
        "coffee.png": "a cup of coffee on a saucer with a spoon",
        "horse.png": "the black silhouette of a horse on a white background",
        "motorcycle_left.png": "a red motorcycle parked in a garage",
        "rocket.jpg": "a rocket on the launch pad under a blue sky",
        "hubble_deep_field.jpg": "many distant galaxies in a deep space telescope image",
        "moon.png": "a grey close up of the cratered surface of the moon",
        "coins.png": "rows of old coins on a dark background",
        "retina.jpg": "an orange photo of the retina at the back of an eye",
        "page.png": "a scanned page of printed text",
    }
    return [(str(root / name), caption) for name, caption in captions.items()]
