"""The review loop in the real App: score, review, map, tag.

Each test opens a fresh page on the session's photo dataset (see
conftest.py), drives the plugin's operators through their forms like a user,
checks what the App shows and what reached the database, and saves a
screenshot of each step under ``test-artifacts/browser/``.
"""
import re
import time

import numpy as np
import pytest
import yaml
from PIL import Image

import fiftyone.operators as foo

import fiftyone_ncl as ncl
from fiftyone_ncl.core.metrics import detection_metrics
from fiftyone_ncl.visualize import visualization_key

from ..conftest import PLUGIN
from .conftest import RUN_KEY, UMAP_SPACE

pytestmark = pytest.mark.browser

APP_RUN = "app"
UMAP_KEY = visualization_key(RUN_KEY, UMAP_SPACE)
CONFIDENCE = "%s_confidence" % RUN_KEY
HEX_ID = re.compile(r"^[0-9a-f]{24}$")


def _flagged(dataset, key):
    return dataset.count_values("%s_noisy" % key).get(True, 0)


def test_operator_browser_lists_the_plugin(app, repo_root):
    names = yaml.safe_load((repo_root / "fiftyone.yml").read_text())["operators"]
    labels = {}
    for name in names:
        config = foo.get_operator("%s/%s" % (PLUGIN, name)).config
        if not config.unlisted:
            labels[name] = config.label
    assert "Compute correspondence" in labels.values()

    browser = app.operator_labels("correspondence")
    listed = {line.strip() for line in browser.inner_text().splitlines()}
    app.shot("01-operator-browser")
    wanted = {n: l for n, l in labels.items() if "correspondence" in (n + l).lower()}
    assert set(wanted.values()) <= listed, listed
    # every listed operator can be found by its label
    for name, label in labels.items():
        app.page.fill("[data-cy=operators-browser-search]", label)
        row = browser.get_by_text(label, exact=True)
        row.wait_for(timeout=5_000)
        assert browser.get_by_text(name, exact=True).count(), name


def test_compute_correspondence_through_its_form(app):
    dataset = app.dataset
    form = app.open_operator("Compute correspondence")
    form.choose_dropdown("Method", "gmm")
    form.choose_radio("Precomputed fields")
    form.choose_autocomplete("Image embeddings field", "image_embedding")
    form.choose_autocomplete("Caption embeddings field", "caption_embedding")
    form.check("Store embeddings")
    form.fill("Run key", APP_RUN)
    form.wait_valid()
    app.shot("02-compute-form-bottom")
    form.field("Caption field").scroll_into_view_if_needed()
    app.shot("02-compute-form")
    form.execute()

    text = app.notification(r"%s: \d+ of \d+ pairs flagged" % APP_RUN)
    flagged, pairs = map(int, re.search(r"(\d+) of (\d+)", text).groups())
    app.close_dialogs()

    # the new fields appear in the sidebar
    entry = app.page.locator("[data-cy=sidebar-field-%s_confidence]" % APP_RUN)
    entry.wait_for()
    entry.scroll_into_view_if_needed()
    for suffix in ("noisy", "similarity", "suggestion", "emb_image", "emb_text"):
        app.page.locator("[data-cy=sidebar-field-%s_%s]" % (APP_RUN, suffix)).wait_for()
    app.wait_grid_settled()
    app.shot("02-compute-done-sidebar")

    # ... and exist on the dataset, equal to the SDK's run on the same inputs
    dataset.reload()
    assert APP_RUN in ncl.list_runs(dataset)
    info = dataset.get_brain_info(APP_RUN)
    assert info.config.method_name == "gmm"
    schema = dataset.get_field_schema()
    for suffix in ("confidence", "noisy", "similarity", "suggestion", "emb_image", "emb_text"):
        assert "%s_%s" % (APP_RUN, suffix) in schema
    assert pairs == len(dataset) == dataset.count("%s_confidence" % APP_RUN)
    assert flagged == _flagged(dataset, APP_RUN) > 0
    np.testing.assert_allclose(
        dataset.values("%s_confidence" % APP_RUN), dataset.values(CONFIDENCE), atol=1e-6
    )
    # the scores mean something: the swapped captions are the unlikely ones
    metrics = detection_metrics(
        np.array(dataset.values("mismatch")), np.array(dataset.values("%s_confidence" % APP_RUN))
    )
    assert metrics["auroc"] > 0.8, metrics


def test_review_suspects_in_confidence_order(app):
    dataset = app.dataset
    app.clear_view()
    form = app.open_operator("Review suspected mismatches")
    form.choose_dropdown("Run", RUN_KEY)
    form.execute()

    expected = ncl.suspects_view(dataset, RUN_KEY)
    expected_ids = expected.values("id")
    assert 0 < len(expected_ids) < len(dataset)
    app.wait_sample_count(len(expected_ids))
    app.wait_grid()

    # the thumbnails, in reading order, are the suspects, least confident first
    app.show_field("id")
    app.page.wait_for_function(
        "() => Array.from(document.querySelectorAll('[data-cy=looker] [class*=lookerTags]'))"
        ".some(e => /^[0-9a-f]{24}$/.test(e.innerText.trim().split(/\\s+/)[0]))"
    )
    shown = [next((t for t in tags if HEX_ID.match(t)), None) for tags in app.grid_tags()]
    assert None not in shown, shown
    assert len(shown) >= min(len(expected_ids), 8)
    assert shown == expected_ids[: len(shown)]

    # the view is saved on the dataset
    dataset.reload()
    name = "%s-suspects" % RUN_KEY
    assert name in dataset.list_saved_views()
    assert dataset.load_saved_view(name).values("id") == expected_ids

    # what a reviewer looks at: the caption and the suggested one
    app.show_field("id", False)
    app.show_field("caption")
    app.show_field("%s_suggestion" % RUN_KEY)
    app.page.get_by_text(expected.first()["caption"], exact=True).first.wait_for()
    app.wait_grid_settled()
    app.shot("03-suspects-grid")


def test_embeddings_panel_colours_the_map_by_confidence(app):
    dataset = app.dataset
    page = app.page
    app.clear_view()
    content = app.embeddings_panel()
    card = content.locator("[role=button][data-interactive=true]").filter(
        has=page.get_by_text(UMAP_KEY, exact=True)
    )
    card.click()
    canvas = content.locator('canvas[data-engine^="three.js"]')
    canvas.wait_for()
    content.get_by_text(re.compile(r"^\s*%d points\s*$" % len(dataset))).wait_for()
    before = _wait_for_points(app, canvas)

    content.get_by_role("button", name="Color by").click()
    page.get_by_role("option", name=CONFIDENCE, exact=True).click()
    legend = content.get_by_role("group", name="Color legend")
    legend.get_by_text(CONFIDENCE, exact=False).wait_for()
    # a palette saturated at both ends: magenta (unlikely match) to yellow
    content.get_by_role("button", name="Plot settings").click()
    page.get_by_text("Spring", exact=True).click()
    page.keyboard.press("Escape")
    pixels = _wait_for_points(app, canvas, differs_from=before)
    Image.fromarray(pixels).save(app.artifacts / "04-embeddings-canvas.png")
    app.shot("04-embeddings-by-confidence")

    painted = _painted(pixels)
    # not blank: several pixels per point
    assert painted.sum() >= 5 * len(dataset), painted.sum()
    # coloured by confidence: suspects at the magenta end, the others at the
    # yellow end, each with a few pixels per point
    rgb = pixels[painted].astype(int)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    magenta = (r > 90) & (b > 90) & (g < np.minimum(r, b) - 50)
    yellow = (r > 90) & (g > 90) & (b < g - 40)
    n_suspects = len(ncl.suspects_view(dataset, RUN_KEY))
    assert magenta.sum() >= 3 * n_suspects, (magenta.sum(), yellow.sum(), n_suspects)
    assert yellow.sum() >= 3 * (len(dataset) - n_suspects), (magenta.sum(), yellow.sum(), n_suspects)


def _painted(pixels):
    """Pixels that differ from the plot's background (its commonest colour)."""
    flat = pixels.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[counts.argmax()].astype(int)
    return np.abs(pixels.astype(int) - background).max(axis=-1) > 40


def _wait_for_points(app, canvas, differs_from=None, timeout=15.0):
    """Canvas pixels once points are drawn (and, with ``differs_from``, once
    they changed from that)."""
    deadline = time.monotonic() + timeout
    while True:
        pixels = app.plot_pixels(canvas)
        drawn = _painted(pixels).sum() > 0
        changed = differs_from is None or differs_from.shape != pixels.shape or (differs_from != pixels).any()
        if (drawn and changed) or time.monotonic() > deadline:
            return pixels
        app.page.wait_for_timeout(250)


def test_visualize_operator_adds_a_map(app):
    dataset = app.dataset
    key = visualization_key(RUN_KEY, "emb_text")
    form = app.open_operator("Visualize correspondence embeddings")
    form.choose_dropdown("Run", RUN_KEY)
    form.choose_dropdown("Space", "emb text")
    form.execute()
    # the UMAP runs in the App server (numba compiles on first use there),
    # then the operator opens the Embeddings panel, which lists the new map
    content = app.page.locator("[data-cy=panel-content-Embeddings]")
    content.get_by_text(key, exact=True).wait_for(timeout=180_000)
    app.notification(re.escape(key))
    app.close_dialogs()
    app.wait_grid_settled()
    app.shot("05-visualize-new-map")
    dataset.reload()
    assert key in dataset.list_brain_runs()
    assert dataset.get_brain_info(RUN_KEY).config.visualization_keys["emb_text"] == key


def test_tag_the_least_confident_sample(app):
    dataset = app.dataset
    assert dataset.count_sample_tags() == {}
    app.clear_view()
    form = app.open_operator("Review suspected mismatches")
    form.choose_dropdown("Run", RUN_KEY)
    form.execute()
    suspects = ncl.suspects_view(dataset, RUN_KEY)
    app.wait_sample_count(len(suspects))

    form = app.open_operator("Tag suspected mismatches")
    form.choose_dropdown("Run", RUN_KEY)
    form.choose_radio("Least confident k")
    form.fill("k", 1)
    form.execute(output="Samples tagged")
    assert re.search(r"Samples tagged:?\s+1\b", form.modal.inner_text()), form.modal.inner_text()
    app.shot("06-tag-result")
    app.close_dialogs()
    app.wait_grid_settled()

    dataset.reload()
    assert dataset.count_sample_tags() == {"suspected_mismatch": 1}
    assert dataset.match_tags("suspected_mismatch").values("id") == [suspects.first().id]

    # the App shows the tag on the first (least confident) thumbnail
    app.show_field("tags")
    app.page.locator("[data-cy=looker] [class*=lookerTags]").get_by_text("suspected_mismatch").first.wait_for()
    tags = app.grid_tags()
    assert "suspected_mismatch" in tags[0], tags[:3]
    assert not any("suspected_mismatch" in t for t in tags[1:]), tags
    app.shot("06-tagged-in-grid")


def test_change_which_pairs_are_flagged_without_retraining(app):
    dataset = app.dataset
    similarity = dataset.values("%s_similarity" % RUN_KEY)
    app.clear_view()
    form = app.open_operator("Change which pairs are flagged")
    form.choose_dropdown("Run", RUN_KEY)
    before = ncl.load_run_results(dataset, RUN_KEY)
    # the form opens on the run's estimate and current decision, with its plot
    form.modal.get_by_text(re.compile(r"pairs flagged \(")).first.wait_for()
    preview = app.plotly_plot(form.modal)
    assert "%d of %d pairs flagged" % (before.n_noisy, before.n_pairs) in app.plotly_title(preview)
    app.shot("07-decide-form", form.modal)
    form.choose_radio("The k lowest")
    form.fill("k", 4)
    # (the form's estimate already says "pairs flagged": wait for a result-only label)
    form.execute(output="Samples tagged")
    text = form.modal.inner_text()
    assert re.search(r"Pairs flagged:?\s+4\b", text) and re.search(r"Samples tagged:?\s+4\b", text), text
    # the output plots the new decision: 4 flagged, the cut moved
    plot = app.plotly_plot(form.modal)
    app.shot("07-decide-result", form.modal)  # the counts, the plot's top
    plot.scroll_into_view_if_needed()
    app.page.wait_for_function(
        "el => /4 of \\d+ pairs flagged \\(top_k, level 4\\)/.test(el.textContent)",
        arg=plot.element_handle(),
    )
    title = app.plotly_title(plot)
    assert "4 of %d pairs flagged (top_k, level 4)" % len(dataset) in title, title
    app.page.mouse.move(1, 1)  # plotly's mode bar shows while hovered
    app.shot("07-decide-result-plot", plot)
    box = plot.bounding_box()
    assert box["width"] > 300 and box["height"] > 400, box
    assert plot.locator(".legendtext").filter(has_text="flagged pairs").count() == 1
    # the decoys' statistic: scaled to the estimated (or at most) mismatched pairs
    decoys = plot.locator(".legendtext").filter(has_text=re.compile(r"noisy component|decoy pairs"))
    assert decoys.count() == 1

    # ... and opens the flagged pairs
    opener = form.modal.get_by_role("button", name="Open the 4 flagged pairs")
    opener.scroll_into_view_if_needed()
    app.shot("07-decide-result-bottom", form.modal)
    opener.click()
    app.wait_sample_count(4)
    app.close_dialogs()
    app.wait_grid_settled()
    app.shot("07-decide-suspects-grid")

    dataset.reload()
    results = ncl.load_run_results(dataset, RUN_KEY)
    assert results.decision["mode"] == "top_k" and _flagged(dataset, RUN_KEY) == 4
    lowest = set(np.array(results.sample_ids)[np.argsort(results.statistic)[:4]])
    assert set(dataset.match_tags("suspected_mismatch").values("id")) == lowest
    assert dataset.values("%s_similarity" % RUN_KEY) == similarity  # no retraining


def test_plot_confidence_shows_the_run_decision(app):
    dataset = app.dataset
    results = ncl.load_run_results(dataset, RUN_KEY)
    form = app.open_operator("Plot correspondence confidence")
    form.choose_dropdown("Run", RUN_KEY)
    form.wait_valid()
    form.execute_button.click()
    # the output draws the figure's traces (not an empty frame)
    plot = app.plotly_plot(form.modal, timeout=60_000)
    title = app.plotly_title(plot)
    sentence = "%d of %d pairs flagged (%s, level %s)" % (
        results.n_noisy, results.n_pairs, results.decision["mode"], results.decision["level"])
    assert sentence in title, title
    assert plot.locator(".legendtext").filter(has_text="flagged pairs").count() == 1
    plot.scroll_into_view_if_needed()
    app.page.mouse.move(1, 1)  # plotly's mode bar shows while hovered
    app.shot("08-plot-confidence", plot)
    app.close_dialogs()


def test_the_server_logged_no_error(browser, app_server, artifacts):
    log = (artifacts / "server.log").read_text()
    assert "Traceback" not in log and "Failed to register operators" not in log, log[-3000:]
