"""Scoring in chunks (``ncl.score_in_chunks``) against a real MongoDB: the
same ranking and the same kind of decision as a normal run, journaled writes,
refused inputs."""
import numpy as np
import pytest

import fiftyone as fo
import fiftyone.core.fields as fof

import fiftyone_ncl as ncl
from fiftyone_ncl.core.metrics import detection_metrics
from fiftyone_ncl.fo import streaming
from fiftyone_ncl.fo.streaming import StreamedResults, StreamedRunError, decide_in_chunks
from fiftyone_ncl.fo.writer import FieldWriter

from .conftest import joint_embeddings, snapshot

pytestmark = pytest.mark.integration

N, SWAPPED, CHUNK = 3000, 300, 700  # five chunks, the last one short


def _dataset(n=N, n_swapped=SWAPPED, dim=16, noise=1.0, seed=0):
    """n samples with ``img``/``txt`` vectors of one space (noisy enough
    that matched and swapped pairs overlap), the swapped ones scattered."""
    img, txt, truth = joint_embeddings(n, dim, n_swapped, seed=seed, noise=noise)
    order = np.random.default_rng(seed + 1).permutation(n)
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath="/nonexistent/stream/%05d.jpg" % i, caption="caption %d" % i,
                              img=img[j], txt=txt[j], truth=bool(truth[j])) for i, j in enumerate(order)],
                   progress=False)
    return ds


@pytest.fixture(scope="module")
def scored():
    """One dataset scored by compute_correspondence (gmm, key ``full``) and
    by score_in_chunks (gmm, key ``ncl``)."""
    ds = _dataset()
    full = ncl.compute_correspondence(ds, "caption", method="gmm", run_key="full", image_embeddings="img",
                                      text_embeddings="txt", suggest=False, progress=False)
    seen = []
    streamed = ncl.score_in_chunks(ds, "img", "txt", chunk_size=CHUNK, caption_field="caption",
                                   progress=lambda f, label: seen.append(f))
    yield ds, full, streamed, seen
    ds.delete()


def _field(ds, name):
    return np.asarray(ds.values(name))


def test_the_ranking_and_decision_match_a_normal_gmm_run(scored):
    ds, full, streamed, _ = scored
    truth = _field(ds, "truth")
    sim_full, sim_streamed = _field(ds, "full_similarity"), _field(ds, "ncl_similarity")
    # the same statistic: the pair's cosine in the given space
    np.testing.assert_allclose(sim_streamed, sim_full, rtol=0, atol=1e-6)
    auroc_full = detection_metrics(truth, sim_full)["auroc"]
    auroc_streamed = detection_metrics(truth, sim_streamed)["auroc"]
    assert auroc_streamed == pytest.approx(auroc_full, abs=1e-6)
    assert 0.6 < auroc_full < 1.0  # the swaps overlap the matched pairs: a real ranking problem

    # the same kind of records: estimate and decision from the decision layer
    assert set(streamed.decision) == set(full.decision) | {"fitted_on"}
    assert set(streamed.mismatch_rate) == set(full.mismatch_rate)
    assert streamed.decision["mode"] == "probability" and streamed.decision["level"] == 0.5
    rate_s, rate_f = streamed.mismatch_rate, full.mismatch_rate
    assert rate_s["usable"] and rate_f["usable"]
    # two estimates from decoys drawn differently (within chunks, or across
    # the collection): their intervals overlap
    assert rate_s["low"] <= rate_f["high"] and rate_f["low"] <= rate_s["high"]
    assert streamed.info["null"]["n_decoys"] == full.info["null"]["n_decoys"] == N

    # both flag a lowest set of the same similarity: one set holds the other
    noisy_s, noisy_f = _field(ds, "ncl_noisy"), _field(ds, "full_noisy")
    assert np.all(noisy_s <= noisy_f) or np.all(noisy_f <= noisy_s)
    assert noisy_s.sum() == streamed.n_noisy
    # the confidence is P(matched), monotone in the similarity
    conf = _field(ds, "ncl_confidence")
    assert np.all((conf > 0) & (conf < 1))
    order = np.argsort(sim_streamed, kind="stable")
    assert np.all(np.diff(conf[order]) >= 0)
    assert np.array_equal(noisy_s, conf < 0.5)
    assert streamed.info["calibration"]["higher_is_clean"] is True  # the gmm fit, recorded as a normal run's


def test_fields_types_and_run_record(scored):
    ds, _, streamed, seen = scored
    schema = ds.get_field_schema()
    for suffix, ftype in (("confidence", fof.FloatField), ("noisy", fof.BooleanField),
                          ("similarity", fof.FloatField), ("margin", fof.FloatField)):
        assert type(schema["ncl_" + suffix]) is ftype
        assert ds.count("ncl_" + suffix) == N
    assert not [f for f in schema if f.startswith("ncl_") and f[4:] not in streaming.SUFFIXES]
    margin, noisy = _field(ds, "ncl_margin"), _field(ds, "ncl_noisy")
    assert np.array_equal(margin < 0, noisy)

    assert sorted(ncl.list_runs(ds)) == ["full", "ncl"]
    info = ncl.get_run_info(ds, "ncl")
    assert info["state"] == "complete" and info["pairs"] == N and info["flagged"] == streamed.n_noisy
    assert info["streaming"] is True and info["chunk_size"] == CHUNK
    assert info["config"]["streaming"] is True and info["config"]["chunks"] == 5
    assert info["config"]["sample_size"] == N and info["config"]["sampled"] is False
    assert info["info"]["decision"]["n"] == N and info["info"]["decision"]["fitted_on"] == N
    assert info["config"]["method_name"] == "gmm" and info["config"]["caption_field"] == "caption"
    assert info["mismatch_rate"]["rate"] == streamed.mismatch_rate["rate"]
    assert "look mismatched" in ncl.describe_estimate(streamed)
    assert fractions_rise_to_one(seen)

    # review helpers read the fields
    assert len(ncl.suspects_view(ds, "ncl")) == streamed.n_noisy

    # no per-pair arrays: functions needing them say so
    loaded = ncl.load_run_results(ds, "ncl")
    assert isinstance(loaded, StreamedResults) and len(loaded.null_statistic) == N
    with pytest.raises(StreamedRunError, match="scored in chunks"):
        loaded.confidence
    with pytest.raises(StreamedRunError, match="decide_in_chunks"):
        ncl.decide(ds, "ncl", "fdr")
    with pytest.raises(StreamedRunError, match="scored in chunks"):
        ncl.evaluate(ds, "ncl", "truth")


def fractions_rise_to_one(seen):
    return seen == sorted(seen) and seen[-1] == pytest.approx(1.0)


def test_decide_in_chunks_equals_scoring_with_that_decision(scored):
    ds, _, _, _ = scored
    direct = ncl.score_in_chunks(ds, "img", "txt", run_key="fdr", chunk_size=CHUNK, decision="fdr", level=0.05,
                                 progress=False)
    redecided = decide_in_chunks(ds, "ncl", decision="fdr", level=0.05, chunk_size=500, progress=False)
    assert redecided.decision["mode"] == "fdr" and redecided.config.decision == "fdr"
    assert redecided.n_noisy == direct.n_noisy
    for suffix in ("confidence", "noisy", "margin"):
        assert ds.values("ncl_" + suffix) == ds.values("fdr_" + suffix)
    # and back
    back = decide_in_chunks(ds, "ncl", progress=False)
    assert back.decision["mode"] == "probability"
    assert np.array_equal(_field(ds, "ncl_noisy"), _field(ds, "ncl_confidence") < 0.5)
    ncl.delete_run(ds, "fdr")
    assert "fdr_confidence" not in ds.get_field_schema()


def test_a_decision_fitted_on_a_sample_applies_to_every_pair(scored):
    ds, _, exact, _ = scored
    sampled = ncl.score_in_chunks(ds, "img", "txt", run_key="sampled", chunk_size=CHUNK, sample_size=1000,
                                  progress=False)
    config = ds.get_brain_info("sampled").config
    assert config.sampled is True and config.sample_size == 1000
    assert sampled.decision["fitted_on"] == 1000 and sampled.decision["n"] == N
    assert len(sampled.sample_statistic) == 1000 and sampled.info["null"]["n_decoys"] == N
    sim = _field(ds, "sampled_similarity")
    np.testing.assert_array_equal(sim, _field(ds, "ncl_similarity"))
    noisy, conf = _field(ds, "sampled_noisy"), _field(ds, "sampled_confidence")
    assert noisy.sum() == sampled.n_noisy == sampled.decision["n_flagged"]
    # flagged below the sample's cut, confidence monotone in the similarity
    assert noisy.any() and sim[noisy].max() < sampled.decision["cut"] <= sim[~noisy].min()
    order = np.argsort(sim, kind="stable")
    assert np.all(np.diff(conf[order]) >= 0)
    # the same statistic cut elsewhere: one flag set holds the other
    exact_noisy = _field(ds, "ncl_noisy")
    assert np.all(noisy <= exact_noisy) or np.all(exact_noisy <= noisy)
    rate, exact_rate = sampled.mismatch_rate, exact.mismatch_rate
    assert rate["low"] <= exact_rate["high"] and exact_rate["low"] <= rate["high"]
    # re-deciding fits on the stored sample again
    again = decide_in_chunks(ds, "sampled", progress=False)
    assert again.n_noisy == sampled.n_noisy and ds.values("sampled_confidence") == conf.tolist()
    ncl.delete_run(ds, "sampled")


@pytest.mark.parametrize("sample_size", [200_000, 500], ids=["exact", "sampled"])
def test_a_failure_mid_write_leaves_the_dataset_as_it_was(monkeypatch, sample_size):
    ds = _dataset(n=1200, n_swapped=100)
    ncl.compute_correspondence(ds, "caption", method="cosine", image_embeddings="img", text_embeddings="txt",
                               progress=False)
    before = snapshot(ds)
    original = FieldWriter.set_many
    calls = {"n": 0}

    def stop_after_two_chunks(self, ids, columns):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as Ctrl-C would, two chunks written
        return original(self, ids, columns)

    monkeypatch.setattr(FieldWriter, "set_many", stop_after_two_chunks)
    try:
        # a new run key: the fields it created go again
        with pytest.raises(KeyboardInterrupt):
            ncl.score_in_chunks(ds, "img", "txt", run_key="other", chunk_size=300, sample_size=sample_size,
                                progress=False)
        assert calls["n"] == 3
        assert snapshot(ds) == before
        # replacing a normal run: its values, fields and record come back
        calls["n"] = 0
        with pytest.raises(KeyboardInterrupt):
            ncl.score_in_chunks(ds, "img", "txt", chunk_size=300, sample_size=sample_size, overwrite=True,
                                progress=False)
        assert calls["n"] == 3
        assert snapshot(ds) == before
        assert ds.get_brain_info("ncl").config.method_name == "cosine"
        assert ncl.list_incomplete_runs(ds) == {}
    finally:
        ds.delete()


def test_a_streamed_run_replaces_a_normal_one_on_a_view():
    ds = _dataset(n=400, n_swapped=40)
    try:
        ncl.compute_correspondence(ds, "caption", method="gmm", image_embeddings="img", text_embeddings="txt",
                                   progress=False)
        assert "ncl_suggestion" in ds.get_field_schema()
        view = ds.skip(100)
        results = ncl.score_in_chunks(view, "img", "txt", method="cosine", chunk_size=128, overwrite=True,
                                      progress=False)
        assert results.n_pairs == 300
        assert ds.count("ncl_confidence") == 300  # the 100 samples outside the view were cleared
        schema = ds.get_field_schema()
        assert "ncl_suggestion" not in schema and "ncl_duplicate_group" not in schema
        assert ds.get_brain_info("ncl").config.method_name == "cosine"
        assert results.info["calibration"].startswith("none")
        ncl.rename_run(ds, "ncl", "renamed")
        assert ds.count("renamed_similarity") == 300
        ncl.delete_run(ds, "renamed")
        assert not [f for f in ds.get_field_schema() if f.startswith("renamed_")]
    finally:
        ds.delete()


def test_bad_inputs_are_refused_before_anything_is_written():
    ds = _dataset(n=40, n_swapped=4)
    try:
        ds.add_sample_field("short", fof.VectorField)
        ds.set_values("short", [np.ones(8, dtype=np.float32)] * len(ds))
        before = snapshot(ds)

        def refused(match, *args, **kwargs):
            kwargs.setdefault("progress", False)
            with pytest.raises(ValueError, match=match):
                ncl.score_in_chunks(ds, *args, **kwargs)
            assert snapshot(ds) == before

        refused("field 'nope' does not exist", "img", "nope")
        refused("text embeddings field 'caption' is a StringField, not a VectorField", "img", "caption")
        refused("'img' holds 16-d vectors and text embeddings field 'short' 8-d", "img", "short")
        refused("method 'crcl' cannot be scored in chunks.*compute_correspondence", "img", "txt", method="crcl")
        refused("method 'neighbors' cannot be scored in chunks", "img", "txt", method="neighbors")
        refused("unknown method", "img", "txt", method="nope")
        refused("decision='f1' needs pairs a person marked", "img", "txt", decision="f1")
        refused("level for top_k must be a whole number", "img", "txt", decision="top_k", level=0.5)
        refused("chunk_size must be an integer >= 2", "img", "txt", chunk_size=1)
        field = ds.get_field("txt")  # fields of two spaces
        field.info = {"ncl_space": "open_clip:ViT-B-32"}
        field.save()
        before = snapshot(ds)
        refused("space 'field'.*space 'open_clip:ViT-B-32'.* not one joint space", "img", "txt")
        field.info = {}
        field.save()

        # a bad vector met in a later chunk: refused before any write
        late = ds.skip(30).first()
        late["txt"] = None
        late.save()
        before = snapshot(ds)
        refused("text embeddings field 'txt' has no vector on 1 samples \\(e.g. %s\\)" % late.id, "img", "txt",
                chunk_size=8)
        late["txt"] = np.ones(12, dtype=np.float32)
        late.save()
        before = snapshot(ds)
        refused("'txt' mixes vectors of different dimensions: 16-d and 12-d \\(e.g. sample %s\\)" % late.id,
                "img", "txt", chunk_size=8)
        late["txt"] = np.zeros(16, dtype=np.float32)
        late.save()
        before = snapshot(ds)
        refused("all-zero vectors in 1 rows \\(e.g. %s\\)" % late.id, "img", "txt", chunk_size=8)

        late["txt"] = np.ones(16, dtype=np.float32)
        late.save()
        ncl.score_in_chunks(ds, "img", "txt", progress=False)
        before = snapshot(ds)
        refused("already exists.*overwrite=True", "img", "txt")
    finally:
        ds.delete()
