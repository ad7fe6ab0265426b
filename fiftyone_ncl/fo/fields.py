"""The fields a run writes: names, types, descriptions, and how per-pair
results become per-sample values.

A run keyed ``key`` writes ``{key}_{suffix}`` fields. With a list-of-captions
field each per-pair value also goes to a ``caption_{suffix}`` list parallel to
the captions, and the per-sample value summarises the least confident caption.
The suffixes a run will write are known before anything is computed
(:func:`planned_suffixes`), so clashes with a user's fields fail first.
"""
import numpy as np

import fiftyone.core.fields as fof

# suffix -> description shown on the dataset (what it means, range, direction)
DESCRIPTIONS = {
    "confidence": "probability that the caption matches the image, in [0, 1]; low = suspected mismatch",
    "noisy": "True where the run's decision flags the pair as mismatched",
    "margin": "signed log-odds that the pair matches, relative to the decision's cut: < 0 flagged, > 0 kept",
    "similarity": "cosine similarity of image and caption in the method's space, in [-1, 1]; higher = closer",
    "label": "CRCL's self-refined soft correspondence label in [0, 1]; 0 = treated as mismatched in training",
    "suggestion": "for a flagged sample: the caption of another sample that matches this image best",
    "suggestion_id": "the id of the sample the suggestion comes from",
    "mii_image": "DisNCL modality-invariant (shared) embedding of the image",
    "mii_text": "DisNCL modality-invariant (shared) embedding of the caption",
    "mei_image": "DisNCL modality-exclusive embedding of the image",
    "mei_text": "DisNCL modality-exclusive embedding of the caption",
    "emb_image": "the method's image embedding",
    "emb_text": "the method's caption embedding",
    "duplicate_group": "group of a caption pasted onto unrelated images (caption-<i>) or of copies of one image "
    "with contradicting captions (image-<i>); None when in no group",
}

# the embedding space each stored vector suffix lives in: the image and caption
# sides of one space share it (recorded as field info "ncl_space", so that a
# later run given both fields reads them as one space); DisNCL's exclusive
# embeddings are each their own space
VECTOR_SPACES = {
    "mii_image": "mii", "mii_text": "mii",
    "emb_image": "emb", "emb_text": "emb",
    "mei_image": "mei_image", "mei_text": "mei_text",
}

# per-pair values and how a sample's list of captions is summarised
_PER_PAIR = (("confidence", min), ("noisy", any), ("margin", min), ("label", min))


def field_name(key, suffix):
    return "%s_%s" % (key, suffix)


def planned_suffixes(method_cls, is_list, suggest=True, store_embeddings=False):
    """The field suffixes a run of ``method_cls`` will write."""
    out = ["confidence", "noisy", "margin", "similarity"]
    if "label" in method_cls.output_fields:
        out.append("label")
    if is_list:
        out += ["caption_" + s for s in out if s != "similarity"] + ["caption_similarity"]
    if suggest:
        out += ["suggestion", "suggestion_id"]
    out += [s for s in method_cls.output_fields if s != "label"]
    if store_embeddings:
        out += ["emb_image", "emb_text"]
    # every run groups pasted captions and contradicted duplicate images
    out += ["duplicate_group"] + (["caption_duplicate_group"] if is_list else [])
    return out


def vector_space_info(dataset_id, run_key, suffixes):
    """Field info of a run's stored vector fields: ``{field: {"ncl_space":
    "<dataset id>:<run key>:<space>"}}``, equal for the two sides of one
    space (e.g. ``{key}_mii_image`` and ``{key}_mii_text``)."""
    return {
        field_name(run_key, s): {"ncl_space": "%s:%s:%s" % (dataset_id, run_key, VECTOR_SPACES.get(s, s))}
        for s in suffixes
    }


def run_columns(run_key, pairs, results, vectors, duplicate_group=None):
    """The values to write, per field.

    Args:
        run_key: the run key (field prefix)
        pairs: the :class:`~fiftyone_ncl.fo.pairs.CollectionPairs`
        results: the :class:`~fiftyone_ncl.fo.runs.CorrespondenceResults`
        vectors: dict suffix -> (N, d) image-side or (P, d) caption-side
            embeddings to store
        duplicate_group (None): (P,) duplicate group id of each pair, None
            where in no group (:class:`~fiftyone_ncl.core.duplicates.DuplicateReport`);
            with list captions ``caption_duplicate_group`` holds ``""`` for a
            caption in no group, and None for a sample with no grouped caption

    Returns:
        dict field -> ``(values aligned with pairs.sample_ids, field type,
        subfield, description)``
    """
    columns = {}

    def add(suffix, values, ftype, subfield=None):
        columns[field_name(run_key, suffix)] = (values, ftype, subfield, DESCRIPTIONS.get(suffix.replace("caption_", "")))

    per_pair = {
        "confidence": results.confidence.astype(np.float64),
        "noisy": results.noisy,
        "margin": None if results.margin is None else results.margin.astype(np.float64),
        "label": None if results.label is None else results.label.astype(np.float64),
    }
    for suffix, reduce in _PER_PAIR:
        values = per_pair[suffix]
        if values is None:
            continue
        ftype = fof.BooleanField if suffix == "noisy" else fof.FloatField
        if not pairs.is_list:
            add(suffix, values.tolist(), ftype)
            continue
        lists = pairs.per_sample(values)
        add(suffix, [reduce(v.tolist()) for v in lists], ftype)
        add("caption_" + suffix, [v.tolist() for v in lists], fof.ListField, ftype)

    sim = results.similarity.astype(np.float64)
    if pairs.is_list:
        # the similarity of the caption the sample's confidence comes from
        sims, confs = pairs.per_sample(sim), pairs.per_sample(per_pair["confidence"])
        add("similarity", [float(s[int(np.argmin(c))]) for s, c in zip(sims, confs)], fof.FloatField)
        add("caption_similarity", [s.tolist() for s in sims], fof.ListField, fof.FloatField)
    else:
        add("similarity", sim.tolist(), fof.FloatField)

    if results.suggestion_index is not None:
        rows = results.suggestion_index
        add("suggestion", [pairs.captions[j] if j >= 0 else None for j in rows], fof.StringField)
        add("suggestion_id", [pairs.sample_ids[pairs.image_index[j]] if j >= 0 else None for j in rows], fof.StringField)

    if duplicate_group is not None:
        if not pairs.is_list:
            add("duplicate_group", list(duplicate_group), fof.StringField)
        else:
            bounds = np.searchsorted(pairs.image_index, np.arange(pairs.n_images + 1))
            lists = [list(duplicate_group[bounds[i] : bounds[i + 1]]) for i in range(pairs.n_images)]
            add("duplicate_group", [next((g for g in v if g is not None), None) for v in lists], fof.StringField)
            # a list of strings holds no None: "" marks a caption in no group,
            # and a sample none of whose captions is grouped gets None
            add("caption_duplicate_group", [[g or "" for g in v] if any(v) else None for v in lists],
                fof.ListField, fof.StringField)

    for suffix, arr in vectors.items():
        arr = np.asarray(arr, dtype=np.float32)
        if suffix.endswith("_image") or not pairs.is_list:
            add(suffix, list(arr), fof.VectorField)
        else:
            add(suffix, list(pairs.per_sample(arr)), fof.ArrayField)
    return columns
