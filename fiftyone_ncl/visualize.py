"""Looking at a run: UMAP maps of its embedding spaces for the App's
Embeddings panel, and the confidence histogram with the fitted mixture."""
import logging
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


def confidence_figure(samples, run_key="ncl", bins=50):
    """A plotly figure of a run's confidence.

    Top: the score the clean/noisy mixture was fitted to (similarity or
    per-pair loss), with the two fitted Gaussian components and the score at
    which confidence crosses the threshold. Bottom: the confidence histogram
    with the threshold.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    config = check_run(samples, run_key)
    results = samples.load_brain_results(run_key)
    conf = np.asarray(results.confidence, dtype=np.float64)
    calib = (results.info or {}).get("calibration")
    score = results.calibration_score if results.calibration_score is not None else results.similarity
    score_name = (results.info or {}).get("calibration_input", "similarity")

    fig = make_subplots(rows=2, cols=1, subplot_titles=(
        "%s with the fitted clean / noisy mixture" % score_name,
        "confidence (threshold %.2f)" % config.threshold,
    ))
    # histograms are binned here, so the figure has the same size for 100 or
    # 10 million pairs (plotly would embed every value)
    centers, dens, width = _binned(score, bins, density=True)
    fig.add_trace(go.Bar(x=centers, y=dens, width=width, name=score_name, marker_color="#9aa5b1"), row=1, col=1)
    if isinstance(calib, dict) and "means" in calib:
        xs = np.linspace(float(np.min(score)), float(np.max(score)), 400)
        for name, mean, std, weight, color in zip(
            ("clean", "noisy"), calib["means"], calib["stds"], calib["weights"], ("#2e7d32", "#c62828")
        ):
            std = max(float(std), 1e-9)
            dens = weight * np.exp(-0.5 * ((xs - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))
            fig.add_trace(go.Scatter(x=xs, y=dens, mode="lines", name="%s component" % name,
                                     line=dict(color=color, width=2)), row=1, col=1)
        order = np.argsort(score)
        below = conf[order] < config.threshold
        if below.any() and (~below).any():
            # score where the (monotone) confidence crosses the threshold
            cross = score[order][np.flatnonzero(np.diff(below.astype(int)) != 0)]
            for x in cross[:1]:
                fig.add_vline(x=float(x), line_dash="dash", line_color="#333333", row=1, col=1)
    centers, counts, width = _binned(conf, bins, value_range=(0.0, 1.0))
    fig.add_trace(go.Bar(x=centers, y=counts, width=width, name="confidence", marker_color="#5c6bc0"), row=2, col=1)
    fig.add_vline(x=config.threshold, line_dash="dash", line_color="#c62828", row=2, col=1)
    fig.update_layout(
        title="Run '%s' (%s): %d of %d pairs below %.2f"
        % (run_key, config.method_name, results.n_noisy, results.n_pairs, config.threshold),
        bargap=0.02,
        height=650,
        template="plotly_white",
    )
    return fig


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
