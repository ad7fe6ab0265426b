"""Scoring a large collection in chunks, for methods that do not train.

:func:`score_in_chunks` scores the pairs of two precomputed VectorFields in
one joint space (CLIP-style image and caption embeddings) without ever
holding the vectors of more than one chunk. The decision (mismatch-rate
estimate, confidences, flags) comes from the project's own decision layer
(:mod:`fiftyone_ncl.core.decision`), fitted on a seeded random sample of
pairs (every pair of a collection no larger than the sample) and decoy pairs
drawn inside the sample's chunks, as :func:`fiftyone_ncl.core.judge.judge`
does on every pair of a normal run; then one pass reads a chunk, scores it,
applies the decision and writes ``{key}_confidence``, ``{key}_noisy``,
``{key}_similarity`` and ``{key}_margin`` while the next chunk is read,
through the run key's journal (as before, as after, or marked for
:func:`~fiftyone_ncl.repair_run`). Memory: a chunk of vectors (two while one
is written) plus the sample's scalars, whatever the collection's size.

A streamed run is a correspondence run like the others
(:func:`~fiftyone_ncl.list_runs`, :func:`~fiftyone_ncl.get_run_info`,
``describe_estimate``, ``suspects_view``, ``tag_mismatches``,
``delete_run``, ``rename_run``), recorded with ``streaming: True``, its
chunk and sample size, but its results hold no per-pair arrays
(:class:`StreamedResults`): functions that need them (``decide``,
``evaluate``, ``confidence_figure``) refuse with :class:`StreamedRunError`;
:func:`decide_in_chunks` re-decides a streamed run from its fields.
"""
import collections
import concurrent.futures
import io
import itertools
import logging
import numbers
import zlib

import numpy as np
from bson import ObjectId

import fiftyone.core.fields as fof
import fiftyone.core.odm as foo
import fiftyone.core.utils as fou

from fiftyone_ncl.core.calibration import fit_mixture
from fiftyone_ncl.correspondence import _check_threshold
from fiftyone_ncl.core.decision import check_level, decide, estimate_mismatch_rate
from fiftyone_ncl.core.health import assess
from fiftyone_ncl.core.judge import MAX_DECOYS, MIN_DECOYS
from fiftyone_ncl.fo.embeddings import INFO_SPACE
from fiftyone_ncl.fo.fields import DESCRIPTIONS, field_name
from fiftyone_ncl.fo.journal import run_lock
from fiftyone_ncl.fo.progress import PhasedProgress
from fiftyone_ncl.fo.runs import (
    CorrespondenceConfig,
    CorrespondenceResults,
    check_new_run_key,
    check_run,
    locks_run_key,
    owned_checkpoint,
    stage_record,
)
from fiftyone_ncl.fo.vectors import NpyDecoder
from fiftyone_ncl.fo.writer import FieldWriter
from fiftyone_ncl.utils import to_jsonable

logger = logging.getLogger(__name__)

# methods whose score of a pair needs nothing but the pair's two vectors
STREAMABLE_METHODS = ("gmm", "cosine")
# the decision modes a streamed run can make ("f1" needs marked pairs)
STREAMABLE_DECISIONS = ("probability", "fdr", "top_k", "fraction")
SUFFIXES = ("confidence", "noisy", "similarity", "margin")
# what a normal run's results hold per pair and a streamed run's do not
PER_PAIR_ARRAYS = ("sample_ids", "image_index", "caption_position", "confidence", "similarity", "noisy", "label",
                   "suggestion_index", "calibration_score", "margin", "statistic")
_BATCH = 1000  # documents per MongoDB cursor batch, and per decoding task
_WORKERS = 2  # threads decoding vectors while the cursor is read
_SHOW = 5


class StreamedRunError(ValueError):
    """A streamed run (:func:`score_in_chunks`) was asked for per-pair arrays
    it does not keep."""


# the run's results: no per-pair arrays ------------------------------------------


def _no_array(name):
    def get(self):
        raise StreamedRunError(
            "run %r was scored in chunks (score_in_chunks) and keeps no per-pair arrays (%s) in its results: "
            "re-decide with fiftyone_ncl.decide_in_chunks(dataset, %r, decision, level); its "
            "per-sample values are the fields %s"
            % (self.key, name, self.key, ", ".join(field_name(self.key, s) for s in SUFFIXES)))

    return property(get)


class StreamedResults(CorrespondenceResults):
    """The record of a streamed run: counts, the decision, the mismatch-rate
    estimate, the calibration, and the statistic of the sample and of the
    decoys the decision was fitted on (at most ``sample_size`` and 100,000
    floats, for :func:`decide_in_chunks`), but no per-pair arrays: reading
    ``sample_ids``, ``confidence``, ``statistic``... raises
    :class:`StreamedRunError` (the values are in the run's fields).

    Attributes:
        n_samples: samples scored (one pair each)
        flagged: pairs flagged by the decision
        mean_confidence: mean ``{key}_confidence``
        sample_statistic: (S,) the sampled pairs' statistic
        null_statistic: (M,) the decoys' statistic
        info: as a normal run's (``decision``, ``null``, ``calibration``,
            ``health``) plus ``streaming``
    """

    _ARRAYS = ("sample_statistic", "null_statistic")
    caption_hash = None  # no caption fingerprint: never "stale"

    def __init__(self, samples, config, brain_key, n_samples=0, flagged=0, mean_confidence=None,
                 sample_statistic=None, null_statistic=None, info=None, metrics=None, tagged=None, backend=None):
        # not CorrespondenceResults.__init__: it stores the per-pair arrays
        super(CorrespondenceResults, self).__init__(samples, config, brain_key, backend=backend)  # pylint: disable=bad-super-call
        self.n_samples = int(n_samples)
        self.flagged = int(flagged)
        self.mean_confidence = mean_confidence
        self.sample_statistic = None if sample_statistic is None else np.asarray(sample_statistic, dtype=np.float32)
        self.null_statistic = None if null_statistic is None else np.asarray(null_statistic, dtype=np.float32)
        self.info = info or {}
        self.metrics = metrics or {}
        self.tagged = {k: list(v) for k, v in (tagged or {}).items()}

    @property
    def n_pairs(self):
        return self.n_samples

    @property
    def n_noisy(self):
        return self.flagged

    def summary(self):
        return {
            "run_key": self.key,
            "method": self.config.method_name,
            "caption_field": self.config.caption_field,
            "samples": self.n_samples,
            "pairs": self.n_samples,
            "flagged": self.flagged,
            "decision": {k: self.decision.get(k) for k in ("mode", "level", "estimated_fdr")},
            "mismatch_rate": {k: self.mismatch_rate.get(k) for k in ("rate", "low", "high", "usable")},
            "health": {k: self.health.get(k) for k in ("verdict", "summary")} if self.health else None,
            "threshold": self.threshold,
            "mean_confidence": self.mean_confidence,
            "metrics": self.metrics,
            "streaming": True,
            "chunk_size": getattr(self.config, "chunk_size", None),
            "sample_size": getattr(self.config, "sample_size", None),
        }

    @classmethod
    def _from_dict(cls, d, samples, config, brain_key):
        def arr(name):
            value = d.get(name)
            return None if value is None else fou.deserialize_numpy_array(value, ascii=True)

        return cls(samples, config, brain_key, n_samples=d.get("n_samples", 0), flagged=d.get("flagged", 0),
                   mean_confidence=d.get("mean_confidence"), sample_statistic=arr("sample_statistic"),
                   null_statistic=arr("null_statistic"), info=d.get("info"), metrics=d.get("metrics"),
                   tagged=d.get("tagged"))


for _name in PER_PAIR_ARRAYS:
    setattr(StreamedResults, _name, _no_array(_name))
del _name


# checks ----------------------------------------------------------------------------


def _check_chunk_size(value, name="chunk_size"):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
        raise ValueError("%s must be an integer >= 2, got %r" % (name, value))
    return int(value)


def _check_method(method):
    if method in STREAMABLE_METHODS:
        return method
    from fiftyone_ncl.core.registry import get_method_class

    cls = get_method_class(method)  # an unknown name fails here, listing the methods
    why = "it trains on the whole collection" if cls.trains else "it scores a pair against the whole collection"
    raise ValueError("method %r cannot be scored in chunks (%s); score_in_chunks runs %s: use "
                     "fiftyone_ncl.compute_correspondence(..., method=%r) instead"
                     % (method, why, " and ".join(STREAMABLE_METHODS), method))


def _check_decision(decision, level):
    """The decision layer's own check, less ``f1`` (it needs marked pairs);
    ``top_k``'s level is checked once the collection's size is known."""
    if decision == "f1":
        raise ValueError("decision='f1' needs pairs a person marked (labels=), which score_in_chunks does not "
                         "read; use one of %s" % ", ".join(STREAMABLE_DECISIONS))
    if decision != "top_k":
        check_level(decision, level)


def _check_fields(samples, image_field, text_field):
    """Both sides must be VectorFields of one space; returns their dimension
    (read from the first sample that has both)."""
    spaces = {}
    for side, name in (("image", image_field), ("text", text_field)):
        if not isinstance(name, str):
            raise ValueError("%s_embeddings must be the name of a VectorField (score_in_chunks reads stored "
                             "vectors), got %s" % (side, type(name).__name__))
        field = samples.get_field(name)
        if field is None:
            raise ValueError("%s embeddings field %r does not exist on %r" % (side, name, samples._dataset.name))
        if not isinstance(field, fof.VectorField):
            raise ValueError("%s embeddings field %r is a %s, not a VectorField (one vector per sample; "
                             "per-caption lists need compute_correspondence)" % (side, name, type(field).__name__))
        spaces[side] = (field.info or {}).get(INFO_SPACE, "field")
    if spaces["image"] != spaces["text"]:
        raise ValueError("image embeddings field %r (space %r) and text embeddings field %r (space %r) are not one "
                         "joint space, so their cosine means nothing; compute_correspondence(method='gmm') trains "
                         "heads to align them" % (image_field, spaces["image"], text_field, spaces["text"]))
    first = next(_read_docs(samples, [image_field, text_field],
                            [{"$match": {image_field: {"$ne": None}, text_field: {"$ne": None}}}, {"$limit": 1}]),
                 None)
    if first is None:
        return None
    dims = [len(NpyDecoder()(_get(first, f)).ravel()) for f in (image_field, text_field)]
    if dims[0] != dims[1]:
        raise ValueError("image embeddings field %r holds %d-d vectors and text embeddings field %r %d-d ones: "
                         "they are not one joint space; compute_correspondence(method='gmm') trains heads to "
                         "align them" % (image_field, dims[0], text_field, dims[1]))
    return dims[0]


# reading ---------------------------------------------------------------------------


def _get(doc, path):
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def _read_docs(samples, fields, stages=()):
    """A cursor over the collection's documents, projected on ``fields``."""
    coll = foo.get_db_conn()[samples._dataset._sample_collection_name]
    pipeline = samples._pipeline() + list(stages) + [{"$project": {f: 1 for f in fields}}]
    return coll.aggregate(pipeline, batchSize=_BATCH, allowDiskUse=True)


def _read_ids(samples, n):
    """Every sample id of the collection, (n, 12) uint8 (from the ``_id``
    index alone for a whole dataset)."""
    if samples._pipeline():
        cursor = _read_docs(samples, ["_id"])
    else:
        coll = foo.get_db_conn()[samples._dataset._sample_collection_name]
        cursor = coll.find({}, {"_id": 1}, batch_size=10_000).hint([("_id", 1)])
    ids = np.frombuffer(b"".join(doc["_id"].binary for doc in cursor), dtype=np.uint8).reshape(-1, 12)
    if len(ids) != n:
        raise RuntimeError("the collection changed while it was read (%d samples, %d expected); run again"
                           % (len(ids), n))
    return ids


def _check_distinct(ids):
    if len(np.unique(ids.view(np.dtype((np.void, 12))).ravel())) != len(ids):
        raise ValueError("the collection holds some samples more than once (a view concatenating overlapping "
                         "views?); score a collection of distinct samples")


def _docs_of(samples, fields, ids, batch=10_000):
    """The documents of the samples ``ids`` ((m, 12) uint8), fetched by id
    in batches."""
    for start in range(0, len(ids), batch):
        wanted = _object_ids(ids[start : start + batch])
        yield from _read_docs(samples, fields, [{"$match": {"_id": {"$in": wanted}}}])


def _decode_batch(docs, first, fields, dim, ids, out):
    """Decodes a batch of documents into rows ``first...`` of ``ids`` and
    of each matrix in ``out`` (one per field); returns the problems found,
    ``(field index, sample id, dimension or None when missing)``. Runs in
    worker threads: ``zlib`` releases the GIL while it inflates."""
    m = len(docs)
    ids[first : first + m] = np.frombuffer(b"".join(d["_id"].binary for d in docs), np.uint8).reshape(m, 12)
    problems = []
    for k, field in enumerate(fields):
        for i, size in _decode_field(docs, field, dim, out[k], first):
            problems.append((k, docs[i]["_id"], size))
    return problems


def _decode_field(docs, field, dim, out, first):
    """Decodes one field of ``docs`` into rows ``first...`` of ``out``;
    returns ``[(row, dimension or None)]`` of the documents without a
    vector of ``dim`` values.

    FiftyOne stores a vector as zlib-compressed ``.npy`` bytes: each value
    is inflated, and the payloads of those sharing the batch's first
    ``.npy`` header (one layout) are joined and read as one matrix; others
    go through :class:`~fiftyone_ncl.fo.vectors.NpyDecoder`."""
    decode = NpyDecoder()
    get = (lambda d: d.get(field)) if "." not in field else (lambda d: _get(d, field))
    header, dtype, rows, payloads, bad = None, None, [], [], []
    for i, doc in enumerate(docs):
        raw = get(doc)
        if raw is None:
            bad.append((i, None))
            continue
        if isinstance(raw, bytes):
            buf = zlib.decompress(raw)
            if header is None:
                header, dtype = _npy_layout(buf, dim)
            if header is not None and buf[: len(header)] == header:
                rows.append(first + i)
                payloads.append(memoryview(buf)[len(header) :])
                continue
        vec = decode(raw)
        if vec.size != dim:
            bad.append((i, int(vec.size)))
            continue
        out[first + i] = vec.ravel()
    if payloads:
        values = np.frombuffer(b"".join(payloads), dtype=dtype).reshape(-1, dim)
        if len(rows) == rows[-1] - rows[0] + 1:  # consecutive rows
            out[rows[0] : rows[-1] + 1] = values
        else:
            out[rows] = values
    return bad


def _npy_layout(buf, dim):
    """``(header bytes, dtype)`` of a ``.npy`` buffer holding ``dim``
    numbers in C order, else ``(None, None)``."""
    f = io.BytesIO(buf)
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if fortran or dtype.hasobject or int(np.prod(shape)) != dim or dtype.kind not in "fiu":
        return None, None
    return buf[: f.tell()], dtype


def _raise_problems(problems, fields, sides, dim):
    for k, (field, side) in enumerate(zip(fields, sides)):
        missing = [str(i) for j, i, d in problems if j == k and d is None]
        wrong = [(str(i), d) for j, i, d in problems if j == k and d is not None]
        where = "%s embeddings field %r" % (side, field)
        if missing:
            raise ValueError("%s has no vector on %d samples (e.g. %s); every sample needs one"
                             % (where, len(missing), ", ".join(missing[:_SHOW])))
        if wrong:
            raise ValueError("%s mixes vectors of different dimensions: %d-d and %s (e.g. sample %s)"
                             % (where, dim, ", ".join(sorted({"%d-d" % d for _, d in wrong})), wrong[0][0]))


def _read_vectors(docs, fields, sides, dim, chunk_size):
    """Yields ``(ids (m, 12) uint8, [((m, dim) float32, (m,) 1 / norms) per
    field])`` chunk by chunk from an iterator of documents. The documents
    are fetched here while worker threads decode those already fetched (a
    few batches of raw bytes wait at a time); a missing vector, one of
    another dimension or an all-zero / NaN one raises a ValueError naming
    the field and samples, at the chunk where it is met."""
    docs = iter(docs)
    with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
        while True:
            ids = np.empty((chunk_size, 12), dtype=np.uint8)
            out = [np.empty((chunk_size, dim), dtype=np.float32) for _ in fields]
            pending, problems, m = collections.deque(), [], 0
            while m < chunk_size:
                batch = list(itertools.islice(docs, min(_BATCH, chunk_size - m)))
                if not batch:
                    break
                pending.append(pool.submit(_decode_batch, batch, m, fields, dim, ids, out))
                m += len(batch)
                while len(pending) > 2 * _WORKERS:
                    problems += pending.popleft().result()
            problems += [p for f in pending for p in f.result()]
            if m == 0:
                return
            _raise_problems(problems, fields, sides, dim)
            ids = ids[:m]
            yield ids, [(o[:m], _inverse_norms(o[:m], "%s embeddings field %r" % (side, f), ids))
                        for o, f, side in zip(out, fields, sides)]
            del out


def _inverse_norms(x, where, ids):
    """1 / the L2 norm of each row of ``x`` (float64, without a float64 copy
    of ``x``); a ValueError naming the samples of NaN, infinite or all-zero
    rows."""
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    for bad, what in ((~np.isfinite(sq), "NaN or infinite values"), (sq == 0, "all-zero vectors")):
        rows = np.flatnonzero(bad)
        if len(rows):
            raise ValueError("%s has %s in %d rows (e.g. %s)"
                             % (where, what, len(rows), ", ".join(str(_Ids(ids)[r]) for r in rows[:_SHOW])))
    return 1.0 / np.sqrt(sq)


def _cosine(img, txt, a=slice(None), b=slice(None)):
    """Cosine of image rows ``a`` with caption rows ``b`` (each an ``(x,
    1 / norms)`` pair), float32."""
    (x, inv_x), (y, inv_y) = img, txt
    dot = np.einsum("ij,ij->i", x[a], y[b], dtype=np.float64)
    return (dot * inv_x[a] * inv_y[b]).astype(np.float32)


class _Ids:
    """Sample ids of rows as strings, built only for the rows named in an error."""

    def __init__(self, ids):
        self.ids = ids

    def __getitem__(self, i):
        return str(ObjectId(self.ids[i].tobytes()))


def _object_ids(rows):
    """(m, 12) uint8 rows -> ObjectIds."""
    raw = rows.tobytes()
    return [ObjectId(raw[i : i + 12]) for i in range(0, len(raw), 12)]


# the sample: statistic, decoys, decision -------------------------------------------


def _sample_pass(docs, fields, dim, size, chunk_size, n_decoys, seed, report):
    """Scores the sample's pairs, chunk by chunk, with decoys drawn inside
    each chunk (an image with the caption of another pair of the chunk).

    Returns:
        ``(ids (size, 12) uint8, statistic (size,) float32, null (m,)
        float32, chunks)``
    """
    rng = np.random.default_rng(seed)
    ids = np.empty((size, 12), dtype=np.uint8)
    sim = np.empty(size, dtype=np.float32)
    nulls, done, chunks, owed = [], 0, 0, 0.0
    for chunk_ids, (img, txt) in _read_vectors(docs, fields, ("image", "text"), dim, chunk_size):
        m = len(chunk_ids)
        if done + m > size:
            raise RuntimeError("the collection grew while it was read (more than %d samples); run again" % size)
        ids[done : done + m] = chunk_ids
        sim[done : done + m] = _cosine(img, txt)
        owed += n_decoys * m / size  # the chunk's share of the null
        k = int(owed) if m > 1 else 0
        owed -= k
        if k:
            a = rng.integers(m, size=2 * k + 16)
            b = rng.integers(m, size=2 * k + 16)
            ok = a != b
            a, b = a[ok][:k], b[ok][:k]
            for j in range(0, k, 8192):  # gathered rows in blocks: small copies
                nulls.append(_cosine(img, txt, a[j : j + 8192], b[j : j + 8192]))
        del img, txt  # before the next chunk is decoded
        done += m
        chunks += 1
        report(done / size, "scored %d of %d sampled pairs" % (done, size))
    if done != size:
        raise RuntimeError("the collection changed while it was read (%d samples, %d expected); run again"
                           % (done, size))
    return ids, sim, np.concatenate(nulls) if nulls else np.empty(0, np.float32), chunks


class _Decider:
    """The project's decision layer (as :func:`fiftyone_ncl.core.judge.judge`)
    fitted on a sample's statistic and the decoys, applied to any pair's
    statistic: its confidence interpolated along the sample's (monotone),
    its flag ``statistic < cut``, its margin in the sample's robust standard
    deviations. On a sample of every pair it gives the decision's own values.

    Args:
        statistic: (S,) the sample's statistic
        null: (M,) the decoys' statistic
        mode, level: the decision (``top_k``'s k is scaled from ``n`` to S)
        n: pairs of the whole collection
        seed: the bootstrap's seed
    """

    def __init__(self, statistic, null, mode, level, n, seed=0):
        statistic = np.asarray(statistic, dtype=np.float64)
        s = len(statistic)
        fitted_level = int(round(level * s / n)) if mode == "top_k" else level
        self.rate = estimate_mismatch_rate(statistic, null, seed=seed)
        decision = decide(statistic, mode, fitted_level, null_score=null, rate=self.rate, seed=seed)
        self.cut = decision.cut
        order = np.argsort(statistic, kind="stable")
        self._xs, self._conf = statistic[order], decision.confidence[order]
        self._scale = _margin_scale(statistic)
        lo, hi = self._xs[0], self._xs[-1]
        self._margin_cut = self.cut if np.isfinite(self.cut) else (lo - 1.0 if self.cut < 0 else hi + 1.0)
        self.info = dict(decision.info, level=level, fitted_on=s)

    def apply(self, statistic):
        """``(confidence, flags, margin)`` of pairs with this statistic."""
        statistic = np.asarray(statistic, dtype=np.float64)
        return (np.interp(statistic, self._xs, self._conf), statistic < self.cut,
                (statistic - self._margin_cut) / self._scale)

    def record(self, n, n_flagged):
        """The decision's info for the whole collection."""
        return dict(self.info, n=int(n), n_flagged=int(n_flagged), fraction_flagged=n_flagged / n)


def _margin_scale(statistic):
    """As :func:`fiftyone_ncl.core.decision.margin`: 1.4826 x MAD, or the sd."""
    scale = 1.4826 * np.median(np.abs(statistic - np.median(statistic)))
    return scale if scale >= 1e-12 else (statistic.std() or 1.0)


# writing ----------------------------------------------------------------------------


def _columns(run_key, decider, sim, with_similarity=True):
    """The run's fields for pairs of statistic ``sim``, and their flags."""
    confidence, flags, margin = decider.apply(sim)

    def stored(values):  # float32 values, as a normal run stores them
        return np.asarray(values, dtype=np.float32).astype(np.float64).tolist()

    values = {"confidence": (stored(confidence), fof.FloatField), "noisy": (flags.tolist(), fof.BooleanField),
              "margin": (stored(margin), fof.FloatField)}
    if with_similarity:
        values["similarity"] = (stored(sim), fof.FloatField)
    columns = {field_name(run_key, s): (v, ftype, None, DESCRIPTIONS[s]) for s, (v, ftype) in values.items()}
    return columns, flags, confidence


class _BackgroundWriter(FieldWriter):
    """A :class:`~fiftyone_ncl.fo.writer.FieldWriter` that writes a chunk in
    a background thread while the caller reads and scores the next one. At
    most one chunk is in flight; it has landed before the next is sent,
    before the commit and before an undo."""

    def __init__(self, samples, journal):
        super().__init__(samples, journal)
        self._pool = concurrent.futures.ThreadPoolExecutor(1)
        self._inflight = None

    def set_many_later(self, ids, columns):
        """:meth:`set_many` in the background (after the chunk in flight)."""
        self.flush()
        self._inflight = self._pool.submit(self.set_many, ids, columns)

    def flush(self):
        """Waits for the chunk in flight; raises its error."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.result()

    def commit(self, **record):
        self.flush()
        super().commit(**record)

    def rollback(self):
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            concurrent.futures.wait([inflight])  # it lands before the undo, failed or not
        super().rollback()

    def __exit__(self, exc_type, exc, tb):
        try:
            return super().__exit__(exc_type, exc, tb)
        finally:
            self._pool.shutdown(wait=True)


def _write(samples, run_key, suffixes, results, decider, chunks, report, update_only=False):
    """Writes the fields chunk by chunk and records the run, journaled like
    :func:`fiftyone_ncl.fo.runs.write_run`: a failure (or Ctrl-C) undoes the
    write, a process that dies leaves the key marked incomplete.

    ``chunks`` yields ``(ids (m, 12) uint8, columns, flags, confidence)``;
    it may read the collection while the previous chunk is written. The
    counts, mean confidence and ``decider``'s decision go to ``results``."""
    dataset = samples._dataset
    fields = [field_name(run_key, s) for s in suffixes]
    old = dataset.get_brain_info(run_key).config if run_key in dataset.list_brain_runs() else None
    old_fields = [] if old is None or update_only else [field_name(run_key, s) for s in old.fields]
    results.config.fields = list(old.fields) if update_only else list(suffixes)
    if old is not None:
        # what the old run made beside its fields passes to the new one
        results.config.saved_views = list(getattr(old, "saved_views", None) or [])
        try:
            results.tagged = dict(getattr(dataset.load_brain_results(run_key), "tagged", None) or {})
        except Exception:  # pylint: disable=broad-except
            pass
    n = results.n_samples
    with run_lock(samples, run_key, "score_in_chunks") as journal:
        with _BackgroundWriter(samples, journal) as writer:
            old_doc = dataset._doc.brain_methods.get(run_key)
            journal.set(
                old_record=getattr(old_doc, "id", None),
                old_visualizations=[] if old is None or update_only else list((old.visualization_keys or {}).values()),
                old_checkpoint=None if old is None or update_only else owned_checkpoint(samples, run_key, old),
                checkpoint=None,
            )
            # every field the run touches is copied server-side (no sample
            # ids in memory) before the first chunk changes it
            writer.backup_many(fields + [f for f in old_fields if f not in fields])
            if old_fields and n != len(dataset):
                # an older run may have scored samples outside this view:
                # its values there go (restored on undo from the backup)
                _unset(dataset, [f for f in fields if f in old_fields])
            done, flagged, conf_sum = 0, 0, 0.0
            for ids, columns, flags, confidence in chunks:
                if done == 0:
                    for f, (_, ftype, _, description) in columns.items():
                        writer.declare(f, ftype, description=description)
                writer.set_many_later(_object_ids(ids), columns)
                done += len(ids)
                flagged += int(flags.sum())
                conf_sum += float(np.sum(confidence))
                report(done / n, "scored and wrote %d of %d pairs" % (done, n))
            writer.flush()
            if done != n:
                raise RuntimeError("the collection changed while it was scored (%d samples, %d expected); "
                                   "run again" % (done, n))
            for old_field in old_fields:
                if old_field not in fields:
                    writer.delete(old_field)
            results.flagged, results.mean_confidence = flagged, conf_sum / n
            results.info = dict(results.info, decision=to_jsonable(decider.record(n, flagged)))
            stage_record(samples, run_key, results, journal)
            writer.commit()
    dataset.reload()


def _unset(dataset, fields):
    """Removes ``fields`` from every sample, server-side."""
    if fields:
        coll = foo.get_db_conn()[dataset._sample_collection_name]
        coll.update_many({"$or": [{f: {"$exists": True}} for f in fields]}, {"$unset": {f: "" for f in fields}})


# the public functions -----------------------------------------------------------


@locks_run_key("score_in_chunks")
def score_in_chunks(
    samples,
    image_embeddings,
    text_embeddings,
    method="gmm",
    run_key="ncl",
    chunk_size=100_000,
    decision="probability",
    level=None,
    threshold=0.5,
    sample_size=200_000,
    caption_field=None,
    seed=0,
    overwrite=False,
    progress=True,
):
    """Scores every pair of two stored VectorFields chunk by chunk, in
    memory that does not grow with the collection, and writes the run's
    fields.

    For collections too large for :func:`fiftyone_ncl.compute_correspondence`
    to hold in memory, with embeddings of one joint space (e.g. CLIP image and
    text embeddings computed elsewhere). Only methods that need nothing but
    each pair's two vectors run here: ``"gmm"`` and ``"cosine"`` (the same
    ranking: the cosine of the pair; ``gmm`` also records its two-component
    mixture, as a normal run does). Methods that train, or compare a pair
    with the whole collection (``neighbors``), are refused: use
    :func:`~fiftyone_ncl.compute_correspondence`.

    How: (1) a seeded random sample of ``sample_size`` pairs (every pair of
    a smaller collection) is scored, with decoy pairs drawn inside each of
    its chunks (an image with the caption of another sampled pair; as many
    as a normal run draws, at most 100,000) as the null; the project's
    decision layer estimates the mismatch rate and makes the decision on
    the sample, as :func:`fiftyone_ncl.core.judge.judge` does on every pair
    in a normal run. (2) One pass over the collection reads ``chunk_size``
    samples at a time, scores them, applies the sample's decision
    (confidence interpolated along the sample's, flagged below the sample's
    cut) and writes the chunk while the next one is read. With at most
    ``sample_size`` pairs the decision is that of every pair (exact) and
    the vectors are read once. ``top_k`` and ``fraction`` flag about the
    asked number on a sampled collection (the cut is the sample's).

    Writes ``{key}_confidence`` (P(matched), float), ``{key}_noisy``
    (bool), ``{key}_similarity`` (cosine, float) and ``{key}_margin``
    (float), in chunks, journaled: an exception or Ctrl-C during the write
    leaves the dataset as it was, a killed process leaves the run key marked
    for :func:`~fiftyone_ncl.repair_run`. Bad inputs (missing fields, other
    dimensions, fields of two spaces) are refused before anything is read; a
    missing, all-zero or NaN vector when its chunk is met (in the sample
    phase, before any write, when the collection is no larger than
    ``sample_size``; else the write is undone).

    A streamed run has **no** caption suggestions (``{key}_suggestion``), no
    duplicate groups (``{key}_duplicate_group``), no linear CCA baseline in
    its health check (only the separation of pairs from decoys) and no
    per-pair arrays in its results (:class:`StreamedResults`):
    ``ncl.decide``, ``ncl.evaluate`` and ``ncl.confidence_figure`` refuse it
    with :class:`StreamedRunError`; :func:`decide_in_chunks` re-decides it
    from its fields. One pair per sample (no list-of-captions fields).

    Args:
        samples: a dataset or view (one pair per sample)
        image_embeddings: name of the VectorField of image embeddings
        text_embeddings: name of the VectorField of caption embeddings, in
            the same space and dimension
        method ("gmm"): ``"gmm"`` or ``"cosine"``
        run_key ("ncl"): key of the run and prefix of its fields
        chunk_size (100000): samples read (and written) at a time; the
            vectors of a chunk (chunk_size x 2 x dim float32) are most of
            the memory
        decision ("probability"): ``"probability"``, ``"fdr"``,
            ``"top_k"`` or ``"fraction"`` (see
            :func:`fiftyone_ncl.compute_correspondence`)
        level (None): the decision's level (``threshold`` for
            ``"probability"`` when None)
        threshold (0.5): the level of the ``"probability"`` decision
        sample_size (200000): pairs the decision is fitted on
        caption_field (None): the caption field the embeddings belong to,
            recorded on the run (not read)
        seed (0): seed of the sample, the decoys, the mixture and the
            bootstrap
        overwrite (False): replace an existing run with the same key
        progress (True): True for a progress bar, False for none, or a
            callable ``fn(fraction, label)``

    Returns:
        the run's :class:`StreamedResults`
    """
    _check_method(method)
    chunk_size = _check_chunk_size(chunk_size)
    sample_size = _check_chunk_size(sample_size, "sample_size")
    _check_decision(decision, level)
    threshold = _check_threshold(threshold)  # compute_correspondence's own check
    check_new_run_key(samples, run_key, overwrite, SUFFIXES)
    dim = _check_fields(samples, image_embeddings, text_embeddings)
    n = len(samples)
    if n < 2 or dim is None:
        raise ValueError("score_in_chunks needs at least 2 samples with both vectors; %r has %d samples%s"
                         % (samples._dataset.name, n, "" if dim is not None or n == 0 else " and none has both"))
    if decision == "top_k":
        check_level(decision, level, n)
    level = float(threshold) if decision == "probability" and level is None else level
    fields = [image_embeddings, text_embeddings]
    sampled = n > sample_size
    size = sample_size if sampled else n

    progress = PhasedProgress(progress, {"sample": 1 if sampled else 4, "decide": 0.2, "write": 6 if sampled else 4},
                               bar="score_in_chunks")
    try:
        if sampled:
            ids = _read_ids(samples, n)
            _check_distinct(ids)
            ids = ids[np.sort(np.random.default_rng(seed).choice(n, size, replace=False))]
            docs = _docs_of(samples, fields, ids)
        else:
            docs = _read_docs(samples, fields)
        ids, sim, null, chunks = _sample_pass(docs, fields, dim, size, chunk_size, min(max(n, MIN_DECOYS), MAX_DECOYS),
                                              seed, progress.phase("sample"))
        if not sampled:
            _check_distinct(ids)
        decider = _Decider(sim, null, decision, level, n, seed=seed)
        progress.done("decide", "decided")
        if method == "gmm":
            fit = fit_mixture(sim, higher_is_clean=True, seed=seed)
            calibration = fit.to_dict() if fit is not None else "none: similarities are constant"
        else:
            calibration = "none: (1 + cosine) / 2"
        health = assess(decider.rate, method=method)
        health["note"] = "streamed run: no linear CCA baseline was fitted"
        streaming = {"streaming": True, "chunk_size": chunk_size, "sample_size": size, "sampled": sampled,
                     "chunks": -(-n // chunk_size), "dim": dim}
        config = CorrespondenceConfig(
            caption_field=caption_field, method_name=method, method_config={"seed": seed}, threshold=float(threshold),
            decision=decision, level=decider.info["level"], caption_list=False,
            sources={"image": image_embeddings, "text": text_embeddings}, **streaming,
        )
        results = StreamedResults(
            samples, config, run_key, n_samples=n, sample_statistic=sim, null_statistic=null,
            info=to_jsonable({
                "calibration": calibration, "space": "given", "calibration_input": "similarity",
                "null": {"null": "decoys", "n_decoys": int(len(null)), "seed": int(seed),
                         "drawn": "within chunks of the sample" if sampled else "within chunks"},
                "health": health, "streaming": streaming,
            }),
        )
        
        def scored_chunks():
            if not sampled:  # every pair is in the sample: nothing to read again
                for start in range(0, n, chunk_size):
                    rows = slice(start, start + chunk_size)
                    yield (ids[rows],) + _columns(run_key, decider, sim[rows])
                return
            for chunk_ids, (img, txt) in _read_vectors(_read_docs(samples, fields), fields, ("image", "text"), dim,
                                                       chunk_size):
                chunk_sim = _cosine(img, txt)
                del img, txt  # before the next chunk is decoded
                yield (chunk_ids,) + _columns(run_key, decider, chunk_sim)

        _write(samples, run_key, SUFFIXES, results, decider, scored_chunks(), progress.phase("write"))
    finally:
        progress.close()
    logger.info("run %r (streamed, %d chunks): %d of %d pairs flagged (%s)", run_key, streaming["chunks"],
                results.flagged, n, decision)
    return samples._dataset.load_brain_results(run_key)


@locks_run_key("decide_in_chunks")
def decide_in_chunks(samples, run_key="ncl", decision="probability", level=None, chunk_size=100_000, progress=True):
    """Re-decides a streamed run (:func:`score_in_chunks`) without reading
    its vectors: the decision is fitted again on the sample and decoys the
    run stored, and applied to ``{key}_similarity`` chunk by chunk,
    rewriting ``{key}_confidence``, ``{key}_noisy`` and ``{key}_margin``
    (journaled). The streamed counterpart of :func:`fiftyone_ncl.decide`.

    Args:
        samples: the dataset (or a view of it) the run scored
        run_key ("ncl"): the run
        decision ("probability"): ``"probability"``, ``"fdr"``, ``"top_k"``
            or ``"fraction"``
        level (None): the decision's level (its default when None)
        chunk_size (100000): samples read and written at a time
        progress (True): as in :func:`score_in_chunks`

    Returns:
        the run's updated :class:`StreamedResults`
    """
    check_run(samples, run_key)
    results = samples._dataset.load_brain_results(run_key)
    if not isinstance(results, StreamedResults):
        raise ValueError("run %r was not scored in chunks; re-decide it with fiftyone_ncl.decide" % run_key)
    chunk_size = _check_chunk_size(chunk_size)
    _check_decision(decision, level)
    n = results.n_samples
    if decision == "top_k":
        check_level(decision, level, n)
    sim_field = field_name(run_key, "similarity")
    decider = _Decider(results.sample_statistic, results.null_statistic.astype(np.float64), decision, level, n,
                       seed=int(results.info.get("null", {}).get("seed", 0)))
    results.config.decision = decision
    results.config.level = decider.info["level"]
    progress = PhasedProgress(progress, {"write": 1}, bar="decide_in_chunks")

    def scored_chunks():
        docs = _read_docs(samples._dataset, [sim_field], [{"$match": {sim_field: {"$ne": None}}}])
        for batch in _chunks(docs, chunk_size):
            ids = np.frombuffer(b"".join(d["_id"].binary for d in batch), np.uint8).reshape(-1, 12)
            sim = np.array([d[sim_field] for d in batch], dtype=np.float64)
            yield (ids,) + _columns(run_key, decider, sim, with_similarity=False)

    try:
        suffixes = [s for s in SUFFIXES if s != "similarity"]
        _write(samples, run_key, suffixes, results, decider, scored_chunks(), progress.phase("write"),
               update_only=True)
    finally:
        progress.close()
    return samples._dataset.load_brain_results(run_key)


def _chunks(cursor, size):
    """Lists of at most ``size`` documents from the cursor."""
    while True:
        chunk = list(itertools.islice(cursor, size))
        if not chunk:
            return
        yield chunk
