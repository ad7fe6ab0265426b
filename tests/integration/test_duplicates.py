"""Duplicate groups on every run, and the training-free methods (neighbors,
ensemble), through the SDK, the CLI and the App's operators."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import fiftyone as fo
import fiftyone.operators as foo

import fiftyone_ncl as ncl

from ..conftest import PLUGIN

pytestmark = pytest.mark.integration

FIELDS = {"image_embeddings": "img", "text_embeddings": "txt"}
PASTED = ["Stock photo, all rights reserved", "stock photo - ALL rights reserved!", "Stock  photo. All rights reserved"]


def _paste(ds, rows=range(40, 48)):
    """Pastes one caption (spelled a few ways) onto some samples; returns their ids."""
    ids = ds.values("id")
    chosen = [ids[i] for i in rows]
    ds.set_values("caption", {sid: PASTED[j % len(PASTED)] for j, sid in enumerate(chosen)}, key_field="id")
    return chosen


def _run(uri, dataset, params=None, **ctx):
    return foo.execute_operator("%s/%s" % (PLUGIN, uri), dict(dataset=dataset, params=params or {}, **ctx))


@pytest.mark.parametrize("method", ["gmm", "neighbors", "ensemble"])
def test_every_run_groups_a_pasted_caption_and_no_clean_sample(make_dataset, method):
    ds = make_dataset(n=120, n_swapped=24)
    pasted = _paste(ds)
    results = ncl.compute_correspondence(ds, method=method, run_key="r", progress=False, **FIELDS)
    groups = dict(zip(ds.values("id"), ds.values("r_duplicate_group")))
    assert {groups[sid] for sid in pasted} == {"caption-0"}
    assert all(g is None for sid, g in groups.items() if sid not in pasted)
    assert isinstance(ds.get_field("r_duplicate_group"), fo.StringField)
    assert "group" in ds.get_field("r_duplicate_group").description

    summary = results.info["duplicates"]
    assert summary["caption_groups"] == 1 and summary["grouped_pairs"] == len(pasted)
    (group,) = ncl.duplicate_groups(ds, "r")
    assert group["id"] == "caption-0" and group["size"] == len(pasted) and group["caption"] in PASTED
    assert group["reason"] == "unrelated images"
    assert ncl.get_run_info(ds, "r")["info"]["duplicates"]["groups"][0]["id"] == "caption-0"
    view = ncl.duplicate_group_view(ds, "r", "caption-0")
    assert sorted(view.values("id")) == sorted(pasted)
    assert len(ncl.duplicate_group_view(ds, "r")) == len(pasted)
    if method != "gmm":  # the training-free methods still find the swapped pairs
        truth = np.asarray(ds.values("truth"))
        assert roc_auc_score(truth, -np.asarray(ds.values("r_confidence"))) > 0.9


def test_a_group_is_tagged_removed_and_restored_at_once(make_dataset):
    ds = make_dataset(n=100, n_swapped=0)
    pasted = _paste(ds)
    ncl.compute_correspondence(ds, method="neighbors", progress=False, **FIELDS)
    assert ncl.tag_duplicate_group(ds, "ncl", "caption-0") == len(pasted)
    assert ds.count_sample_tags() == {ncl.DUPLICATE_TAG: len(pasted)}
    with pytest.raises(ValueError, match="no duplicate group 'caption-7'"):
        ncl.duplicate_group_view(ds, "ncl", "caption-7")
    with pytest.raises(ValueError, match="pass the group"):
        ncl.replace_duplicate_captions(ds, "ncl")

    before = dict(zip(ds.values("id"), ds.values("caption")))
    assert ncl.replace_duplicate_captions(ds, "ncl", "caption-0") == len(pasted)
    after = dict(zip(ds.values("id"), ds.values("caption")))
    assert all(after[s] is None for s in pasted)
    assert all(after[s] == before[s] for s in before if s not in pasted)
    # the run now knows those captions changed
    with pytest.raises(ValueError, match="changed since run"):
        ncl.replace_duplicate_captions(ds, "ncl", "caption-0", caption="x")
    assert ncl.restore_captions(ds, "caption") == len(pasted)
    assert dict(zip(ds.values("id"), ds.values("caption"))) == before

    assert ncl.replace_duplicate_captions(ds, "ncl", "caption-0", caption="a real caption") == len(pasted)
    assert set(ds.select(pasted).values("caption")) == {"a real caption"}
    ncl.restore_captions(ds, "caption")
    with pytest.raises(ValueError, match="non-blank"):
        ncl.replace_duplicate_captions(ds, "ncl", "caption-0", caption="  ")
    ncl.delete_run(ds, "ncl")  # its tags go with it
    assert ds.count_sample_tags() == {}


def test_list_captions_get_a_per_caption_group(make_dataset):
    ds = make_dataset(n=90, n_swapped=0)
    rng = np.random.default_rng(0)
    ids = ds.values("id")
    caps = {sid: ["caption %d" % i, "another caption %d" % i] for i, sid in enumerate(ids)}
    pasted = ids[10:18]
    for sid in pasted:
        caps[sid][1] = PASTED[0]
    ds.set_values("captions", caps, key_field="id")
    txt = {sid: np.stack([v, v + 0.1 * rng.normal(size=v.shape)]) for sid, v in zip(ids, ds.values("txt"))}
    ds.set_values("txt2", txt, key_field="id")
    ncl.compute_correspondence(ds, "captions", method="neighbors", image_embeddings="img", text_embeddings="txt2",
                               progress=False)
    per_caption = dict(zip(ids, ds.values("ncl_caption_duplicate_group")))
    per_sample = dict(zip(ids, ds.values("ncl_duplicate_group")))
    assert all(per_caption[s] == ["", "caption-0"] and per_sample[s] == "caption-0" for s in pasted)
    assert all(per_caption[s] is None and per_sample[s] is None for s in ids if s not in pasted)
    assert sorted(ncl.duplicate_group_view(ds, "ncl", "caption-0").values("id")) == sorted(pasted)
    assert ncl.replace_duplicate_captions(ds, "ncl", ["caption-0"]) == len(pasted)
    assert ds[pasted[0]].captions == ["caption 10"] and ds[ids[0]].captions == caps[ids[0]]
    ncl.restore_captions(ds, "captions")
    assert ds[pasted[0]].captions == ["caption 10", PASTED[0]]


def test_a_clashing_field_fails_before_anything_is_computed(make_dataset):
    ds = make_dataset(n=40, n_swapped=0)
    ds.add_sample_field("ncl_duplicate_group", fo.StringField)
    with pytest.raises(ValueError, match="ncl_duplicate_group already exist"):
        ncl.compute_correspondence(ds, method="neighbors", progress=False, **FIELDS)
    assert ds.list_brain_runs() == []
    assert ncl.validate_run_key(ds, "ncl", method="ensemble", caption_field="caption") is not None


def test_labels_from_a_field_or_tags_fit_the_weights(make_dataset):
    ds = make_dataset(n=150, n_swapped=40)
    truth = ds.values("truth")
    judged = {sid: (not t) for i, (sid, t) in enumerate(zip(ds.values("id"), truth)) if i % 3 == 0}
    ds.set_values("checked", judged, key_field="id")
    ds.add_sample_field("checked_ok", fo.BooleanField)
    ds.set_values("checked_ok", judged, key_field="id")
    r = ncl.compute_correspondence(ds, method="neighbors", labels="checked_ok", progress=False, **FIELDS)
    assert r.info["weights_info"]["source"] == "fitted"
    assert r.info["weights_info"]["n_wrong"] == sum(not v for v in judged.values())
    # tags, as a curator marks pairs in the App
    ds.select([s for s, ok in judged.items() if not ok]).tag_samples("wrong")
    ds.select([s for s, ok in judged.items() if ok]).tag_samples("right")
    r = ncl.compute_correspondence(ds, method="ensemble", labels={"matched": "right", "mismatched": "wrong"},
                                   run_key="ens", progress=False, **FIELDS)
    assert r.info["member_info"]["neighbors"]["weights_info"]["source"] == "fitted"
    with pytest.raises(ValueError, match="does not learn from labels"):
        ncl.compute_correspondence(ds, method="gmm", labels="checked_ok", run_key="g", progress=False, **FIELDS)
    with pytest.raises(ValueError, match="expected a BooleanField"):
        ncl.compute_correspondence(ds, method="neighbors", labels="caption", run_key="g", progress=False, **FIELDS)
    assert "g" not in ds.list_brain_runs()


def test_a_disncl_runs_mii_fields_are_read_back_as_one_space(make_dataset):
    ds = make_dataset(n=80, n_swapped=16)
    ncl.compute_correspondence(ds, method="disncl", run_key="dis", progress=False, epochs=2, warmup_epochs=1,
                               embed_dim=8, hidden_dim=32, mi_diagnostics=False, device="cpu", **FIELDS)
    info_img, info_txt = ds.get_field("dis_mii_image").info, ds.get_field("dis_mii_text").info
    assert info_img["ncl_space"] == info_txt["ncl_space"] == "%s:dis:mii" % ds._doc.id
    assert ds.get_field("dis_mei_image").info["ncl_space"] != ds.get_field("dis_mei_text").info["ncl_space"]
    r = ncl.compute_correspondence(ds, method="neighbors", image_embeddings="dis_mii_image",
                                   text_embeddings="dis_mii_text", run_key="second", progress=False)
    assert r.info["space"] == "given"  # no heads trained: a second opinion in DisNCL's space
    r = ncl.compute_correspondence(ds, method="neighbors", image_embeddings="dis_mei_image",
                                   text_embeddings="dis_mii_text", run_key="third", progress=False,
                                   epochs=1, embed_dim=8, hidden_dim=16, device="cpu")
    assert r.info["space"] == "infonce-heads"


def test_the_cli_scores_with_both_methods(make_dataset, capsys):
    from fiftyone_ncl import cli

    ds = make_dataset(n=60, n_swapped=12)
    _paste(ds, range(20, 27))
    ds.add_sample_field("ok", fo.BooleanField)
    ds.set_values("ok", {sid: not t for i, (sid, t) in enumerate(zip(ds.values("id"), ds.values("truth"))) if i % 2},
                  key_field="id")
    assert cli.main(["score", ds.name, "--method", "neighbors", "--image-field", "img", "--text-field", "txt",
                     "--labels", "ok", "--quiet"]) == 0
    assert cli.main(["score", ds.name, "--method", "ensemble", "--image-field", "img", "--text-field", "txt",
                     "--run-key", "ens", "--options", '{"epochs": 1}', "--quiet"]) == 0
    ds.reload()
    assert set(ds.list_brain_runs()) >= {"ncl", "ens"}
    assert ds.count("ncl_duplicate_group") == ds.count("ens_duplicate_group") == 7
    assert '"method": "ensemble"' in capsys.readouterr().out


def test_operators_compute_and_review_a_group(make_dataset):
    ds = make_dataset(n=80, n_swapped=16)
    pasted = _paste(ds)
    params = dict(FIELDS, recipe="fields", caption_field="caption")
    _run("compute_correspondence", ds, dict(params, method="neighbors", k=7))
    assert ds.get_brain_info("ncl").config.method_config["k"] == 7
    _run("compute_correspondence", ds, dict(params, method="ensemble", members="cosine, neighbors", run_key="ens"))
    assert ds.get_brain_info("ens").config.method_config["members"] == ["cosine", "neighbors"]
    assert ds.count("ens_duplicate_group") == len(pasted)

    result = _run("review_duplicate_groups", ds, {"run_key": "ens", "group": "caption-0"})
    assert result.result["count"] == len(pasted) and result.result["action"] == "view"
    result = _run("review_duplicate_groups", ds, {"run_key": "ens", "group": "caption-0", "action": "tag",
                                                   "tag": "pasted"})
    assert result.result["tagged"] == len(pasted) and ds.count_sample_tags() == {"pasted": len(pasted)}
    result = _run("review_duplicate_groups", ds, {"run_key": "ens", "group": "caption-0", "action": "remove"})
    assert result.result["changed"] == len(pasted)
    assert ds.select(pasted).values("caption") == [None] * len(pasted)
    _run("restore_caption", ds, {"caption_field": "caption"})
    assert None not in ds.values("caption")
    # the form lists the groups, largest first, and the fixes
    from fiftyone.operators.executor import ExecutionContext

    operator = foo.get_operator("%s/review_duplicate_groups" % PLUGIN)
    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": {"run_key": "ens"}})
    props = operator.resolve_input(ctx).to_json()["type"]["properties"]
    assert props["group"]["default"] == "caption-0" and "action" in props
