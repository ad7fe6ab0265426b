"""Streaming at scale: scoring millions of stored vector pairs in chunks
(:func:`fiftyone_ncl.score_in_chunks`) against a bare FiftyOne ``set_values``.

``python -m fiftyone_ncl.bench.streaming --pairs 3000000 --dim 512 --chunk-size 100000``

1. Builds, once, a persistent dataset ``ncl-streaming-<pairs>x<dim>`` of that
   many samples with two float32 VectorFields ``img`` and ``txt`` in one
   joint space (``z + noise`` each side) of which ``--swap`` (10 %) of the
   captions are swapped among themselves (``swapped``: True there). Samples
   are inserted straight into the sample collection in chunks, as FiftyOne
   stores them (the vectors of only one chunk are ever in memory); a later
   call with the same size reuses it.
2. Measures, each in a fresh child process so its peak RSS
   (the largest of ``ru_maxrss``, ``VmHWM`` and the RSS sampled every
   0.1 s) is its own:

   * ``floor``: importing FiftyOne and the package and loading the dataset;
   * ``bare``: one ``dataset.set_values(field, values)`` of a float field
     over every sample (one call, values in dataset order: the reference the
     issue names), field deleted afterwards (not timed);
   * ``stream``: ``score_in_chunks(dataset, "img", "txt", method="gmm")``
     end to end (read both vector fields chunk by chunk, score, decoys,
     decide, write ``_confidence``, ``_noisy``, ``_similarity``,
     ``_margin`` journaled, record the run); afterwards (not timed) its AUROC
     against ``swapped`` and the run's estimate are read, and the run deleted.

Prints a markdown table and writes ``<out>/streaming-<pairs>x<dim>.json``.
``--delete`` removes the dataset at the end (else it stays for reuse).
"""
import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np

RUN_KEY = "bench_stream"
BARE_FIELD = "bench_bare"


def dataset_name(pairs, dim):
    return "ncl-streaming-%dx%d" % (pairs, dim)


def _peak_rss_gib():
    """The process's peak RSS so far: the largest of ``ru_maxrss``, the
    kernel's ``VmHWM`` and what :class:`_RssSampler` saw."""
    hwm = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024**2
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, hwm, _RssSampler.peak)


class _RssSampler(threading.Thread):
    """Samples this process's RSS every 0.1 s (the kernel's high-water mark
    can lag behind memory that threads allocate and free)."""

    peak = 0.0

    def __init__(self):
        super().__init__(daemon=True)
        self.start()

    def run(self):
        import psutil

        proc = psutil.Process()
        while True:
            _RssSampler.peak = max(_RssSampler.peak, proc.memory_info().rss / 1024**3)
            time.sleep(0.1)


def build(pairs, dim, swap=0.1, seed=0, chunk=20_000):
    """Creates (or reuses, by name) the benchmark dataset; returns what was done."""
    import fiftyone as fo
    import fiftyone.core.fields as fof
    from bson import ObjectId

    name = dataset_name(pairs, dim)
    if fo.dataset_exists(name):
        ds = fo.load_dataset(name)
        if len(ds) == pairs and ds.has_field("txt") and ds.has_field("swapped"):
            return {"built": False, "samples": pairs}
        ds.delete()
    t0 = time.perf_counter()
    ds = fo.Dataset(name, persistent=True)
    for field, ftype in (("caption", fof.StringField), ("img", fof.VectorField), ("txt", fof.VectorField),
                         ("swapped", fof.BooleanField)):
        ds.add_sample_field(field, ftype)
    coll = ds._sample_collection
    to_mongo = fof.VectorField().to_mongo
    rng = np.random.default_rng(seed)
    for start in range(0, pairs, chunk):
        m = min(chunk, pairs - start)
        z = rng.standard_normal((m, dim), dtype=np.float32)
        img = z + rng.standard_normal((m, dim), dtype=np.float32)
        txt = z + rng.standard_normal((m, dim), dtype=np.float32)
        del z
        swapped = np.zeros(m, dtype=bool)
        rows = np.flatnonzero(rng.random(m) < swap)
        if len(rows) > 1:
            txt[rows] = txt[np.roll(rows, 1)]  # a cycle: every chosen caption moves
            swapped[rows] = True
        now = datetime.datetime.utcnow()
        coll.insert_many([
            {"_id": ObjectId(), "filepath": "/nonexistent/%09d.jpg" % (start + i), "tags": [], "metadata": None,
             "created_at": now, "last_modified_at": now, "_media_type": "image", "_rand": float(rng.random()),
             "_dataset_id": ds._doc.id, "caption": "caption %d" % (start + i),
             "img": to_mongo(img[i]), "txt": to_mongo(txt[i]), "swapped": bool(swapped[i])}
            for i in range(m)
        ], ordered=False)
    seconds = time.perf_counter() - t0
    return {"built": True, "samples": pairs, "seconds": seconds, "samples_per_s": pairs / seconds}


def _load(pairs, dim):
    import fiftyone as fo

    return fo.load_dataset(dataset_name(pairs, dim))


def floor(pairs, dim):
    """Peak RSS of the imports and the loaded dataset alone."""
    import fiftyone_ncl.fo.streaming  # noqa: F401

    ds = _load(pairs, dim)
    return {"samples": len(ds), "seconds": 0.0, "peak_rss_gib": _peak_rss_gib()}


def bare(pairs, dim, seed=0):
    """One ``set_values`` of a float field over every sample."""
    ds = _load(pairs, dim)
    values = np.random.default_rng(seed).random(len(ds)).tolist()
    t0 = time.perf_counter()
    ds.set_values(BARE_FIELD, values)
    seconds = time.perf_counter() - t0
    peak = _peak_rss_gib()
    ds.delete_sample_field(BARE_FIELD)
    return {"seconds": seconds, "peak_rss_gib": peak}


def stream(pairs, dim, chunk_size, method="gmm"):
    """``score_in_chunks`` end to end; then (untimed) its AUROC and estimate."""
    import fiftyone_ncl as ncl
    from fiftyone_ncl.core.metrics import detection_metrics

    ds = _load(pairs, dim)
    t0 = time.perf_counter()
    results = ncl.score_in_chunks(ds, "img", "txt", method=method, run_key=RUN_KEY, chunk_size=chunk_size,
                                  overwrite=True, progress=False)
    seconds = time.perf_counter() - t0
    peak = _peak_rss_gib()
    sim, truth = ds.values(["%s_similarity" % RUN_KEY, "swapped"])
    metrics = detection_metrics(np.asarray(truth, dtype=bool), np.asarray(sim, dtype=np.float64))
    rate = results.mismatch_rate
    out = {
        "seconds": seconds, "peak_rss_gib": peak, "flagged": results.n_noisy, "auroc": metrics.get("auroc"),
        "true_rate": float(np.mean(truth)), "estimated_rate": rate.get("rate"),
        "estimated_interval": [rate.get("low"), rate.get("high")],
    }
    ncl.delete_run(ds, RUN_KEY)
    return out


_CHILDREN = {"build": build, "floor": floor, "bare": bare, "stream": stream}


def _connect():
    """Connects through the package (its one-database check and start lock)."""
    import fiftyone_ncl.fo  # noqa: F401
    import fiftyone as fo

    fo.list_datasets()


def _child(args):
    _RssSampler()
    _connect()
    kwargs = {"pairs": args.pairs, "dim": args.dim}
    if args.child == "build":
        kwargs.update(swap=args.swap, seed=args.seed)
    if args.child == "stream":
        kwargs.update(chunk_size=args.chunk_size, method=args.method)
    out = _CHILDREN[args.child](**kwargs)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["process_cpu_s"] = usage.ru_utime + usage.ru_stime  # this process only (not the database's)
    print("RESULT " + json.dumps(out))


def _run_child(step, args):
    cmd = [sys.executable, "-m", "fiftyone_ncl.bench.streaming", "--child", step, "--pairs", str(args.pairs),
           "--dim", str(args.dim), "--chunk-size", str(args.chunk_size), "--swap", str(args.swap),
           "--seed", str(args.seed), "--method", args.method]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError("step %s failed (exit %d):\n%s" % (step, proc.returncode, proc.stderr[-4000:]))
    out = json.loads(lines[-1][len("RESULT "):])
    out["step"], out["process_s"] = step, time.perf_counter() - t0
    out["load_avg_1min_after"] = os.getloadavg()[0]
    print("  %s: %s" % (step, json.dumps(out)), file=sys.stderr, flush=True)
    return out


def table(report):
    """The markdown table of a report."""
    bare_s = [r["seconds"] for r in report["runs"] if r["step"] == "bare"]
    ref = min(bare_s) if bare_s else None
    rows = ["| pairs | dim | step | wall s | peak RSS GiB | ratio to bare write | load (1 min) after |",
            "|---|---|---|---|---|---|---|"]
    names = {"floor": "imports + load dataset", "bare": "bare `set_values` (1 float field)",
             "stream": "`score_in_chunks` (%s, chunk %d)" % (report["method"], report["chunk_size"])}
    for r in report["runs"]:
        ratio = "%.2fx" % (r["seconds"] / ref) if ref and r["step"] != "floor" else ""
        rows.append("| {:,} | {} | {} | {:.1f} | {:.2f} | {} | {:.1f} |".format(
            report["pairs"], report["dim"], names[r["step"]], r["seconds"], r["peak_rss_gib"], ratio,
            r.get("load_avg_1min_after", float("nan"))))
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=100_000)
    parser.add_argument("--method", default="gmm", choices=("gmm", "cosine"))
    parser.add_argument("--swap", type=float, default=0.1, help="share of captions swapped (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="bare / stream measured this many times, alternately")
    parser.add_argument("--out", default=os.path.join("docs", "results", "streaming"))
    parser.add_argument("--delete", action="store_true", help="delete the dataset at the end")
    parser.add_argument("--child", choices=sorted(_CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    _connect()  # held open: the database keeps running (and its cache warm) between the steps
    report = {"pairs": args.pairs, "dim": args.dim, "chunk_size": args.chunk_size, "method": args.method,
              "swap": args.swap, "dataset": dataset_name(args.pairs, args.dim), "cpus": os.cpu_count(),
              "load_avg_start": os.getloadavg(), "started": datetime.datetime.now().isoformat(timespec="seconds")}
    report["build"] = _run_child("build", args)
    runs = [_run_child("floor", args)]
    for _ in range(args.repeats):
        runs += [_run_child("bare", args), _run_child("stream", args)]
    report["runs"] = runs
    report["load_avg_end"] = os.getloadavg()
    if args.delete:
        import fiftyone as fo

        fo.delete_dataset(dataset_name(args.pairs, args.dim))
        report["dataset_deleted"] = True
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "streaming-%dx%d.json" % (args.pairs, args.dim))
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(table(report))
    print("\n(written %s)" % path)
    return report


if __name__ == "__main__":
    main()
