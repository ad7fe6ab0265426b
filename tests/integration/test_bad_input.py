"""Bad input gets a clear error naming the field or file, and the dataset
is left exactly as it was."""
import re

import numpy as np
import pytest

import fiftyone as fo

import fiftyone_ncl as ncl

from .conftest import snapshot

pytestmark = pytest.mark.integration


def _fails(samples, match, exc=ValueError, **kwargs):
    """Runs the SDK, expects ``exc`` matching ``match``, checks nothing changed."""
    dataset = samples._dataset
    before = snapshot(dataset)
    kwargs.setdefault("caption_field", "caption")
    kwargs.setdefault("progress", False)
    with pytest.raises(exc, match=match):
        ncl.compute_correspondence(samples, **kwargs)
    assert snapshot(dataset) == before


FIELDS = dict(image_embeddings="img", text_embeddings="txt")


def test_missing_caption_field(make_dataset):
    ds = make_dataset(n=20)
    _fails(ds, r"caption field 'title' does not exist on .*its text fields are: caption", caption_field="title", **FIELDS)


def test_non_string_caption_field(make_dataset):
    ds = make_dataset(n=20, score=list(range(20)))
    _fails(ds, r"caption field 'score' is a IntField, not a string field", caption_field="score", **FIELDS)


@pytest.mark.parametrize("bad", [None, "", "   "])
def test_none_or_blank_captions(make_dataset, bad):
    ds = make_dataset(n=20)
    sample = ds.skip(3).first()
    sample["caption"] = bad
    sample.save()
    _fails(ds, r"caption field 'caption' is None or blank on 1 of 20 samples \(e.g. %s\)" % sample.id, **FIELDS)


def test_missing_image_files(make_dataset):
    ds = make_dataset(n=20)  # file paths point nowhere
    _fails(
        ds,
        r"20 of 20 image files do not exist \(e.g. /nonexistent/ncl/00000.jpg",
        exc=FileNotFoundError,
        image_encoder="pixels",
        text_embeddings="txt",
    )


def test_embedding_dimension_mismatch_inside_a_field(make_dataset):
    ds = make_dataset(n=20, dim=16)
    s = ds.first()
    s["img"] = np.ones(8, dtype=np.float32)
    s.save()
    _fails(ds, r"image embeddings field 'img' mixes vectors of different dimensions: 8, 16", **FIELDS)


def test_embedding_dimension_mismatch_between_sides(make_dataset):
    ds = make_dataset(n=20, dim=16, small=[np.ones(4, dtype=np.float32) * (i + 1) for i in range(20)])
    _fails(
        ds,
        r"image embeddings are 16-d and caption embeddings 4-d: they are not in one space",
        method="cosine",
        image_embeddings="img",
        text_embeddings="small",
        train_heads=False,
    )


def test_nan_embeddings(make_dataset):
    ds = make_dataset(n=20)
    s = ds.skip(5).first()
    vec = np.array(s["txt"])
    vec[2] = np.nan
    s["txt"] = vec
    s.save()
    _fails(ds, r"caption embeddings field 'txt' has NaN or infinite values in 1 rows \(e.g. samples %s\)" % s.id, **FIELDS)


def test_missing_embeddings_on_some_samples(make_dataset):
    ds = make_dataset(n=20)
    s = ds.first()
    s["img"] = None
    s.save()
    _fails(ds, r"image embeddings field 'img' is missing on 1 of 20 samples \(e.g. %s\)" % s.id, **FIELDS)


def test_run_key_that_exists_needs_overwrite(make_dataset):
    ds = make_dataset(n=30, n_swapped=6)
    ncl.compute_correspondence(ds, "caption", **FIELDS, progress=False)
    _fails(ds, r"a run with key 'ncl' already exists on .* pass overwrite=True", **FIELDS)
    _fails(ds, r"run key 'not valid' must be a valid Python identifier", run_key="not valid", **FIELDS)


def test_run_key_clashing_with_other_fields(make_dataset):
    ds = make_dataset(n=20, ncl_confidence=[0.5] * 20)
    _fails(ds, r"fields ncl_confidence already exist and do not belong to run", **FIELDS)


def test_empty_view(make_dataset):
    ds = make_dataset(n=20)
    _fails(ds.limit(0), r"the collection is empty", **FIELDS)
    _fails(ds.match(fo.ViewField("caption") == "nothing"), r"the collection is empty", **FIELDS)


def test_one_sample_view(make_dataset):
    ds = make_dataset(n=20)
    _fails(ds.limit(1), r"the collection has only one sample: scoring needs at least 2 images", **FIELDS)


def test_unknown_method_and_options(make_dataset):
    ds = make_dataset(n=20)
    _fails(ds, r"unknown method 'magic'; available: cosine, gmm", method="magic", **FIELDS)
    _fails(ds, r"method 'gmm' got unknown option\(s\) epoch;", exc=TypeError, method="gmm", epoch=3, **FIELDS)


def test_bad_threshold(make_dataset):
    ds = make_dataset(n=20)
    _fails(ds, r"threshold must be a number in \[0, 1\]", threshold=1.5, **FIELDS)
    _fails(ds, r"threshold must be a number in \[0, 1\], got .0.5.", threshold="0.5", **FIELDS)


def test_bad_embeddings_field_type(make_dataset):
    ds = make_dataset(n=20)
    _fails(ds, r"image embeddings field 'caption' is a StringField, not a VectorField", image_embeddings="caption", text_embeddings="txt")
    _fails(ds, r"image embeddings field 'nope' does not exist", image_embeddings="nope", text_embeddings="txt")


# issue 19: wrong answers without an error, late or unclear errors --------------


def _png(path, array, mode=None):
    from PIL import Image

    Image.fromarray(array, mode=mode).save(path)
    return str(path)


def _image_dataset(tmp_path, n=12, special=None):
    """``n`` random colour images (``special``: index -> file to use instead)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        if special and i in special:
            paths.append(special[i])
        else:
            paths.append(_png(tmp_path / ("img%02d.png" % i), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)))
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=p, caption="picture %d" % i) for i, p in enumerate(paths)], progress=False)
    ds.add_sample_field("txt", fo.VectorField)
    ds.set_values("txt", [np.r_[rng.normal(size=47), 1.0].astype(np.float32) for _ in range(n)])
    return ds


PIXELS = dict(method="gmm", image_encoder="pixels:4:rgb", text_embeddings="txt", train_heads=False)


def test_a_blank_image_is_refused_naming_the_file(tmp_path):
    black = _png(tmp_path / "black.png", np.zeros((16, 16, 3), np.uint8))
    ds = _image_dataset(tmp_path, special={3: black})
    try:
        _fails(ds, r"1 images are blank \(one colour\) .* e.g. %s" % black, **PIXELS)
        # and the field it would cache is not created either
        _fails(ds, r"blank", **dict(PIXELS, image_embeddings="pix"))
    finally:
        ds.delete()


def test_a_one_pixel_image_is_refused_naming_the_file(tmp_path):
    dot = _png(tmp_path / "dot.png", np.array([[[200, 10, 10]]], np.uint8))
    ds = _image_dataset(tmp_path, special={5: dot})
    try:
        _fails(ds, r"%s is 1x1 pixels: too small" % dot, **PIXELS)
    finally:
        ds.delete()


def test_a_16_bit_png_is_read_with_its_contrast(tmp_path):
    from fiftyone_ncl.encoders.images import open_image
    from fiftyone_ncl.encoders.pixels import load_pixels

    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    path = _png(tmp_path / "ramp16.png", ramp)
    assert open_image(path).mode == "RGB"
    pixels = load_pixels([path], size=8, grayscale=True, progress=False)[0, 0]
    assert pixels.min() < 20 and pixels.max() > 235 and len(np.unique(pixels)) > 20  # not all white


@pytest.mark.parametrize("invisible", ["\u200b\u200b", "\u200c \u200d", "\ufeff", "\u2060\u3164"])
def test_captions_of_invisible_characters_are_blank(make_dataset, invisible):
    ds = make_dataset(n=20)
    sample = ds.skip(4).first()
    sample["caption"] = invisible
    sample.save()
    _fails(ds, r"caption field 'caption' is None or blank on 1 of 20 samples \(e.g. %s\)" % sample.id, **FIELDS)


def test_a_caption_longer_than_the_text_encoder_takes_warns(make_dataset):
    from fiftyone_ncl.encoders.openclip import CaptionTruncationWarning

    ds = make_dataset(n=20)
    sample = ds.first()
    sample["caption"] = "a very long caption " * 500  # 10,000 characters
    sample.save()
    with pytest.warns(CaptionTruncationWarning, match=r"1 of 20 distinct captions are longer than the 256-token "
                                                        r"limit of sentence-transformers:all-MiniLM-L6-v2"):
        ncl.compute_correspondence(ds, "caption", method="gmm", image_embeddings="img",
                                   text_encoder="sentence-transformers", train_heads=True, epochs=1, progress=False)


def test_the_same_sample_twice_in_a_view_is_refused(make_dataset):
    ds = make_dataset(n=20)
    view = ds.limit(10).concat(ds.limit(5))
    first = ds.first().id
    _fails(view, r"the collection holds 5 samples more than once \(e.g. %s" % first, **FIELDS)


def test_a_view_that_slices_caption_lists_is_refused():
    from fiftyone import ViewField as F

    ds = fo.Dataset()
    rng = np.random.default_rng(0)
    ds.add_samples([fo.Sample(filepath="/nonexistent/%d.jpg" % i, captions=["a %d" % i, "b %d" % i, "c %d" % i],
                              img=rng.normal(size=8).astype(np.float32)) for i in range(10)], progress=False)
    try:
        sliced = ds.set_field("captions", F("captions")[1:])
        _fails(sliced, r"the view changes caption field 'captions' on 10 of 10 samples \(e.g. .*: 2 captions shown, "
                       r"3 stored\)", caption_field="captions", image_embeddings="img", text_encoder="sentence-transformers")
    finally:
        ds.delete()


def test_a_grouped_dataset_is_refused_naming_its_slices():
    ds = fo.Dataset()
    ds.add_group_field("group", default="left")
    samples = []
    for i in range(6):
        g = fo.Group()
        samples += [fo.Sample(filepath="/nonexistent/l%d.jpg" % i, caption="c %d" % i, group=g.element("left")),
                    fo.Sample(filepath="/nonexistent/r%d.jpg" % i, caption="c %d" % i, group=g.element("right"))]
    ds.add_samples(samples, progress=False)
    try:
        _fails(ds, r"is a grouped dataset: only its active slice 'left' would be scored; .*select_group_slices",
               image_encoder="pixels", text_encoder="sentence-transformers")
    finally:
        ds.delete()


def test_a_video_dataset_is_refused_naming_a_file(make_dataset):
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath="/nonexistent/clip%d.mp4" % i, caption="c %d" % i) for i in range(4)],
                   progress=False)
    try:
        assert ds.media_type == "video"
        _fails(ds, r"4 of 4 media files are videos \(e.g. /nonexistent/clip0.mp4.*\): fiftyone-ncl scores "
                   r"image-caption pairs", image_encoder="pixels", text_encoder="sentence-transformers")
    finally:
        ds.delete()


@pytest.mark.parametrize("epochs", [0, -3, 2.5])
@pytest.mark.parametrize("method", ["gmm", "crcl", "disncl"])
def test_epochs_below_one_are_refused_before_anything_runs(make_dataset, method, epochs):
    ds = make_dataset(n=20)
    _fails(ds, r"method '%s': epochs must be a whole number >= 1, got %r" % (method, epochs),
           method=method, epochs=epochs, **FIELDS)


def test_tag_mismatches_refuses_nonsense_thresholds_and_top_k(make_dataset):
    ds = make_dataset(n=40, n_swapped=8)
    ncl.compute_correspondence(ds, "caption", **FIELDS, progress=False)
    before = snapshot(ds)
    for threshold in (5, -0.1, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\]"):
            ncl.tag_mismatches(ds, "ncl", threshold=threshold)
        with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\]"):
            ncl.suspects_view(ds, "ncl", threshold=threshold)
    for top_k in (2.9, 0, -1, "3"):
        with pytest.raises(ValueError, match=r"top_k must be a whole number >= 1"):
            ncl.tag_mismatches(ds, "ncl", top_k=top_k)
    assert snapshot(ds) == before
    assert ncl.tag_mismatches(ds, "ncl", top_k=np.int64(3)) == 3
    assert ncl.tag_mismatches(ds, "ncl", threshold=1) == sum(c < 1 for c in ds.values("ncl_confidence"))


@pytest.mark.parametrize("suffix", ["suggestion", "label"])
def test_clashing_fields_are_found_before_training(make_dataset, monkeypatch, suffix):
    from fiftyone_ncl.core.methods.crcl import CRCLMethod

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained before checking the fields")

    monkeypatch.setattr(CRCLMethod, "fit", must_not_train)
    ds = make_dataset(n=20, **{"ncl_%s" % suffix: ["x"] * 20 if suffix == "suggestion" else [0.5] * 20})
    _fails(ds, r"fields ncl_%s already exist and do not belong to run 'ncl'" % suffix, method="crcl", **FIELDS)


def test_a_checkpoint_of_another_embedding_size_is_refused_before_writing(make_dataset, tmp_path):
    ds = make_dataset(n=60, n_swapped=10, dim=16)
    ckpt = str(tmp_path / "heads16.safetensors")
    ncl.compute_correspondence(ds, "caption", method="gmm", train_heads=True, epochs=1, save_checkpoint=ckpt,
                               **FIELDS)
    other = make_dataset(n=20, dim=8)
    _fails(other, r"the 'gmm' model was trained on image inputs 16-d, the data has 8-d", model=ckpt, **FIELDS)


def test_a_checkpoint_path_that_is_a_directory_says_so(make_dataset, tmp_path):
    ds = make_dataset(n=20)
    _fails(ds, r"model checkpoint '%s' is a directory, not a .safetensors file" % tmp_path, model=str(tmp_path),
           **FIELDS)


def test_a_crafted_checkpoint_header_fails_without_allocating(make_dataset, tmp_path):
    """A small file whose header declares a 200,000-d input: refused naming
    the file, with no more memory than the header (checked in a fresh
    process, by its peak resident size)."""
    import json
    import struct
    import subprocess
    import sys

    ds = make_dataset(n=60, n_swapped=10, dim=16)
    real = tmp_path / "real.safetensors"
    ncl.compute_correspondence(ds, "caption", method="gmm", train_heads=True, epochs=1, save_checkpoint=str(real),
                               **FIELDS)
    raw = real.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    spec = json.loads(header["__metadata__"]["input_spec"])
    spec["images"] = [200_000]
    header["__metadata__"]["input_spec"] = json.dumps(spec)
    head = json.dumps(header).encode()
    crafted = tmp_path / "crafted.safetensors"
    crafted.write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + n :])
    code = (
        "import resource, sys\n"
        "from fiftyone_ncl.core.registry import load_method\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    load_method(sys.argv[1])\n"
        "except ValueError as e:\n"
        "    print('ERROR', e)\n"
        "print('GROWTH_MB', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(crafted)], capture_output=True, text=True, timeout=300).stdout
    assert "ERROR checkpoint %r does not match the network it describes" % str(crafted) in out
    assert "Missing key" not in out
    growth = float(out.split("GROWTH_MB")[1])
    assert growth < 200, out  # a 200,000-d head would take about 1 GB


def test_results_print_as_one_line(make_dataset):
    ds = make_dataset(n=40, n_swapped=8)
    results = ncl.compute_correspondence(ds, "caption", **FIELDS)
    for text in (str(results), repr(results)):
        assert text == "<CorrespondenceResults run 'ncl' (gmm) on 'caption': %d of 40 pairs flagged>" % results.n_noisy


def test_plot_confidence_stays_small_for_large_collections(make_dataset, tmp_path):
    small = make_dataset(n=40, n_swapped=8)
    large = make_dataset(n=4000, n_swapped=800)
    sizes = []
    for ds in (small, large):
        ncl.compute_correspondence(ds, "caption", **FIELDS)
        path = tmp_path / ("%d.html" % len(ds))
        ncl.plot_confidence(ds, "ncl", path=str(path), include_plotlyjs="cdn")
        sizes.append(path.stat().st_size)
    assert sizes[1] < 60_000 and abs(sizes[1] - sizes[0]) < 5_000, sizes


def test_no_progress_bars_when_stderr_is_not_a_terminal(make_dataset, capfd):
    ds = make_dataset(n=40, n_swapped=8)
    ncl.compute_correspondence(ds, "caption", method="gmm", image_embeddings="img", text_embeddings="txt",
                               train_heads=True, epochs=2)  # progress=True, the default
    err = capfd.readouterr().err
    assert "it/s" not in err and "%|" not in err, err[-500:]


def test_umap_maps_print_no_warnings(make_dataset, recwarn):
    pytest.importorskip("umap")
    ds = make_dataset(n=60, n_swapped=10)
    ncl.compute_correspondence(ds, "caption", store_embeddings=True, **FIELDS)
    recwarn.clear()
    ncl.compute_visualizations(ds, "ncl", spaces=["emb_image"], progress=False)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)], [str(w.message) for w in recwarn]


def test_fiftyone_attached_to_a_mongod_on_another_directory_is_refused(monkeypatch):
    import fiftyone.core.odm.database as food

    from fiftyone_ncl.fo import database

    class Other:
        pid = 4242

        def cmdline(self):
            return ["python", "main.py", "--51-service", "db", "--multi", "/x/mongod", "--dbpath",
                    "/somewhere/else/mongo", "--port", "0"]

    monkeypatch.setattr(food, "_db_service", None)
    monkeypatch.setattr(database, "_running_services", lambda: [Other()])
    monkeypatch.setattr(fo.config, "database_uri", None)
    with pytest.raises(database.DatabaseMismatchError,
                       match=r"FiftyOne would use the MongoDB that process 4242 runs on /somewhere/else/mongo, but "
                             r"this process is configured for .*FIFTYONE_DATABASE_DIR"):
        database.check_database()
    monkeypatch.setattr(fo.config, "database_dir", "/somewhere/else/mongo")
    database.check_database()  # the same directory: fine


def test_first_connections_started_together_take_turns(tmp_path, monkeypatch):
    """FiftyOne processes connecting for the first time at once each start a
    mongod on one directory and all but one fail (ServiceListenTimeout, seen
    with 3 of 4 processes): the start is serialized on a lock file there."""
    import threading
    import time
    import types

    import fiftyone.core.odm.database as food

    from fiftyone_ncl.fo import database

    assert getattr(food.establish_db_conn, "_ncl_serialized", False)  # installed on import
    inside, overlaps, calls = [0], [], []

    def slow_start(config):  # stands in for starting mongod: must never run twice at once
        inside[0] += 1
        overlaps.append(inside[0])
        time.sleep(0.1)
        calls.append(config.database_dir)
        inside[0] -= 1

    monkeypatch.delenv("FIFTYONE_PRIVATE_DATABASE_PORT", raising=False)
    state = types.SimpleNamespace(_db_service=None)
    start = database._serialized(slow_start, state)
    config = types.SimpleNamespace(database_uri=None, database_dir=str(tmp_path / "db"))
    threads = [threading.Thread(target=start, args=(config,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 4 and max(overlaps) == 1
    assert (tmp_path / "db" / database.START_LOCK).exists()
    # a server of your own (a URI) or a running service: no lock, no waiting
    overlaps.clear()
    uri = types.SimpleNamespace(database_uri="mongodb://x", database_dir=str(tmp_path / "other"))
    database._serialized(slow_start, state)(uri)
    assert not (tmp_path / "other").exists()


# the command line: one line per user error, with the fix ------------------------


def test_cli_user_errors_are_one_line(make_dataset, capsys):
    from fiftyone_ncl import cli

    ds = make_dataset(n=20)
    ds.persistent = True
    cases = [
        (["score", "no-such-dataset"], r"no dataset 'no-such-dataset'; datasets: "),
        (["score", ds.name, "--image-field", "img", "--text-field", "txt", "--method", "nope"],
         r"unknown method 'nope'; available: "),
        (["score", ds.name, "--image-field", "img", "--text-field", "txt", "--options", "{epochs: 5}"],
         r"--options is not JSON"),
        (["score", ds.name, "--image-field", "img", "--text-field", "txt", "--options", '{"epochs": 0}'],
         r"epochs must be a whole number >= 1"),
        (["tag", ds.name, "ncl"], r"no correspondence run 'ncl'"),
        (["repair", "no-such-dataset"], r"no dataset"),
    ]
    for argv, match in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err, err
        assert err.startswith("fiftyone-ncl: error: ")
        import re

        assert re.search(match, err), (argv, err)


def test_cli_help_lists_only_commands_that_exist_and_score_tag_says_how_many(make_dataset, capsys):
    from fiftyone_ncl import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            cli.main([name, "--help"])
        assert e.value.code == 0
    capsys.readouterr()
    ds = make_dataset(n=40, n_swapped=8)
    ds.persistent = True
    assert cli.main(["score", ds.name, "--image-field", "img", "--text-field", "txt", "--tag", "--quiet"]) == 0
    out, err = capsys.readouterr()
    n = ds.count_sample_tags()["suspected_mismatch"]
    assert '"tagged": %d' % n in out and "tagged %d samples 'suspected_mismatch' from run 'ncl'" % n in err


def test_cli_prints_the_estimate_and_decide_reflags(make_dataset, capsys):
    import json

    from fiftyone_ncl import cli

    ds = make_dataset(n=120, n_swapped=24)
    ds.persistent = True
    assert cli.main(["score", ds.name, "--method", "cca", "--image-field", "img", "--text-field", "txt",
                     "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["mismatch_rate"]["usable"] is True
    assert re.search(r"about \d+\.\d% of pairs \(\d+\.\d-\d+\.\d%\) look mismatched; \d+ of 120 pairs flagged "
                     r"\(probability, level 0\.5\)", err), err
    assert cli.main(["decide", ds.name, "ncl", "--decision", "top_k", "--level", "7"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["flagged"] == 7 and "7 of 120 pairs flagged (top_k, level 7)" in err
    assert ds.count_values("ncl_noisy")[True] == 7
    assert cli.main(["decide", ds.name, "ncl", "--decision", "top_k", "--level", "2.5"]) == 2
    assert "--level of --decision top_k is a count" in capsys.readouterr().err
