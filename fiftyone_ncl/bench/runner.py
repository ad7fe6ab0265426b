"""The evaluation grid: data set x noise kind x noise rate x seed x method.

Every registered method runs (a method added later joins automatically),
plus an ``oracle`` row: the plain InfoNCE baseline trained on the clean pairs
only, the ceiling of detection. Per run: detection AUROC / AP / precision at
k of the pairs ranked from least to most confident against the injected
mismatches, correction accuracy of the suggestions for flagged noisy pairs,
retrieval on the clean test split when the data set has one, and wall time.
"""
import logging
import os
import time
from typing import NamedTuple

import numpy as np

from fiftyone_ncl.core.metrics import detection_metrics, retrieval_metrics
from fiftyone_ncl.core.noise import inject_category, inject_mixed, inject_neighbors, inject_nouns, inject_random
from fiftyone_ncl.core.judge import judge, judge_cross_fitted
from fiftyone_ncl.core.registry import build_method, get_method_class, list_methods
from fiftyone_ncl.core.suggestions import suggest_captions

logger = logging.getLogger(__name__)

ORACLE = "oracle"
CCA_ORACLE = "cca-oracle"
# reference rows fitted on the clean pairs only, and the method each one is
ORACLES = {ORACLE: "cosine", CCA_ORACLE: "cca"}
# a runner setting, not a method option: ``--set crcl@oof.folds=5`` ranks and
# decides on out-of-sample statistics (core.judge.judge_cross_fitted)
FOLDS_SETTING = "folds"
# the product's default: a trial on injected swaps picks the method
# (core.auto); the row records what it chose
AUTO = "auto"
AUTO_CANDIDATES = "_candidates"  # the auto row's settings: each candidate's grid settings


def choose_for_problem(data, seed, settings=None, candidate_settings=None):
    """What ``method="auto"`` runs on ``data``: ``(name, options, report)``.

    Each candidate trials under its own settings of the grid
    (``candidate_settings[name]``: the problem's and the profile's epochs,
    stages...) plus the candidate's own options, as a user passing those
    options would get; ``settings`` (the auto row's: the profile's ``"*"``
    entry and ``--set auto.X``) go to every candidate that takes them, under
    the candidate's own settings.
    """
    from fiftyone_ncl.core.auto import CANDIDATES, FALLBACK, accepted_options, choose_method, fallback_reason

    def options(name):
        own = dict(settings or {}, **(candidate_settings or {}).get(name, {}), seed=seed)
        return dict(accepted_options(build_method, name, own), **CANDIDATES.get(name, {}))

    reason = fallback_reason(data)
    if reason is not None:
        return FALLBACK, options(FALLBACK), {"chosen": FALLBACK, "reason": reason}
    candidates = {name: options(name) for name in CANDIDATES}
    name, own, report = choose_method(data, build_method, candidates=candidates, seed=seed)
    return name, own, report


def make_noisy(problem, kind, rate, seed):
    """Injects noise into a problem's clean pairs.

    Returns:
        ``(data, noisy, source)``: the noisy :class:`PairData`, the (P,)
        truth mask, and the (P,) row of the caption each pair now carries
        (None for noun replacement, which edits captions instead)
    """
    clean = problem.data
    image_index = clean.image_index
    if rate == 0:
        return clean, np.zeros(clean.n_pairs, dtype=bool), np.arange(clean.n_pairs)
    if kind == "random":
        noise = inject_random(image_index, rate, seed=seed, classes=problem.classes)
    elif kind in ("neighbor", "mixed"):
        if problem.shared is None:
            raise ValueError("%s has no shared factors for near-neighbour swaps" % problem.name)
        inject = inject_neighbors if kind == "neighbor" else inject_mixed
        noise = inject(problem.shared, image_index, rate, seed=seed, k=problem.neighbor_k, classes=problem.classes)
    elif kind == "category":
        if problem.categories is None:
            raise ValueError("%s has no categories for category-aware swaps" % problem.name)
        noise = inject_category(
            image_index, rate, problem.categories, seed=seed, classes=problem.classes, groups=problem.groups
        )
    elif kind == "noun":
        if problem.captions is None or problem.vocabulary is None:
            raise ValueError("%s has no captions/categories for noun replacement" % problem.name)
        captions, noisy = inject_nouns(problem.captions, problem.categories, problem.vocabulary, rate, seed=seed)
        texts = clean.texts.copy()
        edited = np.flatnonzero(noisy)
        if len(edited):
            texts[edited] = problem.embed_text([captions[i] for i in edited])
        return clean.replace(texts=texts), noisy, None
    else:
        raise ValueError("unknown noise kind %r; expected random, category or noun" % kind)
    return clean.replace(texts=clean.texts[noise.source]), noise.noisy, noise.source


def correction_accuracy(problem, scores, noisy, source, threshold=0.5, flags=None):
    """Fraction of flagged (``flags``, else confidence below ``threshold``),
    truly noisy pairs whose suggested caption is a right one: same class
    (class-level truth) or the image's own original caption (instance
    level). None when it cannot be judged."""
    flagged = (np.asarray(scores.confidence) < threshold if flags is None else np.asarray(flags)) & noisy
    if not flagged.any() or source is None:
        return None
    rows = np.flatnonzero(flagged)
    image_index = problem.data.image_index
    best, _ = suggest_captions(scores.image_embeddings, scores.text_embeddings, image_index, image_index[rows])
    ok = best >= 0
    original = source[best[ok]]  # clean row of the suggested caption
    if problem.classes is not None:
        right = problem.classes[original] == problem.classes[rows[ok]]
    else:
        right = image_index[original] == image_index[rows[ok]]
    return float(np.sum(right) / len(rows))


def _retrieval(problem, method):
    if problem.test is None:
        return {}
    scores = method.score(problem.test, progress=False)
    classes = problem.test_classes or (None, None)
    return retrieval_metrics(
        scores.image_embeddings, scores.text_embeddings, problem.test.image_index, classes[0], classes[1]
    )


def run_one(problem, data, noisy, source, method_name, seed, settings=None, threshold=0.5, reuse=None, label=None):
    """Fits and scores one method on noisy data through its public API;
    returns ``(row, scores, method)``.

    ``method_name`` ``"oracle"`` is the plain InfoNCE baseline trained on the
    clean pairs only. ``reuse`` may hold a fitted method whose training this
    one shares (``gmm`` after ``cosine``: the same heads, another
    calibration; see ``adopt_fit``); its fit time is counted as this
    method's. ``label`` names the row (default the method).
    """
    settings = dict(settings or {})
    folds = settings.pop(FOLDS_SETTING, None)
    t0 = time.time()
    chosen = None
    if method_name == AUTO:  # the trial's time counts as the run's
        candidate_settings = settings.pop(AUTO_CANDIDATES, None)
        name, options, chosen = choose_for_problem(data, seed, settings, candidate_settings)
        method_name, settings = name, {k: v for k, v in options.items() if k != "seed"}
    if method_name == ORACLE:
        method = build_method("cosine", train_heads=True, seed=seed, **settings)
        method.fit(data.subset(np.flatnonzero(~noisy)), progress=False)
    elif method_name == CCA_ORACLE:  # a linear map fitted on the clean pairs only: the linear ceiling
        method = build_method("cca", refine=0, seed=seed)
        method.fit(data.subset(np.flatnonzero(~noisy)), progress=False)
    elif reuse is not None:
        method = build_method(method_name, seed=seed, **settings).adopt_fit(reuse.method)
        t0 -= reuse.fit_seconds
    else:
        method = build_method(method_name, seed=seed, **settings)
        method.fit(data, progress=False)
    fit_seconds = time.time() - t0
    scores = method.score(data, progress=False)
    seconds = time.time() - t0
    row = {"method": label or method_name, "seconds": seconds}
    if chosen is not None:
        row.update(chosen=chosen["chosen"], auto_trial=chosen.get("auroc"), auto_reason=chosen.get("reason"))
    # the ranking is the method's statistic; the decision and the estimate
    # come from the product's default decision layer (decoy null)
    if folds:  # out-of-sample: the ranking and the decision from cross-fitted statistics
        verdict = judge_cross_fitted(lambda: build_method(method_name, seed=seed, **settings),
                                     data, folds, "probability", threshold, seed=seed)
        statistic = verdict.statistic
        row["seconds"] = time.time() - t0
    else:
        verdict = judge(method, data, "probability", threshold, seed=seed)
        statistic = method.statistic(scores)
    row.update(detection_metrics(noisy, statistic, flags=verdict.decision.flags))
    clean = ~np.asarray(noisy, dtype=bool)
    row["clean_flagged"] = float(np.mean(verdict.decision.flags[clean])) if clean.any() else None
    row.update(estimated_rate=verdict.rate.rate, estimated_low=verdict.rate.low, estimated_high=verdict.rate.high,
               estimate_usable=bool(verdict.rate.usable))
    row["correction_accuracy"] = correction_accuracy(problem, scores, noisy, source, flags=verdict.decision.flags)
    row.update(_retrieval(problem, method))
    return row, scores, Fitted(method, fit_seconds)


class Fitted(NamedTuple):
    """A fitted method and how long its fit took (for reuse)."""

    method: object
    fit_seconds: float


def run_grid(problems, kinds, rates, seeds, methods=None, out_dir=None, settings=None, log=print):
    """Runs the grid; returns the result rows (one per run).

    Args:
        problems: :class:`~fiftyone_ncl.bench.problems.Problem` objects
        kinds: noise kinds (``"random"``, ``"category"``, ``"noun"``); kinds a
            problem cannot do are skipped
        rates: noise rates in [0, 1]
        seeds: seeds (noise and training)
        methods (None): method names; default every registered method plus
            the oracle
        out_dir (None): where to save the noise masks (``noise/*.npz``) and
            every run's per-pair confidence and similarity (``scores/*.npz``)
        settings (None): ``{method: options}`` applied on top of the problem's
        log (print): progress printer

    Returns:
        a list of dicts; confidence arrays of the first seed are attached
        under ``"_confidence"`` / ``"_noisy"`` for the figures
    """
    methods = list(methods or list_methods() + [ORACLE])
    if out_dir:
        for sub in ("noise", "scores"):
            os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    rows = []
    for problem in problems:
        for kind in kinds:
            if kind in ("neighbor", "mixed") and problem.shared is None:
                continue
            if kind in ("category", "noun") and problem.shared is not None and problem.categories is None:
                continue
            if kind == "category" and problem.categories is None:
                continue
            if kind == "noun" and problem.vocabulary is None:
                continue
            for rate in rates:
                if rate == 0 and kind != kinds[0]:
                    continue  # 0% is the same for every kind
                for seed in seeds:
                    data, noisy, source = make_noisy(problem, kind, rate, seed)
                    run_name = "%s_%s_%02d_seed%d" % (problem.name, kind, round(100 * rate), seed)
                    if out_dir:
                        np.savez_compressed(
                            os.path.join(out_dir, "noise", run_name + ".npz"),
                            noisy=noisy,
                            source=source if source is not None else np.arange(len(noisy)),
                        )
                    fitted = {}
                    for method in methods:
                        # "crcl@cca": crcl with the options settings["crcl@cca"] adds
                        base = method.split("@", 1)[0]
                        if base in ORACLES and rate == 0:
                            continue
                        if base != AUTO and data.towers != "frozen" and getattr(
                                get_method_class(ORACLES.get(base, base)), "needs_embeddings", False):
                            log("%-16s %-8s %3d%% seed %d %-7s skipped: it needs embeddings, these inputs "
                                "train %s towers" % (problem.name, kind, round(100 * rate), seed, method, data.towers))
                            continue
                        if base == CCA_ORACLE:
                            opts = {}
                        elif base == AUTO:  # each candidate trials with its own grid settings
                            from fiftyone_ncl.core.auto import CANDIDATES

                            opts = {AUTO_CANDIDATES: {
                                name: dict(problem.method_settings(name), **(settings or {}).get(name, {}))
                                for name in CANDIDATES}}
                        else:
                            opts = problem.method_settings(ORACLES.get(base, base))
                        opts.update((settings or {}).get(base, {}))
                        if base != method:
                            opts.update((settings or {}).get(method, {}))
                        # gmm trains the very heads cosine trained: adopt them
                        reuse = fitted.get(("cosine", repr(sorted(opts.items())))) if base == "gmm" else None
                        row, scores, fit = run_one(problem, data, noisy, source, base, seed, opts, reuse=reuse,
                                                   label=method)
                        fitted[(base, repr(sorted(opts.items())))] = fit
                        if out_dir:  # the per-pair scores, so any metric can be recomputed later
                            np.savez_compressed(
                                os.path.join(out_dir, "scores", "%s_%s.npz" % (run_name, method)),
                                confidence=np.asarray(scores.confidence, dtype=np.float64),
                                similarity=np.asarray(scores.similarity, dtype=np.float32),
                            )
                        row.update(
                            problem=problem.name, kind=kind if rate else "none", rate=rate, seed=seed,
                            realised_rate=float(noisy.mean()),
                        )
                        if seed == seeds[0]:
                            row["_confidence"] = np.asarray(scores.confidence, dtype=np.float32)
                            row["_noisy"] = noisy
                        rows.append(row)
                        log(
                            "%-16s %-8s %3d%% seed %d %-7s AUROC %s AP %s flagged %5d (clean %s) est %.3f  %.0fs"
                            % (
                                problem.name, kind, round(100 * rate), seed,
                                method + (" (%s)" % row["chosen"] if row.get("chosen") else ""),
                                "%.3f" % row["auroc"] if row["auroc"] is not None else "  -  ",
                                "%.3f" % row["ap"] if row["ap"] is not None else "  -  ",
                                row["flagged"],
                                "%.3f" % row["clean_flagged"] if row["clean_flagged"] is not None else "-",
                                row["estimated_rate"], row["seconds"],
                            )
                        )
    return rows
