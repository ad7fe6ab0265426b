"""Synthetic factor benchmark: disentanglement and detection with known factors.

Each pair has shared factors ``s`` (what both modalities show),
image-exclusive factors ``x_v`` and text-exclusive factors ``x_t``. The image
embedding is a random nonlinear map of ``[s, x_v]`` and the caption
embedding a *different* random map of ``[s, x_t]`` (2-layer tanh MLPs), so
the two are not in one space and neither reveals ``s`` linearly. With
``exclusive_std`` above ``shared_std`` most of each embedding's variance is
modality-exclusive: the regime in which DisNCL argues that similarity-based
noise filtering is misled. A fraction of pairs then gets another pair's
caption (:func:`fiftyone_ncl.core.noise.inject_random`).

:func:`run_synthetic_benchmark` fits the baselines (cosine and gmm on
InfoNCE heads trained on the same noisy pairs; the raw cosine when the
dimensions match), CRCL when it is registered, and DisNCL, and reports
detection AUROC / AP and linear-probe R^2 of ``s`` and ``x`` from the MII and
MEI embeddings (and, for reference, from the baseline's entangled space).

Command line::

    python -m fiftyone_ncl.bench.synthetic --n-images 3000 --epochs 25
"""
import argparse
import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.metrics import detection_metrics
from fiftyone_ncl.core.noise import InjectedNoise, inject_random

logger = logging.getLogger(__name__)


@dataclass
class SyntheticTruth:
    """Ground truth of a synthetic problem.

    Attributes:
        noisy: (P,) True where the pair's caption came from another image
        source: (P,) row of the clean caption each pair now carries
        shared: (N, d_s) shared factors s of each image
        excl_image: (N, d_x) image-exclusive factors x_v
        excl_text: (P, d_x) text-exclusive factors x_t of each clean caption
            (before noise injection)
        image_index: (P,) image of each caption before noise injection
        noise: the :class:`~fiftyone_ncl.core.noise.InjectedNoise`
        params: the generator's parameters
    """

    noisy: np.ndarray
    source: np.ndarray
    shared: np.ndarray
    excl_image: np.ndarray
    excl_text: np.ndarray
    image_index: np.ndarray
    noise: InjectedNoise = None
    params: dict = field(default_factory=dict)

    @property
    def shared_text(self):
        """(P, d_s) shared factors of the caption each pair now carries."""
        return self.shared[self.image_index[self.source]]

    @property
    def excl_text_carried(self):
        """(P, d_x) exclusive factors of the caption each pair now carries."""
        return self.excl_text[self.source]


def _random_map(rng, in_dim, hidden_dim, out_dim):
    """A random 2-layer tanh MLP ``x -> W2 tanh(W1 x + b1) + b2``."""
    w1 = rng.normal(0.0, 1.0 / np.sqrt(in_dim), size=(in_dim, hidden_dim))
    b1 = rng.normal(0.0, 0.1, size=hidden_dim)
    w2 = rng.normal(0.0, 1.0 / np.sqrt(hidden_dim), size=(hidden_dim, out_dim))
    b2 = rng.normal(0.0, 0.1, size=out_dim)
    return lambda x: np.tanh(x @ w1 + b1) @ w2 + b2


def make_synthetic(
    n_images=3000,
    captions_per_image=1,
    shared_dim=8,
    exclusive_dim=8,
    shared_std=1.0,
    exclusive_std=3.0,
    image_dim=96,
    text_dim=96,
    map_hidden=256,
    noise_rate=0.4,
    seed=0,
):
    """A seeded synthetic factor problem.

    The inputs of each map are divided by their overall RMS, so the tanh
    layer works in the same range at every ``exclusive_std`` while the share
    of variance that is modality-exclusive grows with
    ``exclusive_std / shared_std``.

    Args:
        n_images (3000): images N
        captions_per_image (1): captions per image (P = N x this), each with
            its own text-exclusive factors
        shared_dim (8), exclusive_dim (8): factor dimensions
        shared_std (1.0), exclusive_std (3.0): factor standard deviations
        image_dim (96), text_dim (96): embedding dimensions
        map_hidden (256): hidden width of the random maps
        noise_rate (0.4): fraction of captions permuted among themselves
        seed (0): seed of factors, maps and noise

    Returns:
        ``(PairData, SyntheticTruth)``
    """
    rng = np.random.default_rng(seed)
    n_pairs = n_images * captions_per_image
    s = rng.normal(0.0, shared_std, size=(n_images, shared_dim))
    x_v = rng.normal(0.0, exclusive_std, size=(n_images, exclusive_dim))
    image_index = np.repeat(np.arange(n_images), captions_per_image)
    x_t = rng.normal(0.0, exclusive_std, size=(n_pairs, exclusive_dim))

    rms = np.sqrt(
        (shared_dim * shared_std**2 + exclusive_dim * exclusive_std**2) / (shared_dim + exclusive_dim)
    )
    map_v = _random_map(rng, shared_dim + exclusive_dim, map_hidden, image_dim)
    map_t = _random_map(rng, shared_dim + exclusive_dim, map_hidden, text_dim)
    images = map_v(np.concatenate([s, x_v], axis=1) / rms).astype(np.float32)
    texts_clean = map_t(np.concatenate([s[image_index], x_t], axis=1) / rms).astype(np.float32)

    noise = inject_random(image_index, noise_rate, seed=seed)
    texts = noise.apply(texts_clean)
    params = dict(
        n_images=n_images,
        captions_per_image=captions_per_image,
        shared_dim=shared_dim,
        exclusive_dim=exclusive_dim,
        shared_std=shared_std,
        exclusive_std=exclusive_std,
        image_dim=image_dim,
        text_dim=text_dim,
        map_hidden=map_hidden,
        noise_rate=noise_rate,
        seed=seed,
        realised_noise_rate=noise.realised_rate,
    )
    data = PairData(
        images=images,
        texts=np.ascontiguousarray(texts),
        image_index=image_index,
        joint_space=False,
        meta={"source": "synthetic-factors", **params},
    )
    truth = SyntheticTruth(
        noisy=noise.noisy,
        source=noise.source,
        shared=s,
        excl_image=x_v,
        excl_text=x_t,
        image_index=image_index,
        noise=noise,
        params=params,
    )
    return data, truth


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


def _detection_row(scores, truth, seconds):
    m = detection_metrics(truth.noisy, scores.confidence)
    row = {k: m[k] for k in ("auroc", "ap", "precision_at_k")}
    sim = detection_metrics(truth.noisy, (1.0 + np.asarray(scores.similarity)) / 2.0)
    row["auroc_similarity"] = sim["auroc"]
    row["seconds"] = round(seconds, 1)
    return row


def run_synthetic_benchmark(
    exclusive_stds=(1.0, 3.0),
    n_images=3000,
    noise_rate=0.4,
    seed=0,
    methods=None,
    train=None,
    disncl=None,
    data_kwargs=None,
    progress=False,
):
    """Runs the synthetic factor benchmark at several exclusive-variance levels.

    Args:
        exclusive_stds ((1.0, 3.0)): exclusive factor std per level (shared
            std is 1)
        n_images (3000): images (= pairs with one caption each)
        noise_rate (0.4): fraction of permuted captions
        seed (0): data and training seed
        methods (None): subset of ``("raw-cosine", "cosine", "gmm", "crcl",
            "disncl")``; default all that apply (crcl only when registered)
        train (None): options shared by every trained method (e.g. epochs,
            batch_size, hidden_dim, embed_dim, lr); defaults: 25 epochs,
            batch 128, hidden 512, embed 32, device cpu
        disncl (None): extra DisNCL options
        data_kwargs (None): extra :func:`make_synthetic` options
        progress (False): progress bars of the methods

    Returns:
        a dict ``{"levels": [{"exclusive_std", "data", "methods": {name:
        {auroc, ap, precision_at_k, auroc_similarity, seconds}}, "probe":
        {space: {"s": ..., "x": ...}}, "mi": DisNCL's MI diagnostics}]}``;
        probe spaces: ``mii``, ``mei`` (DisNCL), ``heads`` (the cosine
        baseline's InfoNCE space), ``raw`` (the input embeddings)
    """
    from fiftyone_ncl.core.methods import build_method, list_methods

    available = list_methods()
    wanted = list(methods) if methods is not None else ["raw-cosine", "cosine", "gmm", "crcl", "disncl"]
    train_opts = dict(epochs=25, batch_size=128, hidden_dim=512, embed_dim=32, device="cpu", seed=seed)
    train_opts.update(train or {})
    disncl_opts = dict(train_opts)
    disncl_opts.update(disncl or {})

    levels = []
    for std in exclusive_stds:
        data, truth = make_synthetic(
            n_images=n_images, exclusive_std=std, noise_rate=noise_rate, seed=seed, **(data_kwargs or {})
        )
        level = {"exclusive_std": std, "data": truth.params, "methods": {}, "probe": {}}
        level["probe"]["raw"] = probe_space(data.images, data.texts, truth, seed)
        for name in wanted:
            if name == "raw-cosine":
                if data.image_dim != data.text_dim:
                    continue
                t0 = time.time()
                method = build_method("cosine", train_heads=False)
                scores = method.fit(data, progress=progress).score(data, progress=progress)
                level["methods"][name] = _detection_row(scores, truth, time.time() - t0)
                continue
            if name not in available:
                logger.info("method %r is not registered; skipped", name)
                continue
            if name in ("cosine", "gmm"):
                opts = dict(train_opts, train_heads=True)
            elif name == "disncl":
                opts = disncl_opts
            else:
                opts = dict(train_opts)
            t0 = time.time()
            method = build_method(name, **opts)
            scores = method.fit(data, progress=progress).score(data, progress=progress)
            level["methods"][name] = _detection_row(scores, truth, time.time() - t0)
            if name == "cosine":
                level["probe"]["heads"] = probe_space(
                    scores.image_embeddings, scores.text_embeddings, truth, seed
                )
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=3000)
    parser.add_argument("--noise-rate", type=float, default=0.4)
    parser.add_argument("--exclusive-stds", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--hidden-dim", type=int, default=512)
    parser.add_argument("--embed-dim", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--disncl", type=json.loads, default=None, help="JSON dict of DisNCL options")
    parser.add_argument("--json", default=None, help="also write the full result here")
    args = parser.parse_args(argv)
    result = run_synthetic_benchmark(
        exclusive_stds=args.exclusive_stds,
        n_images=args.n_images,
        noise_rate=args.noise_rate,
        seed=args.seed,
        methods=args.methods,
        train=dict(epochs=args.epochs, hidden_dim=args.hidden_dim, embed_dim=args.embed_dim),
        disncl=args.disncl,
    )
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=float)
    return result


if __name__ == "__main__":
    main()
