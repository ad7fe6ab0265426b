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
}

# per-pair values and how a sample's list of captions is summarised
_PER_PAIR = (("confidence", min), ("noisy", any), ("margin", min), ("label", min))


def field_name(key, suffix):
    return "%s_%s" % (key, suffix)


def planned_suffixes(method_cls, is_list, suggest=True, store_embeddings=False):
    """The field suffixes a run of ``method_cls`` will write."""
    out = ["confidence", "noisy", "similarity"]
    if "label" in method_cls.output_fields:
        out.append("label")
    if is_list:
        out += ["caption_" + s for s in out if s != "similarity"] + ["caption_similarity"]
    if suggest:
        out += ["suggestion", "suggestion_id"]
    out += [s for s in method_cls.output_fields if s != "label"]
    if store_embeddings:
        out += ["emb_image", "emb_text"]
    return out


def run_columns(run_key, pairs, results, vectors):
    """The values to write, per field.

    Args:
        run_key: the run key (field prefix)
        pairs: the :class:`~fiftyone_ncl.fo.pairs.CollectionPairs`
        results: the :class:`~fiftyone_ncl.fo.runs.CorrespondenceResults`
        vectors: dict suffix -> (N, d) image-side or (P, d) caption-side
            embeddings to store

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

    for suffix, arr in vectors.items():
        arr = np.asarray(arr, dtype=np.float32)
        if suffix.endswith("_image") or not pairs.is_list:
            add(suffix, list(arr), fof.VectorField)
        else:
            add(suffix, list(pairs.per_sample(arr)), fof.ArrayField)
    return columns
