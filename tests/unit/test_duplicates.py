"""Pipeline-bug groups (fiftyone_ncl.core.duplicates)."""
import numpy as np
import pytest

from fiftyone_ncl.core.duplicates import (
    duplicate_caption_groups,
    duplicate_image_groups,
    looks_like_template,
    normalize_caption,
)


@pytest.mark.parametrize(
    "text, want",
    [
        ("  Stock Photo,   ALL rights reserved! ", "stock photo all rights reserved"),
        ("stock\u200bphoto\u200d \ufeffall rights\u00ad reserved", "stockphoto all rights reserved"),
        ("\uff53\uff54\uff4f\uff43\uff4b  photo", "stock photo"),  # full-width (NFKC)
        ("Stock-Photo\tAll\nRights/Reserved.", "stock photo all rights reserved"),
        ("{product_name}", "product name"),
        ("Caf\u0065\u0301 STRASSE", "caf\u00e9 strasse"),  # combining accent composed
        (None, ""),
        ("...", ""),
    ],
)
def test_normalize_caption(text, want):
    assert normalize_caption(text) == want


def test_looks_like_template():
    for text in ("{product_name}", "A photo of {{ item }}", "${title} on sale", "%s in a box", "<PLACEHOLDER>"):
        assert looks_like_template(text), text
    for text in ("a dog {sic}", "100% cotton", "a <b> tag", "price: $5"):
        assert looks_like_template(text) == (text == "a dog {sic}"), text


def clustered_images(n=600, clusters=12, dim=24, spread=0.35, seed=0):
    rng = np.random.default_rng(seed)
    cls = rng.integers(clusters, size=n)
    centers = rng.normal(size=(clusters, dim))
    return centers[cls] + spread * rng.normal(size=(n, dim)), cls


def pasted_problem(seed=0):
    img, cls = clustered_images(seed=seed)
    rng = np.random.default_rng(seed)
    captions = ["caption number %d" % i for i in range(len(img))]
    legit = np.flatnonzero(cls == 0)
    for i in legit:
        captions[i] = "a photo of a sneaker"
    spellings = ["Stock photo, all rights reserved", "STOCK PHOTO - ALL RIGHTS RESERVED.", "stock photo all\u200b rights reserved"]
    pasted = rng.choice(np.flatnonzero(cls != 0), 12, replace=False)
    for j, i in enumerate(pasted):
        captions[i] = spellings[j % 3]
    return img, captions, legit, pasted


def test_pasted_caption_is_a_group_but_a_legit_shared_caption_is_not():
    img, captions, legit, pasted = pasted_problem()
    res = duplicate_caption_groups(captions, img)
    assert len(res) == 1
    group = res.groups[0]
    assert group["normalized"] == "stock photo all rights reserved"
    assert sorted(group["rows"]) == sorted(pasted) and group["size"] == 12
    assert group["reason"] == "unrelated images" and group["coherence"] < group["threshold"]
    assert np.flatnonzero(res.row_group >= 0).tolist() == sorted(pasted)
    assert (res.row_group[legit] == -1).all()


def test_without_image_embeddings_every_shared_caption_is_a_group():
    _, captions, legit, pasted = pasted_problem()
    res = duplicate_caption_groups(captions)
    assert {g["normalized"] for g in res.groups} == {"a photo of a sneaker", "stock photo all rights reserved"}
    assert all(g["reason"] == "shared" and g["coherence"] is None for g in res.groups)
    assert (res.row_group[legit] >= 0).all() and (res.row_group[pasted] >= 0).all()
    assert res.groups[0]["size"] >= res.groups[1]["size"]  # largest first


def test_an_unfilled_template_is_a_group_even_on_look_alike_images():
    img, cls = clustered_images(seed=1)
    captions = ["caption %d" % i for i in range(len(img))]
    for i in np.flatnonzero(cls == 3):
        captions[i] = "{product_name}"
    res = duplicate_caption_groups(captions, img)
    assert len(res) == 1 and res.groups[0]["reason"] == "template"
    assert res.groups[0]["coherence"] > 0.5
    assert len(duplicate_caption_groups(captions, img, templates=False)) == 0


def test_shared_captions_count_distinct_images():
    img, cls = clustered_images(n=300, seed=2)
    idx = np.repeat(np.arange(len(img)), 2)
    captions = ["caption %d" % p for p in range(len(idx))]
    rng = np.random.default_rng(2)
    targets = rng.choice(len(img), 8, replace=False)
    for i in targets:  # the same image twice counts once
        captions[2 * i] = captions[2 * i + 1] = "image"
    res = duplicate_caption_groups(captions, img, idx, min_size=9)
    assert len(res) == 0
    res = duplicate_caption_groups(captions, img, idx, min_size=8)
    assert len(res) == 1 and res.groups[0]["size"] == 8 and len(res.groups[0]["rows"]) == 16
    assert sorted(res.groups[0]["images"]) == sorted(targets)


def duplicated_images(seed=0):
    """200 images with one caption each; images 0-4 copied (near copies) with
    a contradicting caption, images 5-9 copied with an agreeing one, image 10
    copied exactly three times with contradicting captions."""
    rng = np.random.default_rng(seed)
    img, cls = clustered_images(n=200, clusters=8, dim=32, seed=seed)
    txt = img + 0.3 * rng.normal(size=img.shape)  # captions describe their image
    captions = ["caption %d" % i for i in range(len(img))]
    extra_img, extra_txt, extra_cap, copy_of = [], [], [], []
    for i in range(10):
        extra_img.append(img[i] + 0.01 * rng.normal(size=img.shape[1]))
        # a contradicting caption comes from an image of another cluster
        j = 100 + i + int(np.argmax(cls[100 + i :] != cls[i])) if i < 5 else i
        extra_txt.append(txt[j] + (0.3 * rng.normal(size=img.shape[1]) if i >= 5 else 0))
        extra_cap.append("copy %d" % i if i >= 5 else captions[j])
        copy_of.append(i)
    for j in np.flatnonzero(cls != cls[10])[-3:]:
        extra_img.append(img[10].copy())
        extra_txt.append(txt[j])
        extra_cap.append(captions[j])
        copy_of.append(10)
    img = np.concatenate([img, extra_img])
    txt = np.concatenate([txt, extra_txt])
    return img, txt, captions + extra_cap, np.asarray(copy_of)


def test_duplicate_images_with_contradicting_captions_form_groups():
    img, txt, captions, copy_of = duplicated_images()
    res = duplicate_image_groups(img, text_embeddings=txt, captions=captions)
    by_images = {tuple(sorted(g["images"])): g for g in res.groups}
    for i in range(5):
        assert (i, 200 + i) in by_images
    assert (10, 210, 211, 212) in by_images and by_images[(10, 210, 211, 212)]["size"] == 4
    assert len(res) == 6  # the agreeing copies are not groups
    for i in range(5, 10):
        assert res.row_group[i] == -1 and res.row_group[200 + i] == -1
    g = by_images[(0, 200)]
    assert g["reason"] == "contradicting captions" and g["agreement"] < 0.5
    assert g["captions"][0] == "caption 0" and g["captions"][1] != "caption 0" and g["min_image_cosine"] > 0.99
    assert (res.row_group >= 0).sum() == 5 * 2 + 4


def test_duplicate_images_from_captions_alone_and_with_given_neighbours():
    img, txt, captions, _ = duplicated_images(seed=1)
    res = duplicate_image_groups(img, captions=captions)
    # without embeddings every differently worded copy counts as contradicting
    assert len(res) == 11
    from fiftyone_ncl.core.neighbors import nearest_neighbors

    unit = img / np.linalg.norm(img, axis=1, keepdims=True)
    nbr, _ = nearest_neighbors(unit, unit, 5, np.arange(len(img)), np.arange(len(img)))
    given = duplicate_image_groups(img, text_embeddings=txt, neighbors=nbr)
    assert len(given) == 6
    with pytest.raises(ValueError, match="text_embeddings or captions"):
        duplicate_image_groups(img)
