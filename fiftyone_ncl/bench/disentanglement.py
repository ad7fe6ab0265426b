"""Disentanglement diagnostic on the synthetic factor problems: detection
next to linear probes of the shared factors ``s`` and the exclusive factors
``x`` from each method's spaces, and DisNCL's MI diagnostics.

    fiftyone-ncl bench synthetic --n-images 3000 --epochs 25
"""
import logging

import numpy as np

from fiftyone_ncl.bench.problems import Problem
from fiftyone_ncl.bench.runner import run_one
from fiftyone_ncl.core.metrics import detection_metrics
from fiftyone_ncl.datasets.synthetic import make_synthetic

logger = logging.getLogger(__name__)


def probe_r2(features, target, seed=0, test_fraction=0.3):
    """Held-out R^2 of the best ridge-regularised linear probe from
    ``features`` to ``target`` (sklearn ``RidgeCV``, alpha chosen on the fit
    split by cross-validation; R^2 averaged over target dimensions)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score

    features = np.asarray(features, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(features))
    n_test = max(1, int(round(test_fraction * len(features))))
    test, fit = perm[:n_test], perm[n_test:]
    mean, std = features[fit].mean(0), features[fit].std(0) + 1e-8
    probe = RidgeCV(alphas=np.logspace(-3, 3, 13))
    probe.fit((features[fit] - mean) / std, target[fit])
    return float(r2_score(target[test], probe.predict((features[test] - mean) / std)))


def probe_space(image_features, text_features, truth, seed=0):
    """R^2 of s and of x from an image-side (N rows) and a caption-side (P
    rows) embedding: ``{"s": {image, text, mean}, "x": {image, text, mean}}``
    (x = x_v for images, x_t for captions; caption truths are those of the
    caption the pair carries)."""
    out = {}
    for name, img_t, txt_t in (
        ("s", truth.shared, truth.shared_text),
        ("x", truth.excl_image, truth.excl_text_carried),
    ):
        r_img = probe_r2(image_features, img_t, seed)
        r_txt = probe_r2(text_features, txt_t, seed)
        out[name] = {"image": r_img, "text": r_txt, "mean": 0.5 * (r_img + r_txt)}
    return out


def run_synthetic_benchmark(
    exclusive_stds=(1.0, 3.0),
    n_images=3000,
    noise_rate=0.4,
    seed=0,
    methods=None,
    train=None,
    disncl=None,
    data_kwargs=None,
):
    """Runs the synthetic factor diagnostic at several exclusive-variance levels.

    Detection goes through the benchmark's one evaluation loop
    (:func:`fiftyone_ncl.bench.runner.run_one`); on top, linear probes of the
    shared and exclusive factors from each space and DisNCL's MI diagnostics.

    Args:
        exclusive_stds ((1.0, 3.0)): exclusive factor std per level (shared
            std is 1)
        n_images (3000): images (= pairs with one caption each)
        noise_rate (0.4): fraction of permuted captions
        seed (0): data and training seed
        methods (None): subset of ``("raw-cosine", "cosine", "gmm", "crcl",
            "disncl")``; default all
        train (None): options shared by every trained method (e.g. epochs,
            batch_size, hidden_dim, embed_dim, lr); defaults: 25 epochs,
            batch 128, hidden 512, embed 32, device cpu
        disncl (None): extra DisNCL options
        data_kwargs (None): extra :func:`~fiftyone_ncl.datasets.synthetic.make_synthetic` options

    Returns:
        a dict ``{"levels": [{"exclusive_std", "data", "methods": {name:
        {auroc, ap, precision_at_k, auroc_similarity, seconds}}, "probe":
        {space: {"s": ..., "x": ...}}, "mi": DisNCL's MI diagnostics}]}``;
        probe spaces: ``mii``, ``mei`` (DisNCL), ``heads`` (the cosine
        baseline's InfoNCE space), ``raw`` (the input embeddings)
    """
    wanted = list(methods) if methods is not None else ["raw-cosine", "cosine", "gmm", "crcl", "disncl"]
    train_opts = dict(epochs=25, batch_size=128, hidden_dim=512, embed_dim=32, device="cpu")
    train_opts.update(train or {})
    levels = []
    for std in exclusive_stds:
        data, truth = make_synthetic(
            n_images=n_images, exclusive_std=std, noise_rate=noise_rate, seed=seed, **(data_kwargs or {})
        )
        problem = Problem(name="synthetic-%.1f" % std, data=data)
        level = {"exclusive_std": std, "data": truth.params, "methods": {}, "probe": {}}
        level["probe"]["raw"] = probe_space(data.images, data.texts, truth, seed)
        for name in wanted:
            if name == "raw-cosine":
                if data.image_dim != data.text_dim:
                    continue
                method, opts = "cosine", {"train_heads": False}
            elif name in ("cosine", "gmm"):
                method, opts = name, dict(train_opts, train_heads=True)
            elif name == "disncl":
                method, opts = name, dict(train_opts, **(disncl or {}))
            else:
                method, opts = name, dict(train_opts)
            row, scores, _ = run_one(problem, data, truth.noisy, truth.source, method, seed, opts, label=name)
            sim = detection_metrics(truth.noisy, (1.0 + np.asarray(scores.similarity)) / 2.0)
            level["methods"][name] = {
                "auroc": row["auroc"], "ap": row["ap"], "precision_at_k": row["precision_at_k"],
                "auroc_similarity": sim["auroc"], "seconds": round(row["seconds"], 1),
            }
            if name == "cosine":
                level["probe"]["heads"] = probe_space(scores.image_embeddings, scores.text_embeddings, truth, seed)
            if name == "disncl":
                v = scores.vectors
                level["probe"]["mii"] = probe_space(v["mii_image"], v["mii_text"], truth, seed)
                level["probe"]["mei"] = probe_space(v["mei_image"], v["mei_text"], truth, seed)
                level["mi"] = scores.info.get("mi")
                level["disncl_history"] = [
                    {k: (round(x, 4) if isinstance(x, float) else x) for k, x in h.items() if k != "calibration"}
                    for h in scores.info.get("history", [])
                ]
        levels.append(level)
    return {"levels": levels}


def format_report(result):
    """A plain-text table of :func:`run_synthetic_benchmark`'s result."""
    lines = []
    for level in result["levels"]:
        d = level["data"]
        lines.append(
            "exclusive_std=%.1f (shared 1.0)  pairs=%d  realised noise=%.3f"
            % (level["exclusive_std"], d["n_images"] * d["captions_per_image"], d["realised_noise_rate"])
        )
        lines.append("  %-12s %7s %7s %7s %9s %7s" % ("method", "AUROC", "AP", "P@k", "AUROC(sim)", "sec"))
        for name, row in level["methods"].items():
            lines.append(
                "  %-12s %7.4f %7.4f %7.4f %9.4f %7.1f"
                % (name, row["auroc"], row["ap"], row["precision_at_k"], row["auroc_similarity"], row["seconds"])
            )
        lines.append("  linear-probe R^2 (held out)   s: image/text/mean      x: image/text/mean")
        for space, r in level["probe"].items():
            lines.append(
                "  %-6s %28.3f/%.3f/%.3f %12.3f/%.3f/%.3f"
                % (space, r["s"]["image"], r["s"]["text"], r["s"]["mean"], r["x"]["image"], r["x"]["text"], r["x"]["mean"])
            )
        mi = level.get("mi")
        if mi:
            lines.append(
                "  MI (nats, log B=%.2f): MII_V;MII_T %.3f  MEI_V;MII_T %.3f  MEI_T;MII_V %.3f  "
                "CLUB(MII;MEI) image %.3f text %.3f"
                % (
                    mi["log_batch"],
                    mi["mii_image__mii_text"]["mi"],
                    mi["mei_image__mii_text"]["mi"],
                    mi["mei_text__mii_image"]["mi"],
                    mi["club_mii_mei_image"]["mi"],
                    mi["club_mii_mei_text"]["mi"],
                )
            )
        lines.append("")
    return "\n".join(lines)
