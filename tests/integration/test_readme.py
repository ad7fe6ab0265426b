"""The README's quick start runs as written, on a small dataset named as in
it, with offline encoders (only ``fo.launch_app`` is replaced: it needs a
browser)."""
import re

import numpy as np
import pytest

import fiftyone as fo

pytestmark = pytest.mark.integration


def quick_start_blocks(readme):
    text = readme.read_text()
    section = text[text.index("## Quick start (Python)") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
           "black": (10, 10, 10), "white": (245, 245, 245), "orange": (250, 140, 20), "purple": (130, 40, 170),
           "pink": (250, 150, 200), "grey": (128, 128, 128)}


@pytest.fixture
def my_captions(tmp_path):
    """80 photos (PNG files of one colour each, with noise) captioned with
    their colour, stored CLIP-like embeddings, and a quarter of the captions
    moved to a photo of another colour."""
    from PIL import Image

    rng = np.random.default_rng(0)
    n, d = 80, 32
    names = list(COLOURS)
    colour = [names[i % len(names)] for i in range(n)]
    centres = {c: rng.normal(size=d) for c in names}
    order = np.arange(n)
    order[:20] = np.roll(order[:20], 3)  # samples 0..19: a caption of another colour
    samples = []
    for i in range(n):
        path = tmp_path / ("photo%02d.png" % i)
        pixels = np.clip(np.array(COLOURS[colour[i]]) + rng.normal(0, 20, (24, 24, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        said = colour[order[i]]
        samples.append(fo.Sample(
            filepath=str(path),
            caption="a photo of something %s, number %d" % (said, order[i]),
            clip_image=(centres[colour[i]] + 0.3 * rng.normal(size=d)).astype(np.float32),
            clip_text=(centres[said] + 0.3 * rng.normal(size=d)).astype(np.float32),
        ))
    if fo.dataset_exists("my-captions"):
        fo.delete_dataset("my-captions")
    ds = fo.Dataset("my-captions")
    ds.add_samples(samples, progress=False)
    yield ds
    if fo.dataset_exists("my-captions"):
        fo.delete_dataset("my-captions")


def test_quick_start_runs_as_written(repo_root, my_captions, tmp_path, monkeypatch):
    blocks = quick_start_blocks(repo_root / "README.md")
    assert blocks and "fo.load_dataset(\"my-captions\")" in blocks[0]

    class Session:
        selected = []

    monkeypatch.setattr(fo, "launch_app", lambda *args, **kwargs: Session())
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md quick start", "exec"), namespace)  # pylint: disable=exec-used

    import fiftyone_ncl as ncl

    ds = fo.load_dataset("my-captions")
    assert set(ncl.list_runs(ds)) >= {"ncl", "dis"}
    assert (tmp_path / "dis.html").is_file()
    ids = namespace["ids"]
    assert len(ids) == 5
    with_suggestion = len(ds.select(ids).exists("ncl_suggestion"))
    assert with_suggestion >= 1 and ds.count("caption_original") == with_suggestion
    assert ncl.get_run_info(ds, "ncl")["state"] == "stale"
    assert ncl.get_run_info(ds, "ncl")["config"]["decision"] == "top_k"
