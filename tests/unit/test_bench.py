"""The benchmark's plumbing at a tiny size (its figures are not checked
here: they are benchmark results, published with their command)."""
import json

import numpy as np
import pytest

from fiftyone_ncl import cli
from fiftyone_ncl.bench.problems import Problem
from fiftyone_ncl.bench.runner import ORACLE, correction_accuracy, make_noisy
from fiftyone_ncl.core.data import PairData, PairScores
from fiftyone_ncl.core.registry import list_methods


def bench(*args):
    return cli.main(["bench", *args])


def test_tiny_profile_writes_every_method_and_the_oracle(tmp_path):
    out = tmp_path / "bench"
    assert bench("--profile", "tiny", "--out", str(out)) == 0
    result = json.loads((out / "results.json").read_text())
    methods = {r["method"] for r in result["rows"]}
    assert methods == set(list_methods()) | {ORACLE}  # a new method joins by itself
    for row in result["rows"]:
        assert row["problem"] == "synthetic-high" and row["kind"] == "random" and row["rate"] == 0.4
        assert 0.0 <= row["auroc"] <= 1.0 and row["seconds"] > 0
        assert 0.3 < row["realised_rate"] <= 0.4
    md = (out / "results.md").read_text()
    assert "fiftyone-ncl bench --profile tiny" in md and "| method |" in md
    assert "cores" in result["machine"]
    noise = np.load(out / "noise" / "synthetic-high_random_40_seed0.npz")
    assert noise["noisy"].mean() == result["rows"][0]["realised_rate"]
    # every run's per-pair confidence is kept and reproduces its row's metrics
    from fiftyone_ncl.core.metrics import detection_metrics

    for row in result["rows"]:
        saved = np.load(out / "scores" / ("synthetic-high_random_40_seed0_%s.npz" % row["method"]))
        assert saved["confidence"].dtype == np.float64
        assert detection_metrics(noise["noisy"], saved["confidence"])["auroc"] == pytest.approx(row["auroc"])
    html = (out / "figures.html").read_text()
    assert html.count("plotly-graph-div") >= 2  # AUROC curve and histograms


def _problem(classes=None):
    img = np.eye(4, dtype=np.float32)
    return Problem(name="toy", data=PairData(img, img.copy(), np.arange(4)), classes=classes, categories=list("aabb"))


def test_correction_accuracy_instance_and_class_level():
    # captions of images 0 and 1 swapped; suggestions find each other's
    problem = _problem()
    source = np.array([1, 0, 2, 3])
    data = PairData(problem.data.images, problem.data.texts[source], np.arange(4))
    noisy = source != np.arange(4)
    scores = PairScores(
        confidence=np.where(noisy, 0.1, 0.9), similarity=np.zeros(4),
        image_embeddings=data.images, text_embeddings=data.texts,
    )
    assert correction_accuracy(problem, scores, noisy, source) == 1.0
    # class level: a caption of the same class counts as right
    problem = _problem(classes=np.array([0, 0, 1, 1]))
    assert correction_accuracy(problem, scores, noisy, source) == 1.0


def test_make_noisy_kinds():
    problem = _problem(classes=np.array([0, 0, 1, 1]))
    data, noisy, source = make_noisy(problem, "random", 0.0, seed=0)
    assert not noisy.any() and data is problem.data
    # class-level truth and classes equal to the categories: no caption of
    # the same category but another class exists, so nothing can move
    data, noisy, source = make_noisy(problem, "category", 1.0, seed=0)
    assert list(source) == [0, 1, 2, 3] and not noisy.any()
    # instance level: each caption moves to the other image of its category
    data, noisy, source = make_noisy(_problem(), "category", 1.0, seed=0)
    assert list(source) == [1, 0, 3, 2] and noisy.all()
    np.testing.assert_array_equal(data.texts, np.eye(4, dtype=np.float32)[[1, 0, 3, 2]])


def test_speed_epoch_variants_parse_and_bad_ones_are_named():
    from fiftyone_ncl.bench.speed import parse_epoch_method

    method, options = parse_epoch_method("disncl:club_steps=1,critic_hidden=64")
    assert method == "disncl"
    assert options["club_steps"] == 1 and options["critic_hidden"] == 64 and options["warmup_epochs"] == 0
    assert parse_epoch_method("infonce") == ("cosine", {"train_heads": True, "epochs": 1})
    with pytest.raises(ValueError, match="nope"):
        parse_epoch_method("nope")
    with pytest.raises(ValueError, match="club_steps=one"):
        parse_epoch_method("disncl:club_steps=one")
    # the CLI refuses a bad spec before timing anything
    with pytest.raises(SystemExit):
        bench("speed", "--sizes", "--epoch-methods", "disncl:club_steps=one")


def test_grid_run_in_parts_merges_into_one_table(tmp_path, capsys):
    a, b, merged = tmp_path / "a", tmp_path / "b", tmp_path / "merged"
    assert bench("--profile", "tiny", "--methods", "cosine", "--out", str(a)) == 0
    assert bench("--profile", "tiny", "--methods", "crcl", "--rates", "0.2", "--out", str(b)) == 0
    assert bench("merge", str(a), str(b), "--out", str(merged)) == 0
    result = json.loads((merged / "results.json").read_text())
    assert {(r["method"], r["rate"]) for r in result["rows"]} == {("cosine", 0.4), ("crcl", 0.2)}
    assert len(result["commands"]) == 2
    md = (merged / "results.md").read_text()
    assert "--methods cosine" in md and "--methods crcl" in md
    assert "| cosine | - | " in md  # no cosine run at 20 %: a gap, not a made-up cell
    # the same run in two parts is refused
    assert bench("merge", str(a), str(a), "--out", str(tmp_path / "twice")) == 2
    assert "both hold the run" in capsys.readouterr().err
    assert bench("merge", str(tmp_path / "missing"), "--out", str(tmp_path / "x")) == 2
    assert "no benchmark results" in capsys.readouterr().err


def test_set_overrides_a_profile_option_and_typos_fail_before_training(tmp_path, monkeypatch, capsys):
    from fiftyone_ncl.bench import runner

    seen = []
    real_run_one = runner.run_one

    def spy(problem, data, noisy, source, method_name, seed, settings=None, **kw):
        seen.append((method_name, dict(settings)))
        return real_run_one(problem, data, noisy, source, method_name, seed, settings, **kw)

    monkeypatch.setattr(runner, "run_one", spy)
    out = tmp_path / "set"
    assert bench("--profile", "tiny", "--methods", "cosine", "--set", "cosine.epochs=3", "*.embed_dim=16",
                 "--out", str(out)) == 0
    cosine = [opts for name, opts in seen if name == "cosine"]
    assert cosine and all(o["epochs"] == 3 and o["embed_dim"] == 16 for o in cosine)
    assert "cosine.epochs=3" in (out / "results.md").read_text()  # the command shows the override
    # a misspelt option or a malformed --set stops before any data is built
    seen.clear()
    assert bench("--profile", "tiny", "--methods", "cosine", "--set", "cosine.epochz=3", "--out", str(tmp_path / "x")) == 2
    assert "epochz" in capsys.readouterr().err
    assert seen == []
    with pytest.raises(SystemExit):
        bench("--profile", "tiny", "--set", "epochs=3", "--out", str(tmp_path / "y"))


def test_a_grid_split_by_seed_merges_into_mean_and_sd(tmp_path):
    a, b, merged = tmp_path / "s0", tmp_path / "s1", tmp_path / "merged"
    assert bench("--profile", "tiny", "--methods", "cosine", "--seed-list", "0", "--out", str(a)) == 0
    assert bench("--profile", "tiny", "--methods", "cosine", "--seed-list", "1", "--out", str(b)) == 0
    assert {r["seed"] for r in json.loads((b / "results.json").read_text())["rows"]} == {1}
    assert bench("merge", str(a), str(b), "--out", str(merged)) == 0
    summary = json.loads((merged / "results.json").read_text())["summary"]
    cosine = [e for e in summary if e["method"] == "cosine"]
    assert len(cosine) == 1 and cosine[0]["seeds"] == 2 and "auroc_sd" in cosine[0]
    with pytest.raises(SystemExit):  # a count and a list at once is ambiguous
        bench("--profile", "tiny", "--seeds", "2", "--seed-list", "1", "--out", str(tmp_path / "x"))


def test_disentanglement_diagnostic_plumbing():
    from fiftyone_ncl.bench.disentanglement import run_synthetic_benchmark

    result = run_synthetic_benchmark(
        exclusive_stds=(3.0,),
        n_images=120,
        methods=["raw-cosine", "cosine", "disncl"],
        train=dict(epochs=2, hidden_dim=32, embed_dim=8, batch_size=32),
        disncl=dict(warmup_epochs=1, mi_steps=5, mi_samples=64),
        data_kwargs=dict(map_hidden=32),
    )
    level = result["levels"][0]
    assert set(level["methods"]) == {"raw-cosine", "cosine", "disncl"}
    for row in level["methods"].values():
        assert 0.0 <= row["auroc"] <= 1.0 and 0.0 <= row["ap"] <= 1.0
    assert set(level["probe"]) == {"raw", "heads", "mii", "mei"}
    assert set(level["probe"]["mii"]) == {"s", "x"}
    assert "mii_image__mii_text" in level["mi"]


def test_suite_tables_mark_methods_below_the_baseline_and_clean_flags():
    from fiftyone_ncl.bench.report import suite_tables

    def entry(problem, rate, method, auroc=None, clean=None):
        e = {"problem": problem, "kind": "mixed", "rate": rate, "method": method, "seeds": 1}
        if auroc is not None:
            e["auroc"] = auroc
        if clean is not None:
            e["clean_flagged"] = clean
        return e

    summary = [
        entry("aligned-easy", 0.4, "cca", 0.90), entry("aligned-easy", 0.4, "crcl", 0.95),
        entry("heldout-mimic", 0.4, "cca", 0.80), entry("heldout-mimic", 0.4, "crcl", 0.70),
        entry("aligned-easy", 0.0, "cca", clean=0.0), entry("aligned-easy", 0.0, "crcl", clean=0.031),
        entry("synthetic-high", 0.4, "crcl", 0.99),  # not a regime: left out
    ]
    text = "\n".join(suite_tables(summary))
    assert "| aligned-easy | 40% | 0.900 | 0.950 |" in text
    assert "| heldout-mimic * | 40% | 0.800 | < 0.700 |" in text  # held out, listed after the others
    assert text.index("aligned-easy |") < text.index("heldout-mimic *")
    assert "Cells below cca: crcl 1" in text
    assert "| aligned-easy | 0.0% | 3.1% |" in text
    assert "synthetic-high" not in text
    assert suite_tables([entry("synthetic-high", 0.4, "crcl", 0.99)]) == []


def test_auto_row_records_what_it_chose_and_its_trial(tmp_path, monkeypatch):
    from fiftyone_ncl.bench import runner
    from fiftyone_ncl.core.auto import CANDIDATES

    seen = []
    real_choose = runner.choose_for_problem

    def spy(data, seed, settings=None, candidate_settings=None):
        seen.append(candidate_settings)
        return real_choose(data, seed, settings, candidate_settings)

    monkeypatch.setattr(runner, "choose_for_problem", spy)
    out = tmp_path / "auto"
    assert bench("--profile", "tiny", "--methods", "auto", "--out", str(out)) == 0
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert row["method"] == "auto" and row["chosen"] in CANDIDATES
    # the trial ran every candidate (300 pairs: above the no-trial floor)
    assert set(row["auto_trial"]) == set(CANDIDATES) and row["auto_reason"] is None
    assert row["chosen"] == max(row["auto_trial"], key=row["auto_trial"].get) or \
        round(row["auto_trial"][row["chosen"]], 3) == round(max(row["auto_trial"].values()), 3)
    # each candidate trials with its own profile settings (crcl's stages)
    (cands,) = seen
    assert cands["crcl"]["stages"] == (1, 1) and "stages" not in cands["cca"]
    assert "method='auto' chose" in (out / "results.md").read_text()


def test_methods_that_need_embeddings_are_skipped_on_tower_inputs():
    from fiftyone_ncl.bench.runner import run_grid

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(60, 1, 8, 8)).astype(np.uint8)
    texts = rng.normal(size=(60, 4)).astype(np.float32)
    lines = []
    data = PairData(pixels, texts, np.arange(60))
    assert data.towers == "cnn"
    problem = Problem(name="toy", data=data, settings={"*": {"epochs": 1, "batch_size": 16}})
    rows = run_grid([problem], ["random"], [0.4], [0], methods=["cca", "auto"], log=lines.append)
    assert [r["method"] for r in rows] == ["auto"] and rows[0]["chosen"] == "gmm"
    assert "towers" in rows[0]["auto_reason"]
    assert any("cca" in line and "skipped" in line for line in lines)


def test_the_small_suite_is_every_regime_at_300_pairs():
    from fiftyone_ncl.bench.cli import PROFILES, load_problems
    from fiftyone_ncl.datasets.regimes import list_regimes

    profile = PROFILES["suite-small"]
    assert sorted(profile["problems"]) == sorted("regime:%s" % n for n in list_regimes())
    # two regimes whose own size differs (5,000 pairs, 5 captions per image)
    spec = {name: profile["problems"][name] for name in ("regime:unaligned-multicap", "regime:aligned-easy")}
    assert [p.data.n_pairs for p in load_problems(spec, log=lambda *a: None)] == [300, 300]
