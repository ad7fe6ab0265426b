"""End-to-end training of an open_clip model under the methods' heads (the
``open_clip_finetune`` recipe's inputs), with open_clip's real code and random
weights: images read lazily from real photos, captions as token ids."""
import numpy as np
import pytest
import torch

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.methods.disncl.nets import build_disncl_net
from fiftyone_ncl.core.nets import build_dual_encoder
from fiftyone_ncl.core.registry import build_method, load_method
from fiftyone_ncl.core.training import seeded
from fiftyone_ncl.encoders import OpenClipEncoder

SMALL = dict(batch_size=4, embed_dim=32, hidden_dim=64, eval_batch_size=8)


@pytest.fixture(scope="module")
def photo_pairs(skimage_photos):
    paths = [p for p, _ in skimage_photos[:8]]
    captions = [c for _, c in skimage_photos[:8]]
    images, tokens, backbone = OpenClipEncoder("ViT-S-32", None, device="cpu").training_inputs(paths, captions)
    return PairData(images=images, texts=tokens, image_index=np.arange(8), joint_space=True, backbone=backbone)


def test_lazy_images_load_batches(photo_pairs):
    batch = photo_pairs.images.load([3, 0])
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == torch.float32
    assert photo_pairs.images.shape == (8, 3, 224, 224) and photo_pairs.spec()["texts"] == [77]
    assert photo_pairs.towers == "open_clip" and photo_pairs.spec()["clip_model"] == "ViT-S-32"


@pytest.mark.parametrize(
    "method,options",
    [("crcl", {"stages": (1,), "warmup_epochs": 1}), ("disncl", {"epochs": 1, "warmup_epochs": 1, "mi_diagnostics": False})],
)
def test_methods_fine_tune_open_clip_and_checkpoint(photo_pairs, method, options, tmp_path):
    m = build_method(method, **SMALL, **options)
    m.fit(photo_pairs, progress=False)
    net = getattr(m, "model", None) or m.net
    names = [n for n, _ in net.named_parameters()]
    assert any(n.startswith("backbone.visual.") for n in names)
    assert not any(n.startswith(("image_tower.", "text_tower.")) for n in names)  # registered once

    # the same seeded build, untrained: the backbone's weights must have moved
    build = build_dual_encoder if method == "crcl" else build_disncl_net
    with seeded(0):
        initial = build(m.config, photo_pairs)
    with seeded(0):
        twin = build(m.config, photo_pairs)
    start = dict(initial.backbone.named_parameters())
    assert all(torch.equal(p, start[n]) for n, p in twin.backbone.named_parameters())  # the build is seeded
    moved = [n for n, p in net.backbone.named_parameters() if not torch.equal(p.detach(), start[n].detach())]
    assert moved, "the open_clip backbone was not trained"
    assert len(moved) > len(start) // 2

    scores = m.score(photo_pairs, progress=False)
    assert scores.confidence.shape == (8,) and np.all(np.isfinite(scores.confidence))
    assert scores.image_embeddings.shape == (8, 32)

    path = tmp_path / ("%s.safetensors" % method)
    m.save(path)
    loaded = load_method(path)
    again = loaded.score(photo_pairs, progress=False)
    np.testing.assert_allclose(again.similarity, scores.similarity, atol=1e-4)
