"""Speed and memory: scoring N pairs of 512-d precomputed embeddings stored
on a FiftyOne dataset, end to end (read fields, score, suggest, write
fields, record the run), against a bare ``set_values`` of the same fields in
the same run; and training time per epoch of each method's heads against a
plain InfoNCE head. Each measurement runs in a fresh child process so its
peak RSS is its own.

    fiftyone-ncl bench speed --sizes 100000 1000000
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

DIM = 512


def _peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _dataset_name(n):
    return "ncl-speed-%d" % n


def build(n, seed=0, chunk=100_000):
    """Creates (once) a persistent dataset of n samples with 512-d ``img`` and
    ``txt`` vectors (one joint space, 20% of captions swapped)."""
    import fiftyone as fo

    name = _dataset_name(n)
    if fo.dataset_exists(name):
        ds = fo.load_dataset(name)
        if len(ds) == n and ds.has_field("txt"):
            return {"built": False, "samples": n}
        ds.delete()
    t0 = time.time()
    ds = fo.Dataset(name, persistent=True)
    ds.add_sample_field("img", fo.VectorField)
    ds.add_sample_field("txt", fo.VectorField)
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z = rng.normal(size=(m, DIM)).astype(np.float32)
        img = z + 0.5 * rng.normal(size=(m, DIM)).astype(np.float32)
        txt = z + 0.5 * rng.normal(size=(m, DIM)).astype(np.float32)
        swap = rng.random(m) < 0.2
        txt[swap] = txt[swap][rng.permutation(int(swap.sum()))]
        ds.add_samples(
            [
                fo.Sample(filepath="/speed/%08d.jpg" % (start + i), caption="caption %d" % (start + i), img=img[i], txt=txt[i])
                for i in range(m)
            ],
            progress=False,
        )
    return {"built": True, "samples": n, "seconds": time.time() - t0}


def bare_write(n):
    """Times set_values of the fields a run writes, with values of the same
    types, keyed by id; then removes them."""
    import fiftyone as fo

    ds = fo.load_dataset(_dataset_name(n))
    ids = ds.values("id")
    rng = np.random.default_rng(0)
    conf = rng.random(n)
    noisy = conf < 0.2
    values = {
        "bare_confidence": conf.tolist(),
        "bare_noisy": noisy.tolist(),
        "bare_similarity": rng.random(n).tolist(),
        "bare_suggestion": ["caption %d" % i if f else None for i, f in enumerate(noisy)],
        "bare_suggestion_id": [ids[i] if f else None for i, f in enumerate(noisy)],
    }
    t0 = time.time()
    for field, vals in values.items():
        ds.set_values(field, dict(zip(ids, vals)), key_field="id")
    seconds = time.time() - t0
    ds.delete_sample_fields(list(values))
    return {"seconds": seconds, "peak_rss_gib": _peak_rss_gib()}


def score(n, method):
    """Times ``compute_correspondence`` end to end on the stored embeddings."""
    import fiftyone as fo

    import fiftyone_ncl as ncl

    ds = fo.load_dataset(_dataset_name(n))
    t0 = time.time()
    results = ncl.compute_correspondence(
        ds, "caption", method=method, run_key="speed_%s" % method, image_embeddings="img",
        text_embeddings="txt", overwrite=True, progress=False,
    )
    seconds = time.time() - t0
    out = {"seconds": seconds, "peak_rss_gib": _peak_rss_gib(), "flagged": results.n_noisy}
    ncl.delete_run(ds, "speed_%s" % method)
    return out


EPOCH_METHODS = {
    "infonce": ("cosine", {"train_heads": True, "epochs": 1}),
    "crcl": ("crcl", {"stages": (1,), "warmup_epochs": 0}),
    "disncl": ("disncl", {"epochs": 1, "warmup_epochs": 0}),
}


def parse_epoch_method(spec):
    """``"disncl"`` or ``"disncl:club_steps=1,critic_steps=0"`` (a variant with
    some options changed, for profiling) -> ``(method, options)``."""
    import ast

    name, _, extra = spec.partition(":")
    if name not in EPOCH_METHODS:
        raise ValueError("unknown epoch method %r; expected one of %s" % (name, sorted(EPOCH_METHODS)))
    method, options = EPOCH_METHODS[name]
    options = dict(options)
    for item in filter(None, extra.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ValueError("bad option %r in %r; expected key=python-literal" % (item, spec)) from None
    return method, options


def epoch(spec, n, seed=0):
    """Seconds of one training epoch of a method's heads on n x 512-d pairs
    (``spec`` as in :func:`parse_epoch_method`)."""
    import torch

    from fiftyone_ncl.core.data import PairData
    from fiftyone_ncl.core.registry import build_method
    from fiftyone_ncl.core.training import adam

    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, DIM)).astype(np.float32)
    img = z + 0.5 * rng.normal(size=(n, DIM)).astype(np.float32)
    txt = z + 0.5 * rng.normal(size=(n, DIM)).astype(np.float32)
    data = PairData(img, txt, np.arange(n))
    method, options = parse_epoch_method(spec)
    m = build_method(method, **options)
    # the first optimiser of a process imports torch._dynamo (~2 s): a
    # one-time cost, not part of any method's epoch
    adam([torch.zeros(1, requires_grad=True)], 1e-3)
    t0 = time.time()
    m.fit(data, progress=False)
    return {"seconds": time.time() - t0, "peak_rss_gib": _peak_rss_gib(), "threads": torch.get_num_threads()}


def _child(task, *args):
    """Runs one measurement in a fresh interpreter; returns its JSON."""
    cmd = [sys.executable, "-m", "fiftyone_ncl.cli", "bench", "speed", "--child", task] + [str(a) for a in args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def add_arguments(parser):
    """The options of ``fiftyone-ncl bench speed``."""
    parser.add_argument("--sizes", nargs="*", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--methods", nargs="*", default=["gmm"], help="scoring methods to time")
    parser.add_argument("--epoch-pairs", type=int, default=100_000)
    parser.add_argument("--epoch-methods", nargs="*", default=["infonce", "crcl", "disncl"],
                        help="methods to time an epoch of; METHOD:key=value,... times a variant")
    parser.add_argument("--out", default=os.path.join("bench-results", "speed"))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)


def run(args, parser):
    """``fiftyone-ncl bench speed``."""
    for spec in args.epoch_methods:
        try:
            parse_epoch_method(spec)
        except ValueError as e:
            parser.error(str(e))

    if args.child:
        task, *rest = args.child
        fn = {"build": build, "bare": bare_write, "score": score, "epoch": epoch}[task]
        rest = [int(r) if r.isdigit() else r for r in rest]
        print(json.dumps(fn(*rest)))
        return 0

    from fiftyone_ncl.bench.report import machine

    os.makedirs(args.out, exist_ok=True)
    command = "fiftyone-ncl bench speed " + " ".join(args.argv)
    results = {"command": command, "machine": machine(), "scoring": [], "epochs": []}
    for n in args.sizes:
        built = _child("build", n)
        print("dataset of %d samples ready (%s)" % (n, "built in %.0f s" % built["seconds"] if built["built"] else "cached"))
        bare = _child("bare", n)
        embedding_gib = 2 * n * DIM * 4 / 1024**3
        for method in args.methods:
            run = _child("score", n, method)
            row = {
                "pairs": n, "method": method, "bare_write_s": bare["seconds"], "score_s": run["seconds"],
                "ratio": run["seconds"] / bare["seconds"], "peak_rss_gib": run["peak_rss_gib"],
                "embedding_gib": embedding_gib, "memory_budget_gib": 2 * embedding_gib + 1,
            }
            results["scoring"].append(row)
            print("%8d pairs %-6s score %.1f s, bare set_values %.1f s, ratio %.2f (target <= 1.5), peak RSS %.2f GiB (budget %.2f)"
                  % (n, method, row["score_s"], row["bare_write_s"], row["ratio"], row["peak_rss_gib"], row["memory_budget_gib"]))
    base = None
    for method in args.epoch_methods:
        run = _child("epoch", method, args.epoch_pairs)
        base = run["seconds"] if method == "infonce" else base
        row = {"method": method, "pairs": args.epoch_pairs, "epoch_s": run["seconds"], "peak_rss_gib": run["peak_rss_gib"]}
        if base:
            row["vs_infonce"] = run["seconds"] / base
        results["epochs"].append(row)
        print("epoch %-8s %d pairs: %.1f s%s" % (method, args.epoch_pairs, run["seconds"],
                                                 " (%.2fx InfoNCE)" % row["vs_infonce"] if "vs_infonce" in row else ""))
    with open(os.path.join(args.out, "speed.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0
