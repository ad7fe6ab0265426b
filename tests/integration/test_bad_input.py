"""Bad input gets a clear error naming the field or file, and the dataset
is left exactly as it was."""
import numpy as np
import pytest

import fiftyone as fo

import fiftyone_ncl as ncl

from .conftest import snapshot

pytestmark = pytest.mark.integration


def _fails(samples, match, exc=ValueError, **kwargs):
    """Runs the SDK, expects ``exc`` matching ``match``, checks nothing changed."""
    dataset = samples._dataset
    before = snapshot(dataset)
    kwargs.setdefault("caption_field", "caption")
    kwargs.setdefault("progress", False)
    with pytest.raises(exc, match=match):
        ncl.compute_correspondence(samples, **kwargs)
    assert snapshot(dataset) == before


FIELDS = dict(image_embeddings="img", text_embeddings="txt")


def test_missing_caption_field(make_dataset):
    ds = make_dataset(n=20)
    _fails(ds, r"caption field 'title' does not exist on .*its text fields are: caption", caption_field="title", **FIELDS)


def test_non_string_caption_field(make_dataset):
    ds = make_dataset(n=20, score=list(range(20)))
    _fails(ds, r"caption field 'score' is a IntField, not a string field", caption_field="score", **FIELDS)


@pytest.mark.parametrize("bad", [None, "", "   "])
def test_none_or_blank_captions(make_dataset, bad):
    ds = make_dataset(n=20)
    sample = ds.skip(3).first()
    sample["caption"] = bad
    sample.save()
    _fails(ds, r"caption field 'caption' is None or blank on 1 of 20 samples \(e.g. %s\)" % sample.id, **FIELDS)


def test_missing_image_files(make_dataset):
    ds = make_dataset(n=20)  # file paths point nowhere
    _fails(
        ds,
        r"20 of 20 image files do not exist \(e.g. /nonexistent/ncl/00000.jpg",
        exc=FileNotFoundError,
        image_encoder="pixels",
        text_embeddings="txt",
    )


def test_embedding_dimension_mismatch_inside_a_field(make_dataset):
    ds = make_dataset(n=20, dim=16)
    s = ds.first()
    s["img"] = np.ones(8, dtype=np.float32)
    s.save()
    _fails(ds, r"image embeddings field 'img' mixes vectors of different dimensions: 8, 16", **FIELDS)


def test_embedding_dimension_mismatch_between_sides(make_dataset):
    ds = make_dataset(n=20, dim=16, small=[np.ones(4, dtype=np.float32) * (i + 1) for i in range(20)])
    _fails(
        ds,
        r"image embeddings are 16-d and caption embeddings 4-d: they are not in one space",
        method="cosine",
        image_embeddings="img",
        text_embeddings="small",
        train_heads=False,
    )


def test_nan_embeddings(make_dataset):
    ds = make_dataset(n=20)
    s = ds.skip(5).first()
    vec = np.array(s["txt"])
    vec[2] = np.nan
    s["txt"] = vec
    s.save()
    _fails(ds, r"caption embeddings field 'txt' has NaN or infinite values in 1 rows \(e.g. samples %s\)" % s.id, **FIELDS)


def test_missing_embeddings_on_some_samples(make_dataset):
    ds = make_dataset(n=20)
    s = ds.first()
    s["img"] = None
    s.save()
    _fails(ds, r"image embeddings field 'img' is missing on 1 of 20 samples \(e.g. %s\)" % s.id, **FIELDS)


def test_run_key_that_exists_needs_overwrite(make_dataset):
    ds = make_dataset(n=30, n_swapped=6)
    ncl.compute_correspondence(ds, "caption", **FIELDS, progress=False)
    _fails(ds, r"a run with key 'ncl' already exists on .* pass overwrite=True", **FIELDS)
    _fails(ds, r"run key 'not valid' must be a valid Python identifier", run_key="not valid", **FIELDS)


def test_run_key_clashing_with_other_fields(make_dataset):
    ds = make_dataset(n=20, ncl_confidence=[0.5] * 20)
    _fails(ds, r"fields ncl_confidence already exist and do not belong to run", **FIELDS)


def test_empty_view(make_dataset):
    ds = make_dataset(n=20)
    _fails(ds.limit(0), r"the collection is empty", **FIELDS)
    _fails(ds.match(fo.ViewField("caption") == "nothing"), r"the collection is empty", **FIELDS)


def test_one_sample_view(make_dataset):
    ds = make_dataset(n=20)
    _fails(ds.limit(1), r"the collection has only one sample: scoring needs at least 2 images", **FIELDS)


def test_unknown_method_and_options(make_dataset):
    ds = make_dataset(n=20)
    _fails(ds, r"unknown method 'magic'; available: cosine, gmm", method="magic", **FIELDS)
    _fails(ds, r"method 'gmm' got unknown option\(s\) epoch;", exc=TypeError, method="gmm", epoch=3, **FIELDS)


def test_bad_threshold(make_dataset):
    ds = make_dataset(n=20)
    _fails(ds, r"threshold must be a number in \[0, 1\]", threshold=1.5, **FIELDS)
    _fails(ds, r"threshold must be a number in \[0, 1\], got .0.5.", threshold="0.5", **FIELDS)


def test_bad_embeddings_field_type(make_dataset):
    ds = make_dataset(n=20)
    _fails(ds, r"image embeddings field 'caption' is a StringField, not a VectorField", image_embeddings="caption", text_embeddings="txt")
    _fails(ds, r"image embeddings field 'nope' does not exist", image_embeddings="nope", text_embeddings="txt")
