"""The demo: real product photos with captions, some of them swapped on
purpose, scored by every method and compared with the known truth.

Images are Fashion-MNIST test photos from Debian's ``dataset-fashion-mnist``
package, written once as PNG files; captions come from templates of each
photo's class. A fraction of captions is replaced by the caption of a
look-alike class (T-shirt <-> shirt, sneaker <-> sandal...), the hard case.
Embeddings: raw pixels for images and the bundled all-MiniLM-L6-v2 for
captions; every method trains its heads on the dataset itself.
"""
import logging
import os
import time

import numpy as np

import fiftyone as fo

from fiftyone_ncl.core.noise import inject_category
from fiftyone_ncl.core.registry import list_methods
from fiftyone_ncl.correspondence import compute_correspondence, evaluate
from fiftyone_ncl.datasets.fmnist import CLASS_NAMES, CONFUSION_GROUPS, load_fashion_mnist, make_captions
from fiftyone_ncl.review import save_suspects_view, tag_mismatches

logger = logging.getLogger(__name__)

DATASET_NAME = "ncl-demo"

# Per-method settings sized so the whole demo runs in a few minutes on 2 CPU
# cores; the defaults of each method are for real datasets.
# The baselines' heads memorise swapped pairs as they train longer (AUROC
# falls from epoch 3 on here), so they get their best budget, not the same one.
DEMO_SETTINGS = {
    "auto": {"stages": (2, 2, 4), "warmup_epochs": 2},  # crcl's, when its candidate runs
    "cosine": {"epochs": 3},
    "gmm": {"epochs": 3},
    "crcl": {"stages": (2, 2, 4), "warmup_epochs": 2},
    "disncl": {"epochs": 12, "warmup_epochs": 3, "visualize": ["mii_image", "mei_image"]},
}


def image_dir():
    return os.path.join(fo.config.default_dataset_dir, "__ncl_demo__", "fashion-mnist-test")


def write_images(images, directory, ids):
    """Writes each 28x28 image as ``<id>.png`` once; returns the file paths."""
    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, img in zip(ids, images):
        path = os.path.join(directory, "%05d.png" % i)
        if not os.path.isfile(path):
            Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def build_demo_dataset(n_samples=10000, noise_rate=0.3, seed=0, name=DATASET_NAME):
    """A persistent dataset of Fashion-MNIST photos with captions, a fraction
    of them swapped; fields ``caption``, ``true_caption``, ``is_swapped``,
    ``label`` (the photo's class)."""
    images, labels = load_fashion_mnist("test")
    rng = np.random.default_rng(seed)
    # same number of photos of each class
    per_class = min(n_samples // len(CLASS_NAMES), int(np.bincount(labels).min()))
    keep = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(len(CLASS_NAMES))
    ]))
    images, labels = images[keep], labels[keep]
    paths = write_images(images, image_dir(), ids=keep)
    captions = make_captions(labels, seed=seed)
    noise = inject_category(
        np.arange(len(labels)),
        noise_rate,
        [CLASS_NAMES[c] for c in labels],
        seed=seed,
        classes=labels,
        groups=CONFUSION_GROUPS,
    )
    noisy_captions = noise.apply(captions)

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=True)
    dataset.add_samples(
        [
            fo.Sample(
                filepath=path,
                caption=cap,
                true_caption=true,
                is_swapped=bool(flag),
                label=fo.Classification(label=CLASS_NAMES[c]),
            )
            for path, cap, true, flag, c in zip(paths, noisy_captions, captions, noise.noisy, labels)
        ],
        progress=False,
    )
    dataset.info = {"demo": "fashion-mnist captions", "noise": noise.to_dict()}
    dataset.save()
    return dataset, noise


def _estimate(metrics):
    """``"8.1% (7.2-9.0)"``: a run's estimated mismatch rate with its interval."""
    if metrics.get("estimated_rate") is None:
        return "-"
    return "%.1f%% (%.1f-%.1f)" % tuple(100 * metrics[k] for k in ("estimated_rate", "estimated_low", "estimated_high"))


def run_demo(n_samples=10000, noise_rate=0.3, methods=None, seed=0, progress=True):
    """Builds the demo dataset, scores it with each method, tags the suspects
    of the best one and prints detection quality. Returns the metrics."""
    t0 = time.time()
    dataset, noise = build_demo_dataset(n_samples, noise_rate, seed)
    print(
        "Dataset %r: %d Fashion-MNIST photos, %d captions swapped to a look-alike class "
        "(requested %.0f%%, realised %.1f%%)"
        % (dataset.name, len(dataset), int(noise.noisy.sum()), 100 * noise_rate, 100 * noise.realised_rate)
    )
    # "auto" first: the product's default, whose suspects the demo tags
    methods = methods or ["auto"] + list_methods()
    rows = []
    for method in methods:
        settings = dict(DEMO_SETTINGS.get(method, {}))
        t = time.time()
        results = compute_correspondence(
            dataset,
            "caption",
            method=method,
            run_key=method,
            recipe="pixels_minilm",
            # computed by the first method, reused by the others
            image_embeddings="pixels_28",
            text_embeddings="minilm",
            seed=seed,
            overwrite=True,
            progress=progress,
            **settings,
        )
        metrics = evaluate(dataset, method, "is_swapped")
        metrics["health"] = results.health
        metrics["chosen"] = results.config.method_name
        rows.append((method, metrics, time.time() - t))

    print()
    print("Detection of the swapped captions (AUROC/AP: the ranking; flagged/precision/recall: the run's")
    print("decision; estimate: the run's own estimate of the mismatched share, true %.1f%%):" % (100 * noise.realised_rate))
    print("%-9s %7s %7s %8s %9s %7s %18s %7s" % ("method", "AUROC", "AP", "flagged", "precision", "recall",
                                               "estimate (90% CI)", "time"))
    for method, m, secs in rows:
        print(
            "%-9s %7.3f %7.3f %8d %9.3f %7.3f %18s %6.0fs"
            % (method, m["auroc"], m["ap"], m["flagged"], m["precision"], m["recall"], _estimate(m), secs)
        )
    for method, m, _ in rows:
        if (m.get("health") or {}).get("verdict") == "check":
            print("health of %s: %s" % (method, m["health"]["summary"]))
    # the default run's flags (what a user gets without choosing), else the
    # best-ranking run's when the default was not among the methods
    names = [r[0] for r in rows]
    chosen = "auto" if "auto" in names else max(rows, key=lambda r: r[1]["auroc"])[0]
    n_tagged = tag_mismatches(dataset, chosen)
    view_name = save_suspects_view(dataset, chosen)
    print()
    why = ("the default; auto chose %s" % dict((r[0], r[1]) for r in rows)[chosen]["chosen"]
           if chosen == "auto" else "best AUROC")
    print("Tagged %d samples 'suspected_mismatch' from run %r (%s); saved view %r."
          % (n_tagged, chosen, why, view_name))
    print("Total time %.0fs." % (time.time() - t0))
    print()
    print("Open the App on it:  make app     (or: fiftyone app launch %s)" % dataset.name)
    return {method: m for method, m, _ in rows}
