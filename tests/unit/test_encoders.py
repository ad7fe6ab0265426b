"""Encoders with their real code: open_clip (random weights: no pretrained
checkpoint can be had offline), the bundled MiniLM, raw pixels."""
import warnings

import numpy as np
import pytest
import torch

from fiftyone_ncl.encoders import (
    CaptionTruncationWarning,
    OpenClipEncoder,
    PixelEncoder,
    SentenceTransformerEncoder,
    get_encoder,
)


@pytest.fixture(scope="module")
def clip():
    return OpenClipEncoder("ViT-B-32", pretrained=None, device="cpu")


def test_open_clip_shapes_normalisation_and_batching(clip, skimage_photos):
    paths = [p for p, _ in skimage_photos[:5]]
    captions = [c for _, c in skimage_photos[:5]]
    img = clip.embed_images(paths, batch_size=2, progress=False)
    assert img.shape == (5, 512) and img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    # batching does not change the result
    np.testing.assert_allclose(clip.embed_images(paths, batch_size=5, progress=False), img, atol=1e-5)

    txt = clip.embed_texts(captions, batch_size=2, progress=False)
    assert txt.shape == (5, 512)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(clip.embed_texts(captions, batch_size=4, progress=False), txt, atol=1e-5)
    assert clip.name == clip.space == "open_clip:ViT-B-32:random"


def test_open_clip_tokenisation_and_the_77_token_warning(clip):
    short = "a cat on a mat"
    counts = clip.token_counts([short])
    assert counts[0] == len(clip._tokenizer.encode(short)) + 2  # start and end tokens
    tokens = clip._tokenizer([short])
    assert tokens.shape == (1, 77) and tokens[0, 0] == clip._tokenizer.sot_token_id

    long = "a very long caption " + "with many many words " * 30
    with pytest.warns(CaptionTruncationWarning, match=r"1 of 2 captions are longer than the 77-token context"):
        emb = clip.embed_texts([short, long], progress=False)
    assert list(clip.last_truncated) == [1]
    # a truncated caption is scored by its first 77 tokens only
    head = clip._tokenizer([long])[0]
    assert head[-1] == clip._tokenizer.eot_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip.embed_texts([short], progress=False)  # no warning for short captions
    assert emb.shape == (2, 512)


def test_open_clip_local_checkpoint_file(clip, tmp_path, skimage_photos):
    path = tmp_path / "my_clip.pt"
    clip._load()  # the model is built lazily, on first use
    torch.save(clip._model.state_dict(), path)
    local = OpenClipEncoder("ViT-B-32", pretrained=str(path), device="cpu")
    assert local.name == "open_clip:ViT-B-32:file:my_clip.pt"
    captions = [c for _, c in skimage_photos[:3]]
    np.testing.assert_allclose(
        local.embed_texts(captions, progress=False), clip.embed_texts(captions, progress=False), atol=1e-5
    )


def test_open_clip_bad_names():
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Nope'"):
        OpenClipEncoder("ViT-Nope", pretrained=None).embed_texts(["x"], progress=False)
    with pytest.raises(ValueError, match="has no pretrained tag 'nonsense'"):
        OpenClipEncoder("ViT-B-32", pretrained="nonsense").embed_texts(["x"], progress=False)
    with pytest.raises(FileNotFoundError, match="open_clip checkpoint file not found: /no/such.pt"):
        OpenClipEncoder("ViT-B-32", pretrained="/no/such.pt").embed_texts(["x"], progress=False)


def test_sentence_transformer_bundled_minilm():
    enc = SentenceTransformerEncoder(device="cpu")
    captions = ["a photo of a dog", "a photo of a cat", "a photo of a dog", "stock prices fell"]
    emb = enc.embed_texts(captions, batch_size=2, progress=False)
    assert emb.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb[0], emb[2])  # duplicates embedded once
    # a real pretrained model: related captions are closer than unrelated ones
    assert emb[0] @ emb[1] > emb[0] @ emb[3] + 0.2
    assert not enc.embeds_images


def test_pixel_encoder(skimage_photos, tmp_path):
    enc = PixelEncoder(16)
    emb = enc.embed_images([p for p, _ in skimage_photos[:3]], progress=False)
    assert emb.shape == (3, 256)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb.reshape(3, -1).mean(axis=1), 0.0, atol=1e-6)  # mean-centred
    with pytest.raises(FileNotFoundError, match="image file not found: /no/such.png"):
        enc.embed_images(["/no/such.png"], progress=False)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image file .*broken.png"):
        enc.embed_images([str(broken)], progress=False)


def test_encoder_specs():
    assert isinstance(get_encoder("open_clip:ViT-B-32:random"), OpenClipEncoder)
    assert get_encoder("open_clip:ViT-B-32:random").pretrained is None
    assert get_encoder("open_clip:ViT-B-32").pretrained == "laion2b_s34b_b79k"
    assert get_encoder("open_clip:RN50").pretrained == "openai"  # RN50 has no LAION-2B weights
    assert get_encoder("pixels:32").size == 32
    assert isinstance(get_encoder("sentence-transformers"), SentenceTransformerEncoder)
    with pytest.raises(ValueError, match="unknown encoder 'clip'"):
        get_encoder("clip")
