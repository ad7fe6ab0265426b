"""The duplicate-caption benchmark: one caption pasted onto a fraction of the
images (a pipeline bug), found as a group or not.

For each problem and seed, one caption row of ``rate`` of the images is
replaced by the same pasted caption (re-embedded where the problem can embed
text). The method a run would use (default ``gmm``, the SDK's default) is
fitted and scored through its public API, and the duplicate groups are found
from its image and caption embeddings (copies of one image in the input
embeddings) exactly as every run finds them
(:func:`fiftyone_ncl.core.duplicates.find_duplicate_groups`). Reported:
recall (pasted rows put in a caption group), the clean rows put in any
group (must be 0), and the precision of the caption groups.

Problems without caption strings (the synthetic factor model) get unique
placeholder captions ("caption 17"), pasted rows keep their embeddings.
"""
import time

import numpy as np

from fiftyone_ncl.core.duplicates import find_duplicate_groups
from fiftyone_ncl.core.registry import build_method

PASTED = "Stock photo. All rights reserved."


def paste_caption(problem, rate, seed, caption=PASTED):
    """``(data, captions, pasted)``: the problem's pairs with ``caption``
    pasted onto one caption of ``rate`` of the images, every caption string,
    and the (P,) mask of pasted rows."""
    data = problem.data
    captions = list(problem.captions) if problem.captions is not None else ["caption %d" % p for p in range(data.n_pairs)]
    rng = np.random.default_rng(seed)
    images = np.flatnonzero(np.bincount(data.image_index, minlength=data.n_images) > 0)
    chosen = rng.choice(images, max(1, int(round(rate * len(images)))), replace=False)
    first_row = {}
    for p, i in enumerate(data.image_index):
        first_row.setdefault(int(i), p)
    rows = np.array(sorted(first_row[int(i)] for i in chosen), dtype=np.int64)
    pasted = np.zeros(data.n_pairs, dtype=bool)
    pasted[rows] = True
    for r in rows:
        captions[r] = caption
    texts = data.texts
    if problem.embed_text is not None and texts.dtype.kind == "f":
        texts = texts.copy()
        texts[rows] = np.asarray(problem.embed_text([caption]))[0]
    return data.replace(texts=texts), captions, pasted


def evaluate_duplicates(problem, rate=0.02, seed=0, method="gmm", settings=None):
    """One run of the benchmark; returns a result row (dict)."""
    data, captions, pasted = paste_caption(problem, rate, seed)
    t0 = time.time()
    fitted = build_method(method, seed=seed, **(settings or {})).fit(data, progress=False)
    scores = fitted.score(data, progress=False)
    t1 = time.time()
    copies = data.images if data.towers == "frozen" and data.images.ndim == 2 else None  # as a run does
    report = find_duplicate_groups(captions, data.image_index, scores.image_embeddings, scores.text_embeddings,
                                   seed=seed, copy_embeddings=copies)
    seconds = time.time() - t1
    group = np.array([g or "" for g in report.row_group], dtype=object)
    in_caption = np.array([g.startswith("caption-") for g in group])
    in_any = group != ""
    found = int((in_caption & pasted).sum())
    return {
        "problem": problem.name,
        "seed": seed,
        "method": method,
        "pairs": int(data.n_pairs),
        "pasted": int(pasted.sum()),
        "recall": found / max(int(pasted.sum()), 1),
        "precision": found / int(in_caption.sum()) if in_caption.any() else None,
        "clean_in_groups": int((in_any & ~pasted).sum()),
        "caption_groups": sum(g["kind"] == "caption" for g in report.groups),
        "image_groups": sum(g["kind"] == "image" for g in report.groups),
        "undecided": len(report.info.get("caption", {}).get("undecided", [])),
        "seconds": seconds,
        "method_seconds": t1 - t0,
    }


def run_duplicates(problems, rate=0.02, seeds=(0,), method="gmm", settings=None, log=print):
    """Every problem x seed; returns the rows."""
    rows = []
    for problem in problems:
        opts = problem.method_settings(method)
        opts.update((settings or {}).get(method, {}))
        for seed in seeds:
            row = evaluate_duplicates(problem, rate, seed, method, opts)
            rows.append(row)
            log("%-18s seed %d: %d pasted, recall %.3f, clean rows in groups %d, %d caption / %d image groups (%.1fs)"
                % (row["problem"], seed, row["pasted"], row["recall"], row["clean_in_groups"], row["caption_groups"],
                   row["image_groups"], row["seconds"]))
    return rows


def markdown(rows, command, rate):
    lines = ["Command: `%s`" % command, "",
             "One caption pasted onto %.0f %% of the images; groups found from the run's embeddings "
             "(method %s). Recall: pasted captions put in a caption group; precision: pasted among the captions "
             "in caption groups; clean rows in groups: clean captions put in any group (target 0)."
             % (100 * rate, rows[0]["method"] if rows else "-"), "",
             "| problem | pairs | pasted | recall | precision | clean rows in groups | image groups | seeds | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    by = {}
    for r in rows:
        by.setdefault(r["problem"], []).append(r)
    for name, rs in by.items():
        prec = [r["precision"] for r in rs if r["precision"] is not None]
        lines.append("| %s | %d | %d | %.3f | %s | %d | %d | %d | %.1f |" % (
            name, rs[0]["pairs"], rs[0]["pasted"], np.mean([r["recall"] for r in rs]),
            "%.3f" % np.mean(prec) if prec else "-", sum(r["clean_in_groups"] for r in rs),
            sum(r["image_groups"] for r in rs), len(rs), np.mean([r["seconds"] for r in rs])))
    return "\n".join(lines)
