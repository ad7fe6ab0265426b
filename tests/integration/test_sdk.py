"""The SDK against a real MongoDB: fields, runs, review helpers."""
import os

import numpy as np
import pytest

import fiftyone as fo
import fiftyone.core.fields as fof

import fiftyone_ncl as ncl
from fiftyone_ncl.encoders import PixelEncoder
from fiftyone_ncl.fo.writer import FieldWriter

from .conftest import joint_embeddings, snapshot

pytestmark = pytest.mark.integration


def _score(ds, **kwargs):
    kwargs.setdefault("image_embeddings", "img")
    kwargs.setdefault("text_embeddings", "txt")
    kwargs.setdefault("progress", False)
    return ncl.compute_correspondence(ds, "caption", **kwargs)


def test_gmm_writes_fields_records_run_and_finds_swaps(make_dataset):
    ds = make_dataset(n=100, n_swapped=20)
    results = _score(ds, method="gmm")

    schema = ds.get_field_schema()
    assert isinstance(schema["ncl_confidence"], fof.FloatField)
    assert isinstance(schema["ncl_noisy"], fof.BooleanField)
    assert isinstance(schema["ncl_similarity"], fof.FloatField)
    assert isinstance(schema["ncl_suggestion"], fof.StringField)
    assert isinstance(schema["ncl_suggestion_id"], fof.StringField)
    assert "ncl_label" not in schema  # only methods with soft labels write it

    conf, noisy, truth = ds.values(["ncl_confidence", "ncl_noisy", "truth"])
    conf = np.array(conf)
    assert np.all((conf >= 0) & (conf <= 1))
    assert list(noisy) == list(conf < 0.5)
    metrics = ncl.evaluate(ds, "ncl", "truth")
    assert metrics["auroc"] > 0.95 and metrics["k"] == 20
    assert ncl.load_run_results(ds, "ncl").metrics["auroc"] == metrics["auroc"]

    # recorded like a brain run
    assert "ncl" in ds.list_brain_runs() and ncl.list_runs(ds) == ["ncl"]
    info = ds.get_brain_info("ncl")
    assert info.config.method_name == "gmm" and info.config.caption_field == "caption"
    assert info.config.sources == {"image": "img", "text": "txt"}
    loaded = ncl.load_run_results(ds, "ncl")
    np.testing.assert_allclose(loaded.confidence, results.confidence)
    assert list(loaded.sample_ids) == ds.values("id")

    # suggestions: a swapped image's true caption sits on its neighbour
    ids = ds.values("id")
    suggestion_ids = ds.values("ncl_suggestion_id")
    hits = [suggestion_ids[i] == ids[(i + 1) % 20] for i in range(20) if noisy[i]]
    assert len(hits) >= 15 and np.mean(hits) > 0.9
    clean_unflagged = [s for s, n in zip(ds.values("ncl_suggestion"), noisy) if not n]
    assert all(s is None for s in clean_unflagged)


def test_cosine_confidence_is_a_probability_ranked_like_the_cosine(make_dataset):
    ds = make_dataset(n=60, n_swapped=10)
    results = _score(ds, method="cosine", run_key="cos")
    img, txt = np.stack(ds.values("img")), np.stack(ds.values("txt"))
    cos = np.sum(img * txt, 1) / np.linalg.norm(img, axis=1) / np.linalg.norm(txt, axis=1)
    np.testing.assert_allclose(ds.values("cos_similarity"), cos, atol=1e-5)
    # the decision layer's probability that the pair matches: ordered as the
    # cosine, never saturated, and it flags the swapped pairs (the raw
    # (1 + cos) / 2 of earlier releases flagged only negative cosines)
    conf = np.asarray(results.confidence, dtype=np.float64)
    assert np.all(np.diff(conf[np.argsort(cos)]) >= -1e-7)
    assert conf.min() >= 1e-3 - 1e-6 and conf.max() <= 1 - 1e-3 + 1e-6
    truth = np.array(ds.values("truth"))
    flagged = np.array(ds.values("cos_noisy"))
    assert flagged.sum() > 5 and (flagged & truth).sum() / flagged.sum() > 0.8
    margin = np.array(ds.values("cos_margin"))
    assert np.all((margin < 0) == flagged)


def test_list_captions_get_per_caption_values_and_a_summary():
    rng = np.random.default_rng(3)
    n, k, d = 40, 3, 16
    img, _, _ = joint_embeddings(n, d, 0, seed=3)
    txt = img[:, None, :] + 0.3 * rng.normal(size=(n, k, d)).astype(np.float32)
    truth = np.zeros((n, k), bool)
    for i in range(8):  # caption 1 of samples 0..7 comes from another sample
        txt[i, 1] = txt[(i + 20) % n, 0]
        truth[i, 1] = True
    ds = fo.Dataset()
    try:
        ds.add_samples(
            [
                fo.Sample(
                    filepath="/nonexistent/%d.jpg" % i,
                    captions=["c%d-%d" % (i, j) for j in range(k)],
                    img=img[i],
                    txt=txt[i],
                    truth=truth[i].tolist(),
                )
                for i in range(n)
            ],
            progress=False,
        )
        results = ncl.compute_correspondence(
            ds, "captions", method="gmm", image_embeddings="img", text_embeddings="txt", progress=False
        )
        assert results.n_pairs == n * k and ds.get_brain_info("ncl").config.caption_list
        schema = ds.get_field_schema()
        assert isinstance(schema["ncl_caption_confidence"], fof.ListField)
        per_caption = ds.values("ncl_caption_confidence")
        summary = ds.values("ncl_confidence")
        assert all(len(c) == k for c in per_caption)
        assert summary == pytest.approx([min(c) for c in per_caption])
        assert ds.values("ncl_noisy") == [any(f) for f in ds.values("ncl_caption_noisy")]
        metrics = ncl.evaluate(ds, "ncl", "truth")
        assert metrics["n"] == n * k and metrics["auroc"] > 0.9
        # the least confident caption of a swapped sample is the swapped one
        worst = [int(np.argmin(c)) for c in per_caption[:8]]
        assert worst.count(1) >= 7
    finally:
        ds.delete()


def test_tag_untag_and_suspects_view(make_dataset):
    ds = make_dataset(n=80, n_swapped=16)
    _score(ds, method="gmm")
    flagged = ds.count_values("ncl_noisy").get(True, 0)
    assert ncl.tag_mismatches(ds, "ncl") == flagged
    assert ds.count_sample_tags() == {"suspected_mismatch": flagged}
    assert ncl.untag_mismatches(ds) == flagged and ds.count_sample_tags() == {}

    assert ncl.tag_mismatches(ds, "ncl", top_k=5, tag="worst5") == 5
    worst = sorted(ds.values("ncl_confidence"))[:5]
    assert sorted(ds.match_tags("worst5").values("ncl_confidence")) == pytest.approx(worst)
    with pytest.raises(ValueError, match="either threshold or top_k"):
        ncl.tag_mismatches(ds, "ncl", threshold=0.3, top_k=3)

    view = ncl.suspects_view(ds, "ncl")
    conf = view.values("ncl_confidence")
    assert len(view) == flagged and conf == sorted(conf) and max(conf) < 0.5
    name = ncl.save_suspects_view(ds, "ncl")
    assert name in ds.list_saved_views() and len(ds.load_saved_view(name)) == flagged


def test_decide_reflags_without_retraining(make_dataset):
    ds = make_dataset(n=120, n_swapped=24)
    _score(ds, method="gmm")
    fields_before = sorted(ncl.get_run_info(ds, "ncl")["config"]["fields"])
    sim_before = ds.values("ncl_similarity")
    truth = np.array(ds.values("truth"))

    res = ncl.decide(ds, "ncl", decision="top_k", level=10)
    noisy = np.array(ds.values("ncl_noisy"))
    assert res.n_noisy == 10 and noisy.sum() == 10
    assert set(np.flatnonzero(noisy)) == set(np.argsort(res.statistic)[:10])  # the ten lowest statistics
    assert ds.values("ncl_similarity") == sim_before  # scores untouched
    info = ncl.get_run_info(ds, "ncl")
    assert info["config"]["decision"] == "top_k" and info["config"]["level"] == 10
    assert sorted(info["config"]["fields"]) == fields_before
    assert ncl.evaluate(ds, "ncl", "truth")["flagged"] == 10  # evaluated on the run's own flags
    # tags and the suspects view follow the run's decision, surest first
    assert ncl.tag_mismatches(ds, "ncl") == 10
    view = ncl.suspects_view(ds, "ncl")
    margins = view.values("ncl_margin")
    assert len(view) == 10 and margins == sorted(margins) and max(margins) < 0

    res = ncl.decide(ds, "ncl", decision="fdr", level=0.1)
    flagged = np.array(ds.values("ncl_noisy"))
    # conservative (the rate's lower bound) but not empty on clear swaps
    assert flagged.sum() >= truth.sum() // 3 and (flagged & truth).sum() / flagged.sum() >= 0.9
    assert res.mismatch_rate["low"] <= truth.mean() <= res.mismatch_rate["high"] + 0.05

    with pytest.raises(ValueError, match="needs labels"):
        ncl.decide(ds, "ncl", decision="f1")
    with pytest.raises(ValueError, match="level"):
        ncl.decide(ds, "ncl", decision="fraction", level=2.0)
    # marks on 20 pairs set the cut that best separates them
    judged = [None] * len(ds)
    for i in list(range(10)) + list(range(60, 70)):
        judged[i] = not truth[i]
    ds.set_values("judged", judged)
    res = ncl.decide(ds, "ncl", decision="f1", labels="judged")
    assert res.decision["marked_f1"] == 1.0 and res.decision["mode"] == "f1"


def test_rename_and_delete_follow_the_fields(make_dataset):
    ds = make_dataset(n=50, n_swapped=10)
    _score(ds, method="gmm", store_embeddings=True)
    before = ds.values("ncl_confidence")
    ncl.rename_run(ds, "ncl", "first")
    assert ds.list_brain_runs() == ["first"]
    assert not [f for f in ds.get_field_schema() if f.startswith("ncl_")]
    assert ds.values("first_confidence") == before
    assert "first_emb_image" in ds.get_field_schema()
    with pytest.raises(ValueError, match="valid Python identifier"):
        ncl.rename_run(ds, "first", "not a key")
    ncl.delete_run(ds, "first")
    assert ds.list_brain_runs() == []
    assert not [f for f in ds.get_field_schema() if f.startswith("first_")]
    with pytest.raises(ValueError, match="no correspondence run 'first'"):
        ncl.get_run_info(ds, "first")


def test_overwrite_on_a_view_clears_stale_values_and_dropped_fields(make_dataset):
    ds = make_dataset(n=60, n_swapped=10)
    _score(ds, method="gmm", store_embeddings=True)
    assert ds.count("ncl_confidence") == 60
    view = ds.skip(10)
    _score(view, method="cosine", overwrite=True)
    assert ds.count("ncl_confidence") == 50  # the 10 samples outside the view were cleared
    assert ds.get_brain_info("ncl").config.method_name == "cosine"
    assert "ncl_emb_image" not in ds.get_field_schema()
    assert len(ds.load_brain_view("ncl")) == 50


def test_encoded_embeddings_are_cached_and_not_recomputed(photo_dataset):
    class CountingPixels(PixelEncoder):
        calls = 0

        def embed_images(self, filepaths, batch_size=None, progress=True):
            CountingPixels.calls += len(filepaths)
            return super().embed_images(filepaths, batch_size, progress)

    kwargs = dict(
        method="cosine",
        image_embeddings="pix",
        text_embeddings="minilm",
        image_encoder=CountingPixels(16),
        text_encoder="sentence-transformers",
        epochs=2,
        progress=False,
    )
    ncl.compute_correspondence(photo_dataset, "caption", run_key="a", **kwargs)
    assert CountingPixels.calls == 12
    pix_field = photo_dataset.get_field("pix")
    assert isinstance(pix_field, fof.VectorField) and pix_field.info["ncl_encoder"] == "pixels:16:gray"
    assert photo_dataset.get_field("minilm").info["ncl_caption_field"] == "caption"
    cached = np.stack(photo_dataset.values("minilm"))
    assert cached.shape == (12, 384)

    ncl.compute_correspondence(photo_dataset, "caption", run_key="b", **kwargs)
    assert CountingPixels.calls == 12  # nothing recomputed

    # a changed caption invalidates its cached embedding only
    one = photo_dataset.first()
    photo_dataset.select(one.id).set_values("minilm", [None])
    ncl.compute_correspondence(photo_dataset, "caption", run_key="c", **kwargs)
    assert CountingPixels.calls == 12
    np.testing.assert_allclose(np.stack(photo_dataset.values("minilm")), cached, atol=1e-5)

    # another encoder may not silently reuse the field
    with pytest.raises(ValueError, match="holds embeddings from pixels:16:gray"):
        ncl.compute_correspondence(
            photo_dataset, "caption", run_key="d", **dict(kwargs, image_encoder=PixelEncoder(8))
        )


def test_accept_and_restore_suggestions(make_dataset):
    ds = make_dataset(n=60, n_swapped=12)
    _score(ds, method="gmm")
    ncl.tag_mismatches(ds, "ncl")
    flagged = ds.match(fo.ViewField("ncl_noisy") == True)  # noqa: E712
    target = flagged.limit(3)
    ids = target.values("id")
    old = target.values("caption")
    suggestions = target.values("ncl_suggestion")
    assert ncl.accept_suggestions(target, "ncl") == 3
    sel = ds.select(ids, ordered=True)
    assert sel.values("caption") == suggestions
    assert sel.values("caption_original") == old
    assert not any("suspected_mismatch" in t for t in sel.values("tags"))
    # accepting again changes nothing (those captions already are the
    # suggestions) and keeps the very first original
    assert ncl.accept_suggestions(target, "ncl") == 0
    assert sel.values("caption_original") == old
    assert ncl.restore_captions(ds, "caption") == 3
    assert sel.values("caption") == old and ds.count("caption_original") == 0


def test_trained_model_checkpoint_scores_another_dataset(make_dataset, tmp_path):
    ds = make_dataset(n=120, n_swapped=30, seed=1)
    ckpt = tmp_path / "heads.safetensors"
    first = _score(ds, method="gmm", train_heads=True, epochs=3, save_checkpoint=str(ckpt))
    assert ckpt.is_file() and ds.get_brain_info("ncl").config.checkpoint == str(ckpt)
    other = make_dataset(n=120, n_swapped=30, seed=1)
    again = _score(other, model=str(ckpt), run_key="reuse")
    np.testing.assert_allclose(again.similarity, first.similarity, atol=1e-5)
    assert other.get_brain_info("reuse").config.checkpoint == str(ckpt)
    with pytest.raises(ValueError, match="holds a 'gmm' model but method='cosine'"):
        _score(other, model=str(ckpt), method="cosine", run_key="x")
    with pytest.raises(FileNotFoundError, match="model checkpoint not found"):
        _score(other, model=str(tmp_path / "missing.safetensors"), run_key="y")


def test_progress_callback_goes_from_zero_to_one(make_dataset):
    ds = make_dataset(n=60, n_swapped=10)
    seen = []
    _score(ds, method="gmm", train_heads=True, epochs=2, progress=lambda f, label: seen.append((f, label)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert any("heads" in label for _, label in seen)


def test_interrupted_write_leaves_the_dataset_as_it_was(make_dataset, monkeypatch):
    ds = make_dataset(n=60, n_swapped=10)
    _score(ds, method="cosine")
    before = snapshot(ds)
    # write 10 samples per bulk update and stop (as Ctrl-C would) after two
    # of them really reached the database
    monkeypatch.setattr("fiftyone_ncl.fo.writer._CHUNK", 10)
    original = FieldWriter._write_chunk
    calls = {"n": 0}

    def interrupted(self, ops, ids):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, ops, ids)

    monkeypatch.setattr(FieldWriter, "_write_chunk", interrupted)
    # a new run: the fields it created are removed again
    with pytest.raises(KeyboardInterrupt):
        _score(ds, method="gmm", run_key="other")
    assert calls["n"] == 3
    assert snapshot(ds) == before
    # overwriting the existing run: its old values come back
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        _score(ds, method="gmm", overwrite=True, store_embeddings=True)
    assert snapshot(ds) == before
    assert ds.get_brain_info("ncl").config.method_name == "cosine"


def test_plot_confidence_writes_standalone_html(make_dataset, tmp_path):
    ds = make_dataset(n=80, n_swapped=20)
    _score(ds, method="gmm")
    path = tmp_path / "confidence.html"
    fig = ncl.plot_confidence(ds, "ncl", path=str(path))
    names = [t.name for t in fig.data]
    assert "clean component" in names and "noisy component" in names
    html = path.read_text()
    assert os.path.getsize(path) > 1_000_000  # plotly.js inlined: opens offline
    assert "confidence" in html


def test_self_check_injects_known_swaps_into_a_copy(make_dataset):
    ds = make_dataset(n=120, n_swapped=0, group=[["a"], ["b"], ["c"]] * 40)
    before = snapshot(ds)
    datasets = set(fo.list_datasets())
    result = ncl.self_check(
        ds, "caption", rate=0.3, method="gmm", image_embeddings="img", text_embeddings="txt", progress=False
    )
    assert result["kind"] == "random" and result["n_noisy"] > 20
    assert result["auroc"] > 0.95  # the stored caption embeddings moved with their captions
    assert snapshot(ds) == before and set(fo.list_datasets()) == datasets
    # category-aware: swaps only between samples of one group
    kept = ncl.self_check(
        ds, "caption", rate=0.3, kind="category", categories_field="group", method="cosine",
        image_embeddings="img", text_embeddings="txt", keep=True, progress=False,
    )
    try:
        copy = fo.load_dataset(kept["dataset"])
        groups = dict(zip(ds.values("caption"), ds.values("group")))
        original = ds.values("caption")
        for caption, old, group, flag in zip(
            copy.values("caption"), original, copy.values("group"), copy.values("ncl_injected")
        ):
            assert groups[caption] == group  # moved only within its group
            assert flag == (caption != old)  # the truth marks exactly the moved captions
        assert sum(copy.values("ncl_injected")) == kept["n_noisy"] > 20
        assert copy.get_brain_info("self_check").config.method_name == "cosine"
    finally:
        fo.delete_dataset(kept["dataset"])
    with pytest.raises(ValueError, match="needs categories_field"):
        ncl.self_check(ds, "caption", kind="category")


def test_fine_tuning_open_clip_end_to_end_through_the_sdk(photo_dataset, tmp_path):
    options = dict(
        recipe="open_clip_finetune", encoder="open_clip:ViT-S-32:random", batch_size=4,
        embed_dim=32, hidden_dim=64, stages=(1,), warmup_epochs=1,
    )
    ckpt = tmp_path / "crcl-clip.safetensors"
    results = ncl.compute_correspondence(
        photo_dataset, "caption", method="crcl", run_key="ft", save_checkpoint=str(ckpt), progress=False, **options
    )
    assert results.n_pairs == 12 and ckpt.is_file()
    config = photo_dataset.get_brain_info("ft").config
    assert config.recipe["towers"] == "open_clip" and config.sources["text"] == "open_clip tokens"
    assert "towers" not in config.method_config  # the inputs decide the towers, not the method
    assert photo_dataset.count("ft_label") == 12
    again = ncl.compute_correspondence(photo_dataset, "caption", model=str(ckpt), run_key="ft2", progress=False)
    np.testing.assert_allclose(again.similarity, results.similarity, atol=1e-4)
    with pytest.raises(ValueError, match="do not pass image_embeddings"):
        ncl.compute_correspondence(
            photo_dataset, "caption", method="crcl", run_key="ft3", image_embeddings="x", progress=False, **options
        )
    # the arguments of the previous release still work, with a warning
    legacy = dict(options, towers="open_clip", clip_model="ViT-S-32", clip_pretrained=None)
    del legacy["recipe"], legacy["encoder"]
    with pytest.warns(DeprecationWarning, match="towers"):
        old = ncl.compute_correspondence(photo_dataset, "caption", method="crcl", run_key="ft4", progress=False,
                                         save_checkpoint=False, **legacy)
    np.testing.assert_allclose(old.similarity, results.similarity, atol=1e-4)


def test_auto_chooses_on_injected_swaps_and_records_why(make_dataset):
    small = make_dataset(n=100, n_swapped=20)
    res = _score(small)  # the default
    assert res.config.method_name == "gmm" and "fewer than the 200" in res.summary()["auto"]["reason"]

    ds = make_dataset(n=250, n_swapped=50)
    with pytest.raises(ValueError, match="no candidate .* takes the options nope"):
        _score(ds, method="auto", nope=1)
    with pytest.raises(ValueError, match="takes no model"):
        _score(ds, method="auto", model="/nonexistent.safetensors")
    assert ds.list_brain_runs() == []
    res = _score(ds, method="auto", stages=(1, 1), warmup_epochs=1)  # stages: crcl's only
    auto = ncl.get_run_info(ds, "ncl")["info"]["auto"]
    assert set(auto["auroc"]) == {"cca", "gmm", "crcl"} and auto["pairs"] == 250
    assert res.config.method_name == auto["chosen"] == max(auto["auroc"], key=auto["auroc"].get)
    truth = np.array(ds.values("truth"))
    assert ncl.evaluate(ds, "ncl", "truth")["auroc"] > 0.9 and res.noisy[~truth].mean() < 0.05


def test_folds_decide_on_out_of_sample_statistics(make_dataset):
    ds = make_dataset(n=160, n_swapped=32)
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        _score(ds, method="cca", folds=1)
    with pytest.raises(ValueError, match="drop folds or model"):
        _score(ds, method="cca", folds=3, model="/nonexistent.safetensors")
    res = _score(ds, method="cca", folds=4)
    assert ncl.get_run_info(ds, "ncl")["info"]["null"]["folds"] == 4
    truth = np.array(ds.values("truth"))
    # every pair was scored by a model that never saw it; swaps are still found
    assert ncl.evaluate(ds, "ncl", "truth")["auroc"] > 0.9
    assert res.noisy[truth].mean() > 0.5 and res.noisy[~truth].mean() < 0.05
    # and re-deciding reads the stored out-of-sample statistic
    res2 = ncl.decide(ds, "ncl", decision="top_k", level=32)
    assert set(np.flatnonzero(res2.noisy)) == set(np.argsort(res.statistic)[:32])
