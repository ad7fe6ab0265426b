"""A run's life: what it makes (fields, model file, saved views, tags) goes
with it; clones and temporary copies leave nothing behind; a run whose
captions changed since refuses to apply its per-caption results."""
import os

import numpy as np
import pytest

import fiftyone as fo

import fiftyone_ncl as ncl
from fiftyone_ncl.fo.runs import checkpoint_path

from .conftest import joint_embeddings, snapshot

pytestmark = pytest.mark.integration

FIELDS = dict(image_embeddings="img", text_embeddings="txt", progress=False)
TRAINED = dict(method="gmm", train_heads=True, epochs=1)


def _score(ds, **kwargs):
    return ncl.compute_correspondence(ds, "caption", **dict(FIELDS, **kwargs))


def test_the_model_file_goes_with_its_run(make_dataset):
    ds = make_dataset(n=80, n_swapped=16)
    _score(ds, **TRAINED)
    ckpt = checkpoint_path(ds, "ncl")
    assert ds.get_brain_info("ncl").config.checkpoint == ckpt and os.path.isfile(ckpt)
    assert str(ds._doc.id) in ckpt  # keyed by the dataset's id, not its name

    # renamed with its run
    ncl.rename_run(ds, "ncl", "heads")
    moved = checkpoint_path(ds, "heads")
    assert not os.path.exists(ckpt) and os.path.isfile(moved)
    assert ncl.get_run_info(ds, "heads")["config"]["checkpoint"] == moved

    # a clone's run points at its source's model: not its own, never deleted by it
    clone = ds.clone()
    try:
        assert ncl.get_run_info(clone, "heads")["config"]["checkpoint"] is None
        ncl.delete_run(clone, "heads")
        assert os.path.isfile(moved)
        # its own run gets its own file
        _score(clone, **TRAINED, run_key="heads")
        assert os.path.isfile(checkpoint_path(clone, "heads")) and checkpoint_path(clone, "heads") != moved
    finally:
        clone.delete()

    # replaced by a run that saves no model: the old file goes
    _score(ds, method="cosine", run_key="heads", overwrite=True)
    assert not os.path.exists(moved)
    _score(ds, **TRAINED, run_key="heads", overwrite=True)
    ncl.delete_run(ds, "heads")
    assert not os.path.exists(moved)


def test_cleanup_checkpoints_removes_files_of_deleted_datasets(make_dataset):
    ds = make_dataset(n=80, n_swapped=16)
    _score(ds, **TRAINED)
    ckpt = checkpoint_path(ds, "ncl")
    keep = make_dataset(n=80, n_swapped=16)
    _score(keep, **TRAINED)
    earlier = set(ncl.cleanup_checkpoints(dry_run=True))  # other tests' deleted datasets
    ds.delete()  # FiftyOne does not tell plugins
    assert os.path.isfile(ckpt)
    assert set(ncl.cleanup_checkpoints(dry_run=True)) - earlier == {os.path.dirname(ckpt)}
    assert os.path.dirname(ckpt) in ncl.cleanup_checkpoints()
    assert not os.path.exists(os.path.dirname(ckpt))
    assert os.path.isfile(checkpoint_path(keep, "ncl"))  # a live run's model stays


def test_self_check_leaves_no_model_file_behind(make_dataset):
    ds = make_dataset(n=80, n_swapped=0)
    root = os.path.dirname(os.path.dirname(checkpoint_path(ds, "x")))
    before = set(os.listdir(root)) if os.path.isdir(root) else set()
    ncl.self_check(ds, "caption", rate=0.2, progress=False, image_embeddings="img", text_embeddings="txt",
                   **TRAINED)
    after = set(os.listdir(root)) if os.path.isdir(root) else set()
    assert after == before


def test_saved_views_and_tags_go_with_their_run(make_dataset):
    ds = make_dataset(n=60, n_swapped=12)
    _score(ds, method="gmm")
    ds.take(3, seed=1).tag_samples("mine")  # a user's own tag stays
    before = snapshot(ds)
    n = ncl.tag_mismatches(ds, "ncl")
    name = ncl.save_suspects_view(ds, "ncl")
    assert n > 0 and ds.count_sample_tags()["suspected_mismatch"] == n and ds.has_saved_view(name)

    # renamed with the run: the saved view follows the renamed fields
    ncl.rename_run(ds, "ncl", "g")
    assert len(ds.load_saved_view(name)) == n

    ncl.delete_run(ds, "g")
    assert not ds.has_saved_view(name)
    assert "suspected_mismatch" not in ds.count_sample_tags()
    assert ds.count_sample_tags() == before["tags"]


def test_a_view_scored_then_tagged_on_the_dataset_tags_only_scored_samples(make_dataset):
    ds = make_dataset(n=40, n_swapped=20)
    results = _score(ds.limit(20), method="gmm")
    flagged = results.n_noisy
    # the 20 unscored samples have no confidence: never "below the threshold"
    assert ncl.tag_mismatches(ds, "ncl") == flagged
    assert set(ds.match_tags("suspected_mismatch").values("id")) <= set(results.sample_ids)
    assert len(ncl.suspects_view(ds, "ncl")) == flagged
    assert ncl.tag_mismatches(ds, "ncl", top_k=30) == 20  # only 20 were scored


def test_suspects_view_after_delete_run_is_gone(make_dataset):
    ds = make_dataset(n=40, n_swapped=10)
    _score(ds, method="gmm")
    name = ncl.save_suspects_view(ds, "ncl")
    ncl.delete_run(ds, "ncl")
    assert name not in ds.list_saved_views()
    with pytest.raises(ValueError, match="no correspondence run 'ncl'"):
        ncl.suspects_view(ds, "ncl")


def _list_caption_dataset():
    """40 samples with three captions each; caption 1 of samples 0..15
    belongs to another sample."""
    rng = np.random.default_rng(3)
    n, k, d = 40, 3, 16
    img, _, _ = joint_embeddings(n, d, 0, seed=3)
    txt = img[:, None, :] + 0.3 * rng.normal(size=(n, k, d)).astype(np.float32)
    caps = [["human caption %d.%d" % (i, j) for j in range(k)] for i in range(n)]
    for i in range(16):
        txt[i, 1] = txt[(i + 20) % n, 0]
        caps[i][1] = caps[(i + 20) % n][0]
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath="/nonexistent/%d.jpg" % i, captions=caps[i], img=img[i], txt=txt[i])
                    for i in range(n)], progress=False)
    return ds


def test_accept_suggestions_twice_on_list_captions_never_deletes_a_human_caption():
    ds = _list_caption_dataset()
    try:
        ncl.compute_correspondence(ds, "captions", method="gmm", **FIELDS)
        flagged = ds.exists("ncl_suggestion")
        assert len(flagged)
        changed = ncl.accept_suggestions(flagged, "ncl")
        assert changed == len(flagged)
        after_first = snapshot(ds)
        info = ncl.get_run_info(ds, "ncl")
        assert info["state"] == "stale" and "changed since run 'ncl'" in info["message"]

        # by position, the run's flags would now hit other captions: refused
        with pytest.raises(ValueError, match=r"the captions of %d samples changed since run 'ncl' scored them "
                                             r"\(e.g. .*\); .*re-run compute_correspondence" % changed):
            ncl.accept_suggestions(ds, "ncl")
        assert snapshot(ds) == after_first

        # restoring (default field: the one with an _original beside it) makes it fresh again
        assert ncl.restore_captions(ds) == changed
        assert ncl.get_run_info(ds, "ncl")["state"] == "complete"

        # an edit by hand makes it stale too
        s = ds.exists("ncl_suggestion").first()
        s["captions"] = s["captions"][:2]
        s.save()
        with pytest.raises(ValueError, match="changed since run 'ncl'"):
            ncl.accept_suggestions(ds.select(s.id), "ncl")
    finally:
        ds.delete()
