"""LEMoN's protocol in the benchmark: the profile, the F1 scores, the aligned
coco-mini stand-in and the pasted-caption evaluation (plumbing, tiny sizes)."""
import json

import numpy as np
import pytest

from fiftyone_ncl import cli
from fiftyone_ncl.bench.cli import PROFILES, _check_settings, _expand
from fiftyone_ncl.bench.duplicates import PASTED, evaluate_duplicates, paste_caption
from fiftyone_ncl.bench.problems import synthetic
from fiftyone_ncl.core.metrics import detection_metrics


def test_lemon_profile_is_the_protocol():
    profile = PROFILES["lemon"]
    assert profile["rates"] == [0.4] and set(profile["kinds"]) == {"random", "category", "noun"}
    assert "coco-mini-aligned" in profile["problems"] and profile["duplicates"]["rate"] == 0.02
    _check_settings(_expand({m: dict(o) for m, o in profile["settings"].items()}, None))


def test_threshold_free_f1_scores():
    noisy = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    confidence = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    m = detection_metrics(noisy, confidence)
    # flagging the 3 least confident: 2 of 3 right -> F1 2/3 = P@k
    assert m["f1_at_rate"] == m["precision_at_k"] == pytest.approx(2 / 3)
    # flagging 4 catches all 3: F1 = 2 * 3 / (4 + 3)
    assert m["best_f1"] == pytest.approx(6 / 7)
    assert detection_metrics(np.zeros(4, bool), np.ones(4))["best_f1"] is None


def test_a_pasted_caption_is_grouped_and_nothing_else():
    problem = synthetic("high", n_pairs=600)
    data, captions, pasted = paste_caption(problem, 0.02, seed=1)
    assert pasted.sum() == 12 and {captions[i] for i in np.flatnonzero(pasted)} == {PASTED}
    row = evaluate_duplicates(problem, 0.02, seed=1, settings={"epochs": 2, "embed_dim": 16, "hidden_dim": 32})
    assert row["recall"] == 1.0 and row["clean_in_groups"] == 0 and row["precision"] == 1.0


def test_duplicates_command_writes_its_table(tmp_path):
    out = tmp_path / "dup"
    assert cli.main(["bench", "duplicates", "--profile", "tiny", "--seeds", "1", "--out", str(out),
                     "--rate", "0.05"]) == 0
    result = json.loads((out / "duplicates.json").read_text())
    assert result["rate"] == 0.05 and result["rows"][0]["problem"] == "synthetic-high"
    assert "| problem | pairs | pasted | recall |" in (out / "duplicates.md").read_text()


def test_coco_mini_aligned_is_one_space():
    from fiftyone_ncl.bench.problems import coco_mini_aligned

    try:
        problem = coco_mini_aligned()
    except FileNotFoundError:
        pytest.skip("coco-mini is not beside the repository")
    data = problem.data
    assert data.joint_space and data.images.shape[1] == data.texts.shape[1]
    assert data.n_pairs == data.n_images == len(problem.captions)
    # the stand-in matches its own caption better than others (aligned)
    img = data.images / np.linalg.norm(data.images, axis=1, keepdims=True)
    txt = data.texts / np.linalg.norm(data.texts, axis=1, keepdims=True)
    assert (np.argmax(img @ txt.T, axis=1) == np.arange(data.n_images)).mean() > 0.5


def test_noun_edits_do_not_depend_on_the_processs_string_hashing():
    # same-length category names used to keep the order a set iterates in,
    # which Python seeds per process: noun-swap cells differed run to run
    import os
    import subprocess
    import sys

    code = (
        "from fiftyone_ncl.core.noise import inject_nouns\n"
        "vocab = ['dog', 'cat', 'cow', 'car', 'bus', 'cup', 'hot dog', 'person', 'pizza', 'zebra', 'horse', 'sheep']\n"
        "caps = ['a dog near a car', 'a cat on a bus', 'two cows and a sheep', 'a hot dog in a cup'] * 10\n"
        "cats = [['dog', 'car'], ['cat', 'bus'], ['cow', 'sheep'], ['hot dog', 'cup']] * 10\n"
        "new, noisy = inject_nouns(caps, cats, vocab, 0.8, seed=0)\n"
        "print(repr(new))\n"
    )
    outputs = set()
    for hash_seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout)
    assert len(outputs) == 1
