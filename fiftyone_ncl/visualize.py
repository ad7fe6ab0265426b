"""Looking at a run: UMAP maps of its embedding spaces for the App's
Embeddings panel, and the figure of its decision (the statistic of real and
decoy pairs with the cut, and the confidence histogram)."""
import logging
import textwrap
import warnings

import numpy as np

import fiftyone.core.fields as fof

from fiftyone_ncl.fo.fields import field_name
from fiftyone_ncl.fo.runs import Correspondence, check_run

logger = logging.getLogger(__name__)


def visualization_key(run_key, space):
    """Brain key of the UMAP run of ``space`` (e.g. ``mii_image``) of a run."""
    return "%s_%s_umap" % (run_key, space)


def embedding_spaces(samples, run_key):
    """Names of the vector spaces a run stored (``mii_image``, ``emb_text``...)."""
    config = check_run(samples, run_key)
    return [s for s in config.fields if s.endswith(("_image", "_text")) and not s.startswith("caption_")]


def compute_visualizations(samples, run_key="ncl", spaces=None, method="umap", overwrite=True, seed=51, progress=None, **kwargs):
    """Computes 2-D maps of a run's embedding spaces with
    :func:`fiftyone.brain.compute_visualization`, always from the run's own
    stored vectors (never a default model).

    Each map is a brain run keyed :func:`visualization_key`; the keys are
    recorded on the correspondence run (deleting the run deletes them). In the
    App's Embeddings panel, pick one and colour by ``{run_key}_confidence``.
    For list caption fields a sample's caption-side point is its least
    confident caption.

    Args:
        samples: the dataset or view the run scored
        run_key ("ncl"): the run
        spaces (None): which stored spaces; default all of them
        method ("umap"): ``"umap"``, ``"tsne"`` or ``"pca"``
        overwrite (True): recompute existing maps
        seed (51): random state of the reduction
        progress (None): passed to FiftyOne's progress bars
        **kwargs: options of the reduction (e.g. ``num_neighbors``)

    Returns:
        a dict space -> brain key
    """
    import fiftyone.brain as fob

    config = check_run(samples, run_key)
    available = embedding_spaces(samples, run_key)
    if not available:
        raise ValueError(
            "run %r stored no embeddings; re-run it with store_embeddings=True "
            "(DisNCL always stores its MII/MEI spaces)" % run_key
        )
    spaces = list(spaces or available)
    unknown = [s for s in spaces if s not in available]
    if unknown:
        raise ValueError("run %r has no space %s; it has %s" % (run_key, ", ".join(unknown), ", ".join(available)))

    run_view = samples.load_brain_view(run_key)
    keys = dict(config.visualization_keys)
    for space in spaces:
        brain_key = visualization_key(run_key, space)
        if brain_key in samples.list_brain_runs():
            if not overwrite:
                keys[space] = brain_key
                continue
            samples.delete_brain_run(brain_key)
        embeddings = _space_embeddings(run_view, run_key, space, config)
        if method == "umap":
            kwargs.setdefault("metric", "cosine")
        if method in ("umap", "tsne"):
            kwargs.setdefault("verbose", False)  # FiftyOne's progress bar is enough
        with warnings.catch_warnings():
            # umap-learn's notices about n_jobs with a seed, spectral
            # initialisation and the like: nothing a user can act on
            warnings.filterwarnings("ignore", category=UserWarning, module=r"umap(\.|$)")
            warnings.filterwarnings("ignore", category=UserWarning, message=r".*(n_jobs|random_state|spectral|gradient function).*")
            fob.compute_visualization(
                run_view,
                embeddings=embeddings,
                brain_key=brain_key,
                method=method,
                seed=seed,
                progress=progress,
                **kwargs,
            )
        keys[space] = brain_key
    config.visualization_keys = keys
    Correspondence.update_run_config(samples, run_key, config)
    return keys


def _space_embeddings(view, run_key, space, config):
    """The field name to embed, or an (N, d) array for per-caption matrices."""
    name = field_name(run_key, space)
    field = view.get_field(name)
    if isinstance(field, fof.VectorField):
        return name
    # list captions: (n_captions, d) per sample -> the least confident caption
    mats, confs = view.values([name, field_name(run_key, "caption_confidence")])
    return np.stack([np.asarray(m)[int(np.argmin(c))] for m, c in zip(mats, confs)])


_FLAGGED = "#c62828"
_KEPT = "#9aa5b1"
_CLEAN = "#2e7d32"
_CONFIDENCE = "#5c6bc0"


def confidence_figure(samples, run_key="ncl", bins=50):
    """A plotly figure of a run's current decision, in the spirit of the
    App's data-quality views.

    Top: a histogram of the ranking statistic of the real pairs (higher =
    more likely matched), stacked by the run's current flags (red: flagged,
    grey: kept), with a dashed line at the decision's cut and the flagged
    side shaded. The null (the same model's statistic of decoy pairs, an
    image with another image's caption) is drawn as the **noisy component**:
    the decoys' histogram rescaled from their count to the estimated number
    of mismatched pairs (``rate x pairs``), in pairs per bin like the bars.
    Mismatched pairs score like decoys, so where the real bars sit on that
    line (the low tail) they are mismatches, and the **clean component**
    (the bars' excess over it) is the estimated matched pairs. When the
    estimate is 0 or not identified, the decoys are scaled to the interval's
    upper bound; when that is 0 too, to the number of real pairs (then the
    curve only shows where shuffled pairs would land). Runs scored without a
    null draw the Gaussian components of their mixture estimate instead, and
    runs older than stored statistics draw their similarity (or calibration
    score) with the mixture they were calibrated with. The cut comes from
    the decision (``decision["cut"]``, a statistic value); when it is
    missing or the flags disagree with it, the boundary is read from the
    flagged pairs (midway between the highest flagged and the lowest kept
    score) and no line is drawn when the flags are no cut on this score.

    Bottom: the histogram of the confidence, P(matched), with the
    confidence below which pairs are flagged.

    Title: the run, the estimate sentence
    (:func:`fiftyone_ncl.describe_estimate`) and "N of M pairs flagged
    (mode, level)".

    Every histogram is binned here, so the figure holds ``O(bins)`` numbers
    whatever the collection size.

    Args:
        samples: the dataset or view the run scored
        run_key ("ncl"): the run
        bins (50): bins of each histogram

    Returns:
        a ``plotly.graph_objects.Figure``
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    config = check_run(samples, run_key)
    results = samples.load_brain_results(run_key)
    view = _decision_view(results, config)
    score, flags, conf = view["score"], view["flags"], view["confidence"]

    fig = make_subplots(
        rows=2, cols=1, vertical_spacing=0.16, row_heights=[0.62, 0.38],
        subplot_titles=(view["top_title"], view["bottom_title"]),
    )
    # the statistic: real pairs stacked by their flags, on bins spanning the
    # real pairs and the bulk of the null
    lo, hi = _span(score, view["null"])
    edges = np.linspace(lo, hi, bins + 1)
    centers = ((edges[:-1] + edges[1:]) / 2).round(6).tolist()
    width = float(edges[1] - edges[0])
    counts = {}
    for name, mask, color in (("flagged pairs", flags, _FLAGGED), ("kept pairs", ~flags, _KEPT)):
        counts[name] = np.histogram(np.clip(score[mask], lo, hi), bins=edges)[0]
        fig.add_trace(go.Bar(
            x=centers, y=counts[name].tolist(), width=width, name=name, marker_color=color,
            legendgroup="pairs", legendgrouptitle_text="real pairs (%d)" % len(score),
            hovertemplate="%{y} " + name + " at %{x:.3g}<extra></extra>",
        ), row=1, col=1)
    observed = counts["flagged pairs"] + counts["kept pairs"]
    for trace in _components(view, edges, observed):
        fig.add_trace(go.Scatter(x=centers, **trace), row=1, col=1)
    _mark_cut(fig, view["cut"], lo, hi, row=1, label="cut")

    # the confidence
    c_centers, c_counts, c_width = _binned(conf, bins, value_range=(0.0, 1.0))
    fig.add_trace(go.Bar(
        x=c_centers, y=c_counts, width=c_width, name="confidence", marker_color=_CONFIDENCE,
        showlegend=False,  # the subplot's title says what it is
        hovertemplate="%{y} pairs at confidence %{x:.3f}<extra></extra>",
    ), row=2, col=1)
    _mark_cut(fig, view["confidence_cut"], 0.0, 1.0, row=2, label=None)

    fig.update_xaxes(title_text=view["score_name"], title_standoff=4, row=1, col=1)
    fig.update_xaxes(title_text="confidence, P(matched)", range=[0, 1], title_standoff=4, row=2, col=1)
    fig.update_yaxes(title_text="pairs per bin", row=1, col=1)
    fig.update_yaxes(title_text="pairs", row=2, col=1)
    fig.update_annotations(font_size=12)  # the subplot titles
    fig.update_layout(
        # below plotly's mode bar (top right, on hover)
        title=dict(text=view["title"], font=dict(size=14), x=0.01, xanchor="left", y=1 - 30 / 700, yanchor="top"),
        barmode="stack",
        bargap=0.02,
        height=700,
        margin=dict(l=60, r=20, t=120, b=30),
        template="plotly_white",
        # under the plots (an operator's output is narrow); explicit, since
        # the App's plotly view hides legends by default
        showlegend=True,
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.1, yanchor="top", font=dict(size=11),
                    groupclick="toggleitem", traceorder="grouped"),
    )
    return fig


def _decision_view(results, config):
    """What the figure draws of a run, whatever its age: the score, flags,
    null, cuts and titles."""
    conf = np.asarray(results.confidence, dtype=np.float64)
    flags = np.asarray(results.noisy, dtype=bool)
    decision = dict(results.decision or {})
    rate = dict(results.mismatch_rate or {})
    info = results.info or {}
    n, k = int(results.n_pairs), int(flags.sum())
    if results.statistic is not None:
        score = np.asarray(results.statistic, dtype=np.float64)
        score_name = "ranking statistic (higher = more likely matched)"
        null = None if results.null_statistic is None else np.asarray(results.null_statistic, dtype=np.float64)
        stored = decision.get("cut")
        if stored is None and decision:  # +-inf is stored as None
            stored = -np.inf if k == 0 else np.inf if k == n else None
    else:  # a run older than stored statistics
        legacy = results.calibration_score is not None
        score = np.asarray(results.calibration_score if legacy else results.similarity, dtype=np.float64)
        score_name = info.get("calibration_input", "similarity") if legacy else "similarity"
        null, stored = None, None
    if null is not None:
        null = null[np.isfinite(null)]
        null = null if len(null) else None
    cut = _cut(score, flags, stored)

    mode, level = decision.get("mode"), decision.get("level")
    if not decision:  # runs older than decisions: flagged below the threshold
        mode, level = "probability", config.threshold
    # P(matched) below the level, when the flags say so; else read off them
    stored_level = float(level) if mode == "probability" and isinstance(level, (int, float)) else None
    confidence_cut = _cut(conf, flags, stored_level)

    flagged = "%d of %d pairs flagged (%s" % (k, n, mode)
    flagged += ", level %s)" % _fmt(level) if level is not None else ")"
    if decision:
        from fiftyone_ncl.decisions import describe_estimate

        sentence = describe_estimate(results)
        estimate = sentence[: -len(flagged)].rstrip("; ") if sentence.endswith(flagged) else sentence
        if estimate == sentence:
            flagged = ""
    else:
        estimate = "no estimate of the mismatched share (the run predates it)"
    title = "<br>".join(textwrap.wrap("Run '%s' (%s): %s" % (results.key, config.method_name, estimate), 90))
    title = "<b>%s</b>" % title
    if flagged:
        title += "<br>%s" % flagged

    # how far the decoys are scaled: to the estimated mismatched pairs, the
    # estimate's upper bound when it is 0 or not identified, else (None) to
    # the number of real pairs
    share = rate.get("rate") if rate.get("usable", True) else None
    estimated = bool(share)
    if not estimated:
        share = rate.get("high")
    share_name = None
    if share:
        share_name = "%s: decoys x %.1f%%" % (
            "estimated mismatched" if estimated else "upper bound of mismatched", 100 * share)
    if null is not None and share:
        top = "real pairs (bars); decoys scaled to the %s (red line)" % (
            "estimated mismatches" if estimated else "mismatches' upper bound")
    elif null is not None:
        top = "real pairs (bars); decoys scaled to the same total (dashed)"
    elif rate.get("method") == "bic-gmm":
        top = "real pairs with the fitted mixture (no decoy null stored)"
    else:
        top = "real pairs by %s (no decoy null stored)" % score_name.split(" (")[0]
    if cut is None and 0 < k < n:
        top += "; the flags are not a cut on this score"
    bottom = "confidence"
    if confidence_cut is not None and np.isfinite(confidence_cut):
        bottom += ": flagged below %.3g" % confidence_cut
    return {
        "score": score, "score_name": score_name, "flags": flags, "confidence": conf, "null": null,
        "rate": rate, "share": share, "share_name": share_name, "cut": cut, "confidence_cut": confidence_cut, "title": title, "top_title": top,
        "bottom_title": bottom, "calibration": info.get("calibration") if results.statistic is None else None,
    }


def _fmt(level):
    return "%s" % (level,)  # as describe_estimate writes it


def _cut(score, flags, stored=None):
    """The score below which pairs are flagged: ``stored`` when the flags
    agree with it, else midway between the highest flagged and the lowest
    kept score (+-inf when nothing / everything is flagged), else None when
    the flags are no cut on ``score``."""
    if not len(score):
        return None
    if stored is not None and np.array_equal(score < stored, flags):
        return float(stored)
    if not flags.any():
        return -np.inf
    if flags.all():
        return np.inf
    top, bottom = float(score[flags].max()), float(score[~flags].min())
    return 0.5 * (top + bottom) if top < bottom else None


def _span(score, null):
    """The statistic's axis range: every real pair and the null's bulk."""
    parts = [score[np.isfinite(score)]]
    if null is not None:
        parts.append(np.quantile(null, [0.002, 0.998]))
    values = np.concatenate(parts)
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    return lo, hi if hi > lo else lo + 1e-6


def _components(view, edges, observed):
    """Scatter kwargs of the noisy / clean component curves (pairs per bin)."""
    n = len(view["score"])
    width = float(edges[1] - edges[0])
    rate, null = view["rate"], view["null"]
    line = dict(mode="lines", line_shape="hvh")
    if null is not None:
        share = view["share"]
        decoys = np.histogram(np.clip(null, edges[0], edges[-1]), bins=edges)[0] / len(null)
        if share:
            noisy = decoys * share * n
            clean = np.maximum(observed - noisy, 0.0)
            group = dict(legendgroup="model", legendgrouptitle_text=view["share_name"])
            return [
                dict(y=noisy.round(3).tolist(), name="noisy component", line=dict(color=_FLAGGED, width=2.5),
                     hovertemplate="%{y:.1f} mismatched pairs expected at %{x:.3g}<extra></extra>", **line, **group),
                dict(y=clean.round(3).tolist(), name="clean component", line=dict(color=_CLEAN, width=2, dash="dot"),
                     hovertemplate="%{y:.1f} matched pairs (excess over decoys) at %{x:.3g}<extra></extra>",
                     **line, **group),
            ]
        return [dict(y=(decoys * n).round(3).tolist(), name="decoy pairs (null)",
                     line=dict(color="#6d4c41", width=2, dash="dash"),
                     legendgroup="model", legendgrouptitle_text="no mismatched share: decoys at %d pairs" % n,
                     hovertemplate="%{y:.1f} decoys (scaled) at %{x:.3g}<extra></extra>", **line)]
    xs = (edges[:-1] + edges[1:]) / 2
    evidence = rate.get("evidence") or {}
    if rate.get("method") == "bic-gmm" and "mean1" in evidence:
        pi1 = float(rate.get("rate") or 0.0)
        comps = (("noisy component", evidence["mean1"], evidence["sd1"], pi1, _FLAGGED),
                 ("clean component", evidence["mean0"], evidence["sd0"], 1.0 - pi1, _CLEAN))
    elif isinstance(view["calibration"], dict) and "means" in view["calibration"]:
        calib = view["calibration"]
        comps = tuple((name + " component", m, s, w, c) for name, m, s, w, c in zip(
            ("clean", "noisy"), calib["means"], calib["stds"], calib["weights"], (_CLEAN, _FLAGGED)))
    else:
        return []
    out = []
    for name, mean, std, weight, color in comps:
        std = max(float(std), 1e-9)
        dens = weight * np.exp(-0.5 * ((xs - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi)) * width * n
        out.append(dict(y=dens.round(3).tolist(), name=name, mode="lines", line=dict(color=color, width=2),
                        legendgroup="model", legendgrouptitle_text="fitted mixture",
                        hovertemplate="%{y:.1f} pairs expected at %{x:.3g}<extra></extra>"))
    return out


def _mark_cut(fig, cut, lo, hi, row, label):
    """The decision boundary on a subplot: flagged side shaded, dashed line."""
    if cut is None:
        return
    if cut == -np.inf:
        fig.add_annotation(text="nothing flagged", x=lo, xanchor="left", y=1, yref="y%s domain" % ("" if row == 1 else row),
                           showarrow=False, font=dict(color=_FLAGGED, size=11), row=row, col=1)
        return
    right = hi if cut == np.inf else min(float(cut), hi)
    fig.add_vrect(x0=lo, x1=right, fillcolor=_FLAGGED, opacity=0.08, line_width=0, layer="below", row=row, col=1)
    if np.isfinite(cut):
        kwargs = {}
        if label:
            kwargs = dict(annotation_text="%s %.3g" % (label, cut), annotation_position="top left",
                          annotation_font=dict(color=_FLAGGED, size=11))
        fig.add_vline(x=float(cut), line_dash="dash", line_color=_FLAGGED, line_width=2, row=row, col=1, **kwargs)


def _binned(values, bins, density=False, value_range=None):
    """(bin centres, heights, bin width) of a histogram, as plain lists."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if value_range is None:
        lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
        value_range = (lo, hi if hi > lo else lo + 1e-6)
    heights, edges = np.histogram(values, bins=bins, range=value_range, density=density)
    centers = (edges[:-1] + edges[1:]) / 2
    return centers.round(6).tolist(), heights.round(6).tolist(), float(edges[1] - edges[0])


def plot_confidence(samples, run_key="ncl", path=None, bins=50, include_plotlyjs=True):
    """Builds :func:`confidence_figure`; with ``path`` also writes it as a
    standalone HTML file. The figure holds binned counts, so it stays a few
    kB for any collection size; plotly.js adds 4.6 MB when inlined
    (``include_plotlyjs=True``, opens offline) and nothing with ``"cdn"``."""
    fig = confidence_figure(samples, run_key, bins=bins)
    if path is not None:
        fig.write_html(str(path), include_plotlyjs=include_plotlyjs)
    return fig


def figure_json(fig):
    """A plotly figure as plain JSON types (``{"data", "layout"}``), e.g. for
    an operator's result and ``types.PlotlyView``."""
    import json

    return json.loads(fig.to_json())
