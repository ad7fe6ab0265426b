"""The figure of a run's decision (``confidence_figure``) and the decide
operator that shows it: the histogram of the statistic of real and decoy
pairs, the cut, the estimate and the counts follow the run's current
decision, for every method and for runs older than the null."""
import numpy as np
import pytest

import fiftyone.operators as foo

import fiftyone_ncl as ncl

from ..conftest import PLUGIN

pytestmark = pytest.mark.integration

FIELDS = dict(image_embeddings="img", text_embeddings="txt", progress=False)
# fast options of the trained methods (as in test_operators.py)
METHOD_OPTIONS = {
    "crcl": dict(stages=(1, 1), warmup_epochs=1),
    "ensemble": dict(members="cosine, neighbors"),
}


def _traces(fig):
    return {t.name: t for t in fig.data}


def _cut_lines(fig):
    """x of the dashed vertical lines on the statistic's axis (row 1)."""
    return [s.x0 for s in fig.layout.shapes if s.type == "line" and s.xref == "x" and s.x0 == s.x1]


def _check_follows_decision(fig, results):
    """The figure shows exactly the run's current flags, cut and sentence."""
    traces = _traces(fig)
    flagged, kept = traces["flagged pairs"], traces["kept pairs"]
    assert sum(flagged.y) == results.n_noisy and sum(kept.y) == results.n_pairs - results.n_noisy
    # binned: a few numbers whatever the collection size
    assert len(flagged.x) == len(kept.x) == 50 and len(traces["confidence"].y) == 50
    decision = results.decision
    title = fig.layout.title.text
    assert "%d of %d pairs flagged (%s, level %s)" % (
        results.n_noisy, results.n_pairs, decision["mode"], decision["level"]) in title
    estimate = ncl.describe_estimate(results).split("; ")[0]
    assert estimate in title.replace("<br>", " ").replace("<b>", "").replace("</b>", "")
    stat = np.asarray(results.statistic)
    lines = _cut_lines(fig)
    if 0 < results.n_noisy < results.n_pairs:
        assert len(lines) == 1, lines
        cut = lines[0]
        assert np.array_equal(stat < cut, results.noisy)
        assert cut == pytest.approx(decision["cut"])
        # the flagged side is shaded, from the left edge to the cut
        shaded = [s for s in fig.layout.shapes if s.type == "rect" and s.xref == "x"]
        assert len(shaded) == 1 and shaded[0].x1 == pytest.approx(cut)
        return cut
    return None


def test_the_figure_follows_the_decision(make_dataset):
    ds = make_dataset(n=120, n_swapped=24)
    results = ncl.compute_correspondence(ds, "caption", method="gmm", **FIELDS)
    first = ncl.confidence_figure(ds, "ncl")
    cut = _check_follows_decision(first, results)
    assert cut is not None and results.decision["mode"] == "probability"
    # the null drawn as the estimated mismatched pairs: the decoys' histogram
    # scaled to rate x pairs; the clean component is the bars' excess over it
    traces = _traces(first)
    noisy, clean = np.array(traces["noisy component"].y), np.array(traces["clean component"].y)
    rate = results.mismatch_rate["rate"]
    assert rate > 0.1
    assert noisy.sum() == pytest.approx(rate * results.n_pairs, rel=0.02)
    bars = np.array(traces["flagged pairs"].y) + np.array(traces["kept pairs"].y)
    np.testing.assert_allclose(clean, np.maximum(bars - noisy, 0), atol=1e-2)
    assert "estimated mismatched" in traces["noisy component"].legendgrouptitle.text

    for mode, level in (("top_k", 7), ("fraction", 0.3), ("fdr", 0.05), ("probability", 0.5)):
        results = ncl.decide(ds, "ncl", decision=mode, level=level)
        fig = ncl.confidence_figure(ds, "ncl")
        moved = _check_follows_decision(fig, results)
        if mode == "top_k":
            assert results.n_noisy == 7 and "7 of 120 pairs flagged (top_k, level 7)" in fig.layout.title.text
            stat = np.sort(results.statistic)
            assert stat[6] < moved < stat[7] and moved < cut  # the line moved down to the 7th lowest
        if mode == "fraction":
            assert results.n_noisy == 36 and moved > cut
    # back where it started
    assert _cut_lines(fig) == pytest.approx(_cut_lines(first))


def test_nothing_flagged_and_everything_flagged(make_dataset):
    ds = make_dataset(n=60, n_swapped=12)
    ncl.compute_correspondence(ds, "caption", method="cosine", **FIELDS)
    results = ncl.decide(ds, "ncl", decision="top_k", level=0)
    fig = ncl.confidence_figure(ds, "ncl")
    assert _check_follows_decision(fig, results) is None and not _cut_lines(fig)
    assert "nothing flagged" in [a.text for a in fig.layout.annotations]
    results = ncl.decide(ds, "ncl", decision="top_k", level=60)
    fig = ncl.confidence_figure(ds, "ncl")
    assert sum(_traces(fig)["kept pairs"].y) == 0 and not _cut_lines(fig)
    assert "60 of 60 pairs flagged (top_k, level 60)" in fig.layout.title.text


def test_a_clean_collection_draws_the_decoys_at_the_upper_bound_or_full_scale(make_dataset):
    ds = make_dataset(n=80, n_swapped=0)
    results = ncl.compute_correspondence(ds, "caption", method="gmm", **FIELDS)
    assert results.n_noisy == 0 and not results.mismatch_rate["rate"]
    traces = _traces(ncl.confidence_figure(ds, "ncl"))
    if results.mismatch_rate["high"]:
        assert "upper bound" in traces["noisy component"].legendgrouptitle.text
        assert sum(traces["noisy component"].y) == pytest.approx(results.mismatch_rate["high"] * 80, rel=0.05)
    else:
        assert sum(traces["decoy pairs (null)"].y) == pytest.approx(80, rel=0.05)


# disncl left out: its statistic and null come from the same decision layer
# as every method's, and even a tiny fit costs minutes on 2 cores
@pytest.mark.parametrize("method", ["cosine", "gmm", "cca", "neighbors", "ensemble", "auto", "crcl"])
def test_every_method_plots_its_decision(make_dataset, method):
    ds = make_dataset(n=100, n_swapped=20)
    ncl.compute_correspondence(ds, "caption", method=method, **FIELDS, **METHOD_OPTIONS.get(method, {}))
    results = ncl.decide(ds, "ncl", decision="top_k", level=9)
    fig = ncl.confidence_figure(ds, "ncl")
    _check_follows_decision(fig, results)
    assert "Run 'ncl' (%s)" % results.config.method_name in fig.layout.title.text
    names = set(_traces(fig))
    assert names & {"noisy component", "decoy pairs (null)"}, names
    # JSON-ready for the App (no numpy, no infinities)
    plot = ncl.visualize.figure_json(fig)
    assert plot["data"] and "title" in plot["layout"]


def test_a_run_without_a_null_still_plots(make_dataset):
    ds = make_dataset(n=100, n_swapped=20)
    ncl.compute_correspondence(ds, "caption", method="gmm", **FIELDS)
    results = ncl.decide(ds, "ncl", decision="top_k", level=12)
    results.null_statistic = None  # as runs scored before decoys were
    results.save()
    results = ncl.load_run_results(ds, "ncl")
    assert results.null_statistic is None
    fig = ncl.confidence_figure(ds, "ncl")
    _check_follows_decision(fig, results)
    names = set(_traces(fig))
    assert not names & {"noisy component", "clean component", "decoy pairs (null)"}, names
    assert "no decoy null stored" in fig.layout.annotations[0].text
    ncl.plot_confidence(ds, "ncl")  # and the SDK wrapper


def test_a_run_older_than_stored_statistics_plots(make_dataset):
    ds = make_dataset(n=100, n_swapped=20)
    ncl.compute_correspondence(ds, "caption", method="gmm", **FIELDS)
    results = ncl.load_run_results(ds, "ncl")
    flagged = results.n_noisy
    # what such a run recorded: similarity, calibration, flags; no statistic,
    # null or decision
    results.statistic = results.null_statistic = None
    results.info = {k: v for k, v in results.info.items() if k != "decision"}
    results.save()
    fig = ncl.confidence_figure(ds, "ncl")
    traces = _traces(fig)
    assert sum(traces["flagged pairs"].y) == flagged
    assert "%d of 100 pairs flagged (probability, level 0.5)" % flagged in fig.layout.title.text
    assert "predates" in fig.layout.title.text
    # the boundary is read from the flagged pairs when they are a cut on the
    # score shown, else no line (and the subplot title says so)
    score = results.calibration_score if results.calibration_score is not None else results.similarity
    lines = _cut_lines(fig)
    if lines:
        assert np.array_equal(np.asarray(score) < lines[0], results.noisy)
    else:
        assert "not a cut" in fig.layout.annotations[0].text


def _run(uri, dataset, params):
    return foo.execute_operator("%s/%s" % (PLUGIN, uri), dict(dataset=dataset, params=params))


def test_the_decide_operator_returns_the_figure_and_counts(make_dataset):
    ds = make_dataset(n=80, n_swapped=16)
    ncl.compute_correspondence(ds, "caption", method="gmm", **FIELDS)
    result = _run("decide_mismatches", ds, {"run_key": "ncl", "decision": "top_k", "level": 6}).result
    assert result["flagged"] == 6 and result["tagged"] == 6 and result["run_key"] == "ncl"
    assert "marked" not in result and "corrected" not in result  # nothing reviewed yet
    plot = result["plot"]
    names = {t["name"] for t in plot["data"]}
    assert {"flagged pairs", "kept pairs", "noisy component", "confidence"} <= names
    assert "6 of 80 pairs flagged (top_k, level 6)" in plot["layout"]["title"]["text"]
    assert sum(next(t for t in plot["data"] if t["name"] == "flagged pairs")["y"]) == 6

    # reviewed: the marks an f1 cut learns from...
    truth = ds.values("truth")
    ds.set_values("judged", [None if i % 4 else not t for i, t in enumerate(truth)])
    result = _run("decide_mismatches", ds, {"run_key": "ncl", "decision": "f1", "labels": "judged",
                                            "retag": False}).result
    assert result["marked"] == 20 and result["labels"] == "judged" and "corrected" not in result
    assert "(f1" in result["plot"]["layout"]["title"]["text"]
    # ... and captions replaced by suggestions
    with pytest.warns(UserWarning, match="old captions"):  # 'txt' was filled by the test
        ncl.accept_suggestions(ds.match_tags(ncl.DEFAULT_TAG).limit(2), "ncl")
    result = _run("decide_mismatches", ds, {"run_key": "ncl", "decision": "top_k", "level": 6}).result
    assert result["corrected"] == 2 and "marked" not in result

    # the form previews the current decision
    op = foo.get_operator("%s/decide_mismatches" % PLUGIN)
    from fiftyone.operators.executor import ExecutionContext

    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": {"run_key": "ncl"}})
    form = op.resolve_input(ctx).to_json()
    preview = form["type"]["properties"]["current_plot"]["view"]
    assert preview["name"] == "PlotlyView" and any(t["name"] == "flagged pairs" for t in preview["data"])

    # and the output shows it with the counts (labels the browser tests wait on)
    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": {"run_key": "ncl"}, "results": result})
    shown = op.resolve_output(ctx).to_json()["type"]["properties"]
    assert {shown[k]["view"]["label"] for k in ("estimate", "flagged", "tagged")} == {
        "Estimate", "Pairs flagged", "Samples tagged"}
    figure = shown["figure"]["view"]
    assert figure["name"] == "PlotlyView" and figure["data"] == result["plot"]["data"]
    assert "figure" not in result  # else the App would draw that value, not the view's data
    assert shown["corrected"]["view"]["label"] == "Captions corrected"
    assert shown["open_suspects"]["view"]["operator"] == "%s/review_suspects" % PLUGIN
