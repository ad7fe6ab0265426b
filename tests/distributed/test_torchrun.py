"""Training spread over torchrun's ranks (2 CPU processes, gloo) is the
one-process training: the same detection quality, every rank holding the
same weights, and ``torchrun -m fiftyone_ncl.train`` writing the run from
rank 0 like a one-process run.
"""
import os
import subprocess

import numpy as np
import pytest

from fiftyone_ncl.bench.distributed import run_fit, torchrun_command

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# short fits of each trained family: SCC labels, the per-epoch split with
# critics / CLUB / decoders after the gather, and plain InfoNCE heads
FITS = {
    "crcl": {"stages": [1, 1], "warmup_epochs": 1, "epochs": 2},
    "disncl": {"epochs": 3, "warmup_epochs": 1, "mi_diagnostics": False},
    "gmm": {"epochs": 2, "train_heads": True},
}


@pytest.mark.parametrize("method", sorted(FITS))
def test_two_ranks_fit_like_one_process(method):
    spec = {"problem": "synthetic-low", "size": 800, "kind": "random", "rate": 0.4, "method": method, "seed": 0,
            "options": FITS[method]}
    one = run_fit(spec, nproc=1, timeout=300)
    two = run_fit(spec, nproc=2, timeout=300)
    assert one["world"] == 1 and two["world"] == 2
    # every rank steps the same averaged gradient from the same start
    assert len(two["checksums"]) == 2 and two["checksums"][0] == two["checksums"][1]
    assert abs(two["auroc"] - one["auroc"]) <= 0.01
    assert two["auroc"] > 0.7  # it learned something: not two equally broken fits
    # the gathered global batch gives the one-process loss, epoch by epoch
    losses_one = [h["loss"] for h in one["history"]]
    losses_two = [h["loss"] for h in two["history"]]
    assert len(losses_one) == len(losses_two) > 0
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-3)


def test_two_ranks_train_a_cnn_tower_end_to_end():
    """Pixels through a CNN trained end to end: its BatchNorm normalises each
    rank's slice with the global batch's statistics (SyncedBatchNorm2d), so
    the fit follows the one-process fit epoch by epoch."""
    spec = {"problem": "fmnist-captions", "size": 500, "kind": "category", "rate": 0.4, "method": "crcl",
            "seed": 0, "options": FITS["crcl"]}
    one = run_fit(spec, nproc=1, timeout=300)
    two = run_fit(spec, nproc=2, timeout=300)
    assert two["checksums"][0] == two["checksums"][1]
    assert two["auroc"] > 0.6
    assert abs(two["auroc"] - one["auroc"]) <= 0.01
    np.testing.assert_allclose([h["loss"] for h in two["history"]], [h["loss"] for h in one["history"]], rtol=1e-3)


@pytest.mark.integration
def test_torchrun_train_writes_the_run_from_rank_zero(make_dataset):
    import fiftyone_ncl as ncl

    dataset = make_dataset(n=300, n_swapped=90, dim=16)
    dataset.persistent = True  # seen by the torchrun processes
    options = '{"stages": [1, 1], "warmup_epochs": 1, "epochs": 2, "seed": 0}'
    cmd = torchrun_command(2, ["-m", "fiftyone_ncl.train", dataset.name, "--method", "crcl", "--image-field", "img",
                               "--text-field", "txt", "--run-key", "ddp", "--options", options, "--quiet"])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"run_key": "ddp"' in done.stdout  # rank 0 reported the run, once
    assert done.stdout.count('"run_key"') == 1

    dataset.reload()
    assert "ddp" in ncl.list_runs(dataset)
    info = ncl.get_run_info(dataset, "ddp")
    assert info["config"]["method_name"] == "crcl"

    one = ncl.compute_correspondence(dataset, method="crcl", image_embeddings="img", text_embeddings="txt",
                                     run_key="one", progress=False, stages=[1, 1], warmup_epochs=1, epochs=2, seed=0)
    two = ncl.evaluate(dataset, "ddp", "truth")
    assert abs(two["auroc"] - ncl.evaluate(dataset, "one", "truth")["auroc"]) <= 0.01
    conf_two = np.asarray(dataset.values("ddp_confidence"), dtype=float)
    conf_one = np.asarray(dataset.values("one_confidence"), dtype=float)
    assert np.corrcoef(conf_two, conf_one)[0, 1] > 0.99
    assert one.n_pairs == 300


def test_train_refuses_auto_before_reading_anything():
    from fiftyone_ncl.train import train

    with pytest.raises(ValueError, match="auto"):
        train(None, method="auto")
