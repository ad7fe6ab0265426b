"""Sharded scoring on real delegated workers against one process: wall time,
and whether the fields are the same.

``python -m fiftyone_ncl.bench.shards --samples 258 --shards 2``

The collection: coco-mini's real photos with their five human captions each
(a list caption field), cycled to ``--samples`` samples. The encoder: an
open_clip ViT-B-32 (``--encoder``; by default its architecture with seeded
random weights saved to a local file, since no pretrained weights can be
fetched offline: the compute per image and caption is the real model's, the
scores are not meaningful). The method: ``gmm`` on the open_clip space
(training-free), so the run is encoder work plus one global step.

Runs, one after the other on the same dataset:

1. one process with all the machine's cores (torch and BLAS threads = cores);
2. one process on one thread (the workers' setting: the reference the
   sharded fields must equal to the bit);
3. ``--shards`` shard operations on ``--workers`` ``fiftyone delegated
   launch`` processes, each started with ``OMP_NUM_THREADS``,
   ``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` set to
   ``--threads-per-worker`` (so N workers on N cores do not oversubscribe),
   the global step on that many threads too. The wall time runs from
   queueing to the run being written; the workers are started (and idle)
   before, as a standing service would be.

Writes ``results.json`` and ``README.md`` under ``--out``.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

BENCH_DIR = "__ncl_bench__"
READY = "Delegated operation service running"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def random_vit_file():
    """A ViT-B-32 state dict with seeded random weights, saved once under
    the FiftyOne dataset dir: an offline stand-in for pretrained weights
    that every process loads identically."""
    import fiftyone as fo
    import torch

    path = os.path.join(fo.config.default_dataset_dir, BENCH_DIR, "open_clip-ViT-B-32-seed0.pt")
    if not os.path.isfile(path):
        import open_clip

        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32")
        torch.save(model.state_dict(), path + ".tmp")
        os.replace(path + ".tmp", path)
    return path


def build_dataset(n, name=None):
    """coco-mini photos cycled to ``n`` samples, five captions each
    (a persistent dataset: the workers load it by name)."""
    import fiftyone as fo

    from fiftyone_ncl.datasets.coco_mini import load_coco_mini

    records = load_coco_mini()
    name = name or "ncl-bench-shards-%d" % n
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name, persistent=True)
    ds.add_samples([fo.Sample(filepath=records[i % len(records)].filepath,
                              captions=list(records[i % len(records)].captions)) for i in range(n)], progress=False)
    return ds


def _threads(n):
    """Sets torch's and the BLAS pools' threads to ``n`` (for the in-process runs)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    return threadpool_limits(limits=n)


def one_process(ds, run_key, threads, kwargs):
    """``(wall seconds, CPU seconds)`` of one ``compute_correspondence`` on
    ``threads`` threads."""
    import fiftyone_ncl as ncl

    limits = _threads(threads)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        ncl.compute_correspondence(ds, "captions", run_key=run_key, overwrite=True, progress=False, **kwargs)
        return time.perf_counter() - start, time.process_time() - cpu
    finally:
        limits.restore_original_limits()


def start_workers(n, threads, log_dir, timeout=180):
    """``n`` ``fiftyone delegated launch`` processes with ``threads``
    threads each, once they poll the queue."""
    fiftyone = os.path.join(os.path.dirname(sys.executable), "fiftyone")
    env = dict(os.environ, **{var: str(threads) for var in THREAD_VARS})
    procs = []
    for i in range(n):
        log = os.path.join(log_dir, "worker-%d.log" % i)
        with open(log, "w") as out:
            proc = subprocess.Popen([fiftyone, "delegated", "launch"], env=env, stdout=out, stderr=subprocess.STDOUT)
        proc.log = log
        procs.append(proc)
    deadline = time.monotonic() + timeout
    while not all(READY in open(p.log).read() for p in procs):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            stop_workers(procs)
            raise RuntimeError("workers did not start; see %s" % log_dir)
        time.sleep(0.5)
    return procs


def stop_workers(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def sharded(ds, run_key, shards, threads, kwargs, timeout):
    """Seconds from queueing to the written run, and the job's timeline."""
    import fiftyone_ncl as ncl
    from fiftyone_ncl.fo.shard_store import job_doc as _job_doc

    ds.reload()  # a worker wrote the previous round's fields: this process must see them to delete them
    if run_key in ds.list_brain_runs():
        ncl.delete_run(ds, run_key)
    start = time.perf_counter()
    job = ncl.queue_sharded_scoring(ds, "captions", shards=shards, run_key=run_key, global_threads=threads,
                                    **kwargs)
    job.wait(timeout=timeout, poll=0.5)
    wall = time.perf_counter() - start
    doc = _job_doc(job.id)
    timeline = {
        "shards_s": [(s["ended_at"] - s["started_at"]).total_seconds() for s in doc["shards"]],
        "shards_cpu_s": [s.get("cpu_s") for s in doc["shards"]],
        "global_step_cpu_s": doc["finalize"].get("cpu_s"),
        "items": [s["items"] for s in doc["shards"]],
        "global_step_s": (doc["finalize"]["ended_at"] - doc["finalize"]["started_at"]).total_seconds(),
        "workers": sorted({"%s" % s["worker"]["pid"] for s in doc["shards"]}),
    }
    job.delete()
    return wall, timeline


def _flat(value):
    """A field value as a flat list (vectors and per-caption lists too)."""
    if isinstance(value, np.ndarray):
        return value.ravel().tolist()
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in _flat(item)]
    return [value]


def compare(ds, key, reference):
    """Per field suffix: samples whose values differ (floats to the bit),
    and the largest difference of the numbers."""
    ds.reload()
    out = {}
    for suffix in ds.get_brain_info(reference).config.fields:
        ours, theirs = ds.values("%s_%s" % (key, suffix)), ds.values("%s_%s" % (reference, suffix))
        differ, worst = 0, 0.0
        for a, b in zip(ours, theirs):
            a, b = _flat(a), _flat(b)
            if a == b:
                continue
            differ += 1
            if len(a) == len(b):
                worst = max([worst] + [abs(x - y) for x, y in zip(a, b) if isinstance(x, float) and isinstance(y, float)])
        out[suffix] = {"samples_differing": differ, "max_abs_diff": worst}
    return out


def _warm_up(encoder, kwargs, cores, threads, procs, timeout):
    """Imports (torch, open_clip, the plugin, scikit-learn) done in this
    process and in every worker before anything is timed, with a copy of
    the weights under another name: the timed runs still load their model,
    as a first run would."""
    import shutil

    import fiftyone as fo

    kind, _, rest = encoder.partition(":")
    model, _, weights = rest.partition(":")
    warm = encoder
    if kind == "open_clip" and os.path.isfile(weights):
        copy = os.path.join(fo.config.default_dataset_dir, BENCH_DIR, "warm-up-" + os.path.basename(weights))
        if not os.path.isfile(copy):
            shutil.copyfile(weights, copy)
        warm = "open_clip:%s:%s" % (model, copy)
    tiny = build_dataset(2 * len(procs), name="ncl-bench-shards-warm-up")
    try:
        warm_kwargs = dict(kwargs, encoder=warm, batch_size=1)
        one_process(tiny, "warm", cores, warm_kwargs)
        sharded(tiny, "warm_sharded", len(procs), threads, warm_kwargs, timeout)
    finally:
        tiny.delete()


def run(args):
    """Builds the collection, times the runs, compares the fields."""
    import fiftyone as fo

    from fiftyone_ncl.bench.report import machine

    cores = os.cpu_count() or 1
    threads = args.threads_per_worker
    encoder = args.encoder or "open_clip:ViT-B-32:" + random_vit_file()
    kwargs = dict(encoder=encoder, method=args.method, batch_size=args.batch_size)
    log_dir = os.path.join(fo.config.default_dataset_dir, BENCH_DIR, "workers")
    os.makedirs(log_dir, exist_ok=True)
    ds = build_dataset(args.samples)
    result = {
        "command": "python -m fiftyone_ncl.bench.shards " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "load_average_at_start": list(os.getloadavg()),
        "samples": args.samples,
        "pairs": int(sum(len(c) for c in ds.values("captions"))),
        "encoder": encoder if args.encoder else "open_clip ViT-B-32, seeded random weights (local file)",
        "method": args.method,
        "batch_size": args.batch_size,
        "shards": args.shards,
        "workers": args.workers,
        "threads_per_worker": threads,
        "one_process_threads": cores,
        "worker_env": {var: str(threads) for var in THREAD_VARS},
        "rounds": [],
    }
    procs = start_workers(args.workers, threads, log_dir)
    try:
        _warm_up(encoder, kwargs, cores, threads, procs, args.timeout)
        for r in range(args.repeat):
            row = dict(zip(("one_process_s", "one_process_cpu_s"), one_process(ds, "one", cores, kwargs)))
            print("round %d: one process, %d threads: %.1f s" % (r + 1, cores, row["one_process_s"]), flush=True)
            row["one_thread_s"], row["one_thread_cpu_s"] = one_process(ds, "one_t%d" % threads, threads, kwargs)
            print("round %d: one process, %d thread(s): %.1f s" % (r + 1, threads, row["one_thread_s"]), flush=True)
            row["sharded_s"], row["timeline"] = sharded(ds, "sharded", args.shards, threads, kwargs, args.timeout)
            print("round %d: %d shards on %d workers: %.1f s" % (r + 1, args.shards, args.workers, row["sharded_s"]),
                  flush=True)
            result["rounds"].append(row)
        result["same_threads_fields"] = compare(ds, "sharded", "one_t%d" % threads)
        result["all_cores_fields"] = compare(ds, "sharded", "one")
    finally:
        stop_workers(procs)
        if not args.keep:
            ds.delete()
    best = {k: min(row[k] for row in result["rounds"]) for k in ("one_process_s", "one_thread_s", "sharded_s")}
    result["best"] = best
    result["ratio_to_one_process"] = best["sharded_s"] / min(best["one_process_s"], best["one_thread_s"])
    result["identical_to_same_threads"] = all(v["samples_differing"] == 0
                                              for v in result["same_threads_fields"].values())
    result["load_average_at_end"] = list(os.getloadavg())
    return result


def write(result, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(report(result))


def report(r):
    """The results as a markdown page."""
    best = r["best"]
    fastest_one = min(best["one_process_s"], best["one_thread_s"])
    rows = [
        "| run | threads | wall time (s), best of %d | vs the faster one-process run |" % len(r["rounds"]),
        "|---|---|---|---|",
        "| one process | %d | %.1f | %.2f |" % (r["one_process_threads"], best["one_process_s"],
                                              best["one_process_s"] / fastest_one),
        "| one process | %d | %.1f | %.2f |" % (r["threads_per_worker"], best["one_thread_s"],
                                              best["one_thread_s"] / fastest_one),
        "| %d shards on %d delegated workers | %d per worker | %.1f | **%.2f** |" % (
            r["shards"], r["workers"], r["threads_per_worker"], best["sharded_s"], r["ratio_to_one_process"]),
    ]
    rounds = ["| %d | %.1f (%.0f) | %.1f (%.0f) | %.1f | %s | %.1f (%.0f) | %.2f |" % (
        k + 1, row["one_process_s"], row["one_process_cpu_s"], row["one_thread_s"], row["one_thread_cpu_s"],
        row["sharded_s"], ", ".join("%.1f (%.0f)" % (w, c or 0) for w, c in zip(
            row["timeline"]["shards_s"], row["timeline"]["shards_cpu_s"])),
        row["timeline"]["global_step_s"], row["timeline"]["global_step_cpu_s"] or 0,
        row["sharded_s"] / min(row["one_process_s"], row["one_thread_s"]))
        for k, row in enumerate(r["rounds"])]
    t = r["rounds"][-1]["timeline"]
    same = r["same_threads_fields"]
    differing = {k: v for k, v in r["all_cores_fields"].items() if v["samples_differing"]}
    lines = [
        "# Sharded scoring on delegated workers",
        "",
        "```",
        r["command"],
        "```",
        "",
        "Machine: %s. Load average at the start %s, at the end %s: other jobs shared these cores, so the "
        "times are noisy; each row is the best of %d rounds (all rounds below)."
        % (r["machine"], "/".join("%.1f" % x for x in r["load_average_at_start"]),
           "/".join("%.1f" % x for x in r["load_average_at_end"]), len(r["rounds"])),
        "",
        "Collection: %d samples (coco-mini's photos, cycled), %d image-caption pairs (5 human captions per "
        "photo). Encoder: %s, batch size %s, on CPU. Method: %s (training-free, on the open_clip space)."
        % (r["samples"], r["pairs"], r["encoder"], r["batch_size"], r["method"]),
        "",
        "\n".join(rows),
        "",
        "Sharded: %d `fiftyone delegated launch` workers, started (and warmed up by a tiny job) before "
        "anything is timed, each with %s; the global step on %d thread(s). The wall time runs from queueing "
        "to the written run. In the last round the shards took %s s (%s) and the global step %.1f s."
        % (r["workers"], ", ".join("%s=%s" % kv for kv in r["worker_env"].items()), r["threads_per_worker"],
           ", ".join("%.1f" % s for s in t["shards_s"]),
           "; ".join(", ".join("%d %s" % (n, "images" if side == "image" else "captions") for side, n in i.items())
                     for i in t["items"]),
           t["global_step_s"]),
        "",
        "Every round; wall seconds, CPU seconds of the process in brackets (a shard's and the global "
        "step's: of the worker that ran it):",
        "",
        "| round | one process, all cores | one process, %d thread(s) | sharded | shards | global step | "
        "sharded / faster one process |" % r["threads_per_worker"],
        "|---|---|---|---|---|---|---|",
        "\n".join(rounds),
        "",
        _reading(r),
        "",
        "Fields: the sharded run's fields are %s those of one process on the workers' thread count (%s)."
        % ("identical, value for value, to" if r["identical_to_same_threads"] else "NOT identical to",
           ", ".join("%s %d" % (k, v["samples_differing"]) for k, v in same.items()) + " samples differing"),
        "Against one process on all %d cores: %s." % (
            r["one_process_threads"],
            "identical" if not differing else ", ".join(
                "%s differs on %d samples (at most %.2g)" % (k, v["samples_differing"], v["max_abs_diff"])
                for k, v in differing.items())
            + " (CPU kernels round differently with another thread count; sharding itself adds no difference)"),
        "",
    ]
    return "\n".join(lines)


def _reading(r):
    """What the times say: how the sharded path scales, and the bound on
    its ratio to one process that already uses every core."""
    best = r["best"]
    one_cpu = min(row["one_thread_cpu_s"] for row in r["rounds"])
    cores = r["one_process_threads"]
    bound = one_cpu / r["workers"] / best["one_process_s"]
    return (
        "Reading: %d workers finish in %.2f of the time one process takes on one worker's threads (%.1f s "
        "against %.1f s): the shards split the encoder work evenly and the global step adds %.1f s. Against one "
        "process on all %d cores the best times give %.2f. That process already keeps the cores busy (%.0f CPU "
        "seconds in %.1f s), so on this machine no split can do much better than about %.2f (one thread's %.0f "
        "CPU seconds over %d workers, against its %.1f s); the 0.6 target needs workers with cores (or GPUs) of their own, "
        "which one process cannot use: one worker per GPU."
        % (r["workers"], best["sharded_s"] / best["one_thread_s"], best["sharded_s"], best["one_thread_s"],
           min(row["timeline"]["global_step_s"] for row in r["rounds"]), cores, r["ratio_to_one_process"],
           min(row["one_process_cpu_s"] for row in r["rounds"]), best["one_process_s"], bound, one_cpu,
           r["workers"], best["one_process_s"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=258, help="samples (coco-mini photos cycled)")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="delegated workers (default: --shards)")
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--encoder", default=None, help="an encoder spec (default: a seeded random ViT-B-32 file)")
    parser.add_argument("--method", default="gmm")
    parser.add_argument("--batch-size", type=int, default=64, help="encoder batch size")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the three runs (the best is reported)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep", action="store_true", help="keep the dataset")
    parser.add_argument("--out", default=os.path.join("docs", "results", "shards"))
    args = parser.parse_args(argv)
    args.workers = args.workers or args.shards
    result = run(args)
    write(result, args.out)
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
