"""Every operator through FiftyOne's real plugin discovery and executor."""
import numpy as np
import pytest
import yaml

import fiftyone as fo
import fiftyone.operators as foo
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionError, ExecutionRunState

import fiftyone_ncl as ncl

from ..conftest import PLUGIN

pytestmark = pytest.mark.integration

FIELDS = {"recipe": "fields", "image_embeddings": "img", "text_embeddings": "txt", "caption_field": "caption"}


def _run(uri, dataset, params=None, **ctx):
    return foo.execute_operator("%s/%s" % (PLUGIN, uri), dict(dataset=dataset, params=params or {}, **ctx))


def test_every_operator_in_the_manifest_is_registered(repo_root):
    import importlib.util
    import sys

    manifest = yaml.safe_load((repo_root / "fiftyone.yml").read_text())
    assert manifest["type"] == "plugin" and manifest["name"] == PLUGIN
    assert manifest["py_entry"] == "operators/__init__.py"
    for name in manifest["operators"]:
        assert foo.operator_exists("%s/%s" % (PLUGIN, name)), name
    # and every operator class of the package is listed in the manifest
    spec = importlib.util.spec_from_file_location(
        "ncl_operators_check", repo_root / "operators" / "__init__.py",
        submodule_search_locations=[str(repo_root / "operators")],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    names = {cls(_builtin=True).config.name for cls in module.OPERATORS}
    assert names == set(manifest["operators"])
    for cls in module.OPERATORS:
        config = cls(_builtin=True).config
        assert config.label and config.description and config.light_icon and config.dark_icon


def test_compute_immediate_then_review_loop(make_dataset):
    ds = make_dataset(n=80, n_swapped=16)
    _run("compute_correspondence", ds, dict(FIELDS, method="gmm"))
    assert ds.list_brain_runs() == ["ncl"] and ds.count("ncl_confidence") == 80
    flagged = ds.count_values("ncl_noisy").get(True, 0)
    assert flagged > 0

    result = _run("tag_mismatches", ds, {"run_key": "ncl"})
    assert result.result == {"tagged": flagged}
    assert ds.count_sample_tags() == {"suspected_mismatch": flagged}
    result = _run("tag_mismatches", ds, {"run_key": "ncl", "mode": "top_k", "top_k": 3, "tag": "top3"})
    assert result.result == {"tagged": 3} and len(ds.match_tags("top3")) == 3
    result = _run("untag_mismatches", ds, {"tag": "top3"})
    assert result.result == {"untagged": 3}

    result = _run("review_suspects", ds, {"run_key": "ncl"})
    assert result.result == {"view_name": "ncl-suspects", "count": flagged}
    conf = ds.load_saved_view("ncl-suspects").values("ncl_confidence")
    assert conf == sorted(conf)

    info = _run("get_correspondence_info", ds, {"run_key": "ncl"}).result
    assert info["method"] == "gmm" and info["pairs"] == 80 and info["flagged"] == flagged
    assert info["config"]["caption_field"] == "caption"
    assert "look mismatched" in info["estimate"] and info["health"] in ("ok", "check")

    # re-decide from the App: the 5 lowest, re-tagged, without retraining
    similarity = ds.values("ncl_similarity")
    result = _run("decide_mismatches", ds, {"run_key": "ncl", "decision": "top_k", "level": 5}).result
    assert result["flagged"] == 5 and result["tagged"] == 5 and "5 of 80 pairs flagged" in result["estimate"]
    assert ds.count_sample_tags() == {"suspected_mismatch": 5} and ds.values("ncl_similarity") == similarity
    assert _run("get_correspondence_info", ds, {"run_key": "ncl"}).result["decision"] == "top_k (level 5)"

    plot = _run("plot_confidence", ds, {"run_key": "ncl"}).result["plot"]
    assert {t.get("name") for t in plot["data"]} >= {"clean component", "noisy component", "confidence"}

    # accept the suggestion for selected samples, then undo
    selected = ds.match_tags("suspected_mismatch").limit(2).values("id")
    before = ds.select(selected, ordered=True).values("caption")
    result = _run(
        "accept_suggestion", ds, {"run_key": "ncl", "view_target": "SELECTED_SAMPLES"}, selected=selected
    )
    assert result.result == {"changed": 2}
    assert ds.select(selected, ordered=True).values("caption_original") == before
    assert ds.count("caption_original") == 2  # only the selection changed
    result = _run("restore_caption", ds, {"caption_field": "caption"})
    assert result.result == {"restored": 2}
    assert ds.select(selected, ordered=True).values("caption") == before

    _run("rename_correspondence_run", ds, {"run_key": "ncl", "new_run_key": "checked"})
    assert ds.list_brain_runs() == ["checked"] and "checked_confidence" in ds.get_field_schema()
    _run("delete_correspondence_run", ds, {"run_key": "checked"})
    assert ds.list_brain_runs() == []
    assert not [f for f in ds.get_field_schema() if f.startswith(("checked_", "ncl_"))]


def test_compute_on_the_current_view_only(make_dataset):
    ds = make_dataset(n=60, n_swapped=10)
    view = ds.skip(20)
    _run("compute_correspondence", ds, dict(FIELDS, method="cosine", view_target="CURRENT_VIEW"), view=view)
    assert ds.count("ncl_confidence") == 40
    assert len(ds.load_brain_view("ncl")) == 40


def test_compute_delegated_runs_in_a_worker_with_progress(make_dataset):
    ds = make_dataset(n=80, n_swapped=16)
    ds.persistent = True  # a worker process would load it by name
    try:
        queued = foo.execute_operator(
            "%s/compute_correspondence" % PLUGIN,
            {"dataset": ds, "params": dict(FIELDS, method="gmm", train_heads="yes", epochs=2, run_key="deleg")},
            request_delegation=True,
        )
        assert queued.delegated
        assert ds.list_brain_runs() == []  # nothing ran yet
        service = DelegatedOperationService()
        service.execute_queued_operations(dataset_name=ds.name)
        ops = service.list_operations(dataset_name=ds.name)
        assert len(ops) == 1 and ops[0].run_state == ExecutionRunState.COMPLETED, ops[0].status
        assert ops[0].status.progress == pytest.approx(1.0)
        assert ds.list_brain_runs() == ["deleg"] and ds.count("deleg_confidence") == 80
        assert ds.get_brain_info("deleg").config.method_config["train_heads"] is True
        service.delete_for_dataset(ds._doc.id)
    finally:
        ds.persistent = False


def test_form_explains_what_is_missing(make_dataset):
    no_text = fo.Dataset()
    try:
        no_text.add_samples([fo.Sample(filepath="/x/%d.jpg" % i, score=i) for i in range(3)], progress=False)
        with pytest.raises(ExecutionError, match="This dataset has no string caption field"):
            _run("compute_correspondence", no_text, dict(FIELDS))
        with pytest.raises(ExecutionError, match="This dataset has no correspondence runs"):
            _run("tag_mismatches", no_text, {})
    finally:
        no_text.delete()

    ds = make_dataset(n=20, n_swapped=4)
    _run("compute_correspondence", ds, dict(FIELDS))
    with pytest.raises(ExecutionError, match="a run with key 'ncl' already exists"):
        _run("compute_correspondence", ds, dict(FIELDS))
    with pytest.raises(ExecutionError, match="must be a valid Python identifier"):
        _run("compute_correspondence", ds, dict(FIELDS, run_key="bad key"))
    # the SDK's own errors surface through the executor too
    sample = ds.first()
    sample["img"] = None
    sample.save()
    with pytest.raises(ExecutionError, match="image embeddings field 'img' is missing on 1 of 20 samples"):
        _run("compute_correspondence", ds, dict(FIELDS, run_key="other"))


@pytest.mark.slow
def test_visualize_subspaces_makes_umap_runs_tied_to_the_run(make_dataset):
    ds = make_dataset(n=120, n_swapped=20)
    _run("compute_correspondence", ds, dict(FIELDS, method="gmm", store_embeddings=True))
    assert ncl.embedding_spaces(ds, "ncl") == ["emb_image", "emb_text"]
    _run("visualize_subspaces", ds, {"run_key": "ncl", "space": "emb_image"})
    assert "ncl_emb_image_umap" in ds.list_brain_runs()
    assert ds.get_brain_info("ncl_emb_image_umap").config.method == "umap"
    assert ds.get_brain_info("ncl").config.visualization_keys == {"emb_image": "ncl_emb_image_umap"}
    points = ds.load_brain_results("ncl_emb_image_umap").points
    assert points.shape == (120, 2)
    ncl.rename_run(ds, "ncl", "viz")
    assert set(ds.list_brain_runs()) == {"viz", "viz_emb_image_umap"}
    ncl.delete_run(ds, "viz")
    assert ds.list_brain_runs() == []
    # the SDK can make the maps right after a run
    results = ncl.compute_correspondence(
        ds, "caption", image_embeddings="img", text_embeddings="txt", run_key="v2",
        store_embeddings=True, visualize=["emb_text"], progress=False,
    )
    assert results.config.visualization_keys == {"emb_text": "v2_emb_text_umap"}
    assert ds.get_brain_info("v2").config.visualization_keys == {"emb_text": "v2_emb_text_umap"}
    assert "v2_emb_text_umap" in ds.list_brain_runs()
    # a failed map says so, and keeps the completed run
    with pytest.raises(RuntimeError, match="'v3' was written, but computing its maps failed.*no space mii_image"):
        ncl.compute_correspondence(
            ds, "caption", image_embeddings="img", text_embeddings="txt", run_key="v3",
            store_embeddings=True, visualize=["mii_image"], progress=False,
        )
    assert "v3" in ds.list_brain_runs() and ds.has_field("v3_confidence")


def test_trained_methods_through_the_operator(make_dataset):
    """CRCL and DisNCL from the App's form: fields, run record, MII/MEI maps."""
    ds = make_dataset(n=160, n_swapped=40)
    base = dict(FIELDS)
    _run("compute_correspondence", ds, dict(base, method="crcl", run_key="crcl", stages="1,1", warmup_epochs=1),
         request_delegation=False)
    assert ds.has_field("crcl_label") and ds.has_field("crcl_confidence")
    info = ds.get_brain_info("crcl").config
    assert info.method_name == "crcl" and tuple(info.method_config["stages"]) == (1, 1)

    _run("compute_correspondence", ds, dict(base, method="disncl", run_key="dis", epochs=3, warmup_epochs=1),
         request_delegation=False)
    for space in ("mii_image", "mii_text", "mei_image", "mei_text"):
        assert ds.has_field("dis_%s" % space)
    assert ds.get_brain_info("dis").config.method_config["epochs"] == 3
    conf = np.array(ds.values("dis_confidence"))
    truth = np.array(ds.values("truth"))
    assert conf[~truth].mean() > conf[truth].mean()  # swapped pairs are less confident
    _run("visualize_subspaces", ds, {"run_key": "dis", "space": "mii_image"})
    _run("visualize_subspaces", ds, {"run_key": "dis", "space": "mei_image"})
    assert {"dis_mii_image_umap", "dis_mei_image_umap"} <= set(ds.list_brain_runs())
