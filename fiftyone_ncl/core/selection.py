"""Choosing the heads from the data: linear or MLP, the temperature, the
number of epochs, on pairs held out from training.

Fixed defaults fit the data they were tuned on: on two encoders with
dominant modality-exclusive variance, wide MLP heads at ``tau = 0.05``
memorise a few thousand noisy pairs within a few epochs, while linear heads at
a softer temperature keep improving. So ``head="auto"``, ``tau="auto"`` and
``epochs="auto"`` are resolved here before a method trains: a share of the
images (with all their captions) is held out, plain InfoNCE heads are
trained on the rest for every candidate (started as the method's heads
start: from the CCA solution when ``init="cca"``), and each epoch is judged
by how the held-out pairs rank against each other: for every held-out
caption, the share of other held-out images (in batches of the training
size) that score above its own, and the same from the image side. The
measure is free of the temperature's scale, and swapped pairs in the held-out
share only add a constant; memorisation shows as it rising again.
"""
import dataclasses
import math

import numpy as np

from fiftyone_ncl.core.alignment import DeviceInputs, encode_all, train_infonce
from fiftyone_ncl.core.nets import build_dual_encoder, initial_solution
from fiftyone_ncl.core.training import make_generator, resolve_device, seeded

HEADS = ("linear", "mlp")
TAUS = (0.05, 0.2, 0.5)
AUTO = "auto"
# what "auto" means where nothing is searched
FALLBACK = {"head": "mlp", "tau": 0.05, "epochs": 10}


def needs_selection(config):
    """Whether any of ``head``, ``tau``, ``epochs`` is ``"auto"``."""
    return AUTO in (getattr(config, "head", None), getattr(config, "tau", None), getattr(config, "epochs", None))


def heldout_split(data, fraction=0.2, seed=0, max_pairs=20000):
    """``(train_pairs, val_pairs)``: pair rows split by image (all captions of
    an image on one side), at most ``max_pairs`` training pairs and a quarter
    of that held out, seeded."""
    rng = np.random.default_rng(seed)
    images = rng.permutation(data.n_images)
    n_val = max(2, int(round(fraction * data.n_images)))
    val_images = np.zeros(data.n_images, dtype=bool)
    val_images[images[:n_val]] = True
    val = np.flatnonzero(val_images[data.image_index])
    train = np.flatnonzero(~val_images[data.image_index])
    if len(train) > max_pairs:
        train = np.sort(rng.choice(train, max_pairs, replace=False))
    if len(val) > max_pairs // 4:
        val = np.sort(rng.choice(val, max_pairs // 4, replace=False))
    return train, val


def heldout_rank_error(model, data, rows, config, batch_size=None):
    """Mean share of held-out negatives that outrank the positive, both
    directions, in batches of ``batch_size`` pairs (lower is better)."""
    batch_size = batch_size or config.batch_size
    device = resolve_device(config.device)
    img, txt = encode_all(model, DeviceInputs(data.subset(rows), device), config)
    image_index = data.image_index[rows]
    errors = []
    order = np.random.default_rng(config.seed).permutation(len(rows))
    for start in range(0, len(order), batch_size):
        b = order[start : start + batch_size]
        if len(b) < 2:
            continue
        sims = img[image_index[b]] @ txt[b].T
        same = image_index[b][:, None] == image_index[b][None, :]
        pos = np.diag(sims)
        neg = ~same
        counts = neg.sum(1).clip(min=1)
        errors.append(((sims > pos[:, None]) & neg).sum(1) / counts)  # images ranking captions
        errors.append(((sims > pos[None, :]) & neg).sum(0) / counts)  # captions ranking images
    return float(np.mean(np.concatenate(errors))) if errors else math.nan


def select_heads(data, config, heads=None, taus=None, max_epochs=None, patience=2, fraction=0.2):
    """Trains every candidate head on held-out-split pairs and returns the best.

    Args:
        data: the :class:`~fiftyone_ncl.core.data.PairData` a method will fit
        config: its :class:`~fiftyone_ncl.core.training.TrainConfig`; fixed
            values of ``head`` / ``tau`` are kept, ``"auto"`` ones searched
        heads, taus (None): candidates (default :data:`HEADS`, :data:`TAUS`)
        max_epochs (None): epochs per candidate at most (default
            ``config.epochs`` when it is a number, else 20)
        patience (2): stop a candidate after this many epochs without a better
            held-out score
        fraction (0.2): share of images held out

    Returns:
        a dict: ``head``, ``tau``, ``epochs`` (the best epoch of the chosen
        candidate, scaled to the whole data) and ``table`` (every candidate's
        held-out error per epoch)
    """
    heads = [config.head] if config.head != AUTO else list(heads or HEADS)
    taus = [config.tau] if config.tau != AUTO else list(taus or TAUS)
    if max_epochs is None:
        max_epochs = config.epochs if isinstance(config.epochs, int) else 20
    train, val = heldout_split(data, fraction, seed=config.seed)
    train_data = data.subset(train)
    table = []
    for head in heads:
        for tau in taus:
            cfg = dataclasses.replace(config, head=head, tau=float(tau), epochs=int(max_epochs))
            curve = []

            def judge(epoch, model, curve=curve, cfg=cfg):
                curve.append(heldout_rank_error(model, data, val, cfg))
                best = int(np.nanargmin(curve))
                return len(curve) - 1 - best >= patience

            with seeded(config.seed):
                model = build_dual_encoder(cfg, train_data, init=initial_solution(cfg, train_data))
                train_infonce(model, train_data, cfg, make_generator(config.seed), progress=False, on_epoch=judge)
            best = int(np.nanargmin(curve))
            table.append({"head": head, "tau": float(tau), "best_epoch": best + 1,
                          "heldout_error": curve[best], "curve": [round(x, 5) for x in curve]})
    chosen = min(table, key=lambda r: r["heldout_error"])
    return {
        "head": chosen["head"],
        "tau": chosen["tau"],
        "epochs": chosen["best_epoch"],
        "table": table,
        "train_pairs": int(len(train)),
        "heldout_pairs": int(len(val)),
    }


def resolve_config(config, data):
    """``config`` with every ``"auto"`` value of ``head``, ``tau`` and
    ``epochs`` replaced by the held-out choice, and the selection record
    (None when nothing was ``"auto"``)."""
    if not needs_selection(config):
        return config, None
    if data.towers == "open_clip":
        # fine-tuning a whole model once per candidate is not affordable
        choice = dict(FALLBACK, reason="open_clip fine-tuning: not searched")
    else:
        choice = select_heads(data, config)
    changes = {}
    if config.head == AUTO:
        changes["head"] = choice["head"]
    if config.tau == AUTO:
        changes["tau"] = choice["tau"]
    if config.epochs == AUTO:
        changes["epochs"] = choice["epochs"]
    return dataclasses.replace(config, **changes), choice
