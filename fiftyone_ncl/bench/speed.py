"""Speed and memory.

* Scoring N pairs of 512-d precomputed embeddings stored on a FiftyOne
  dataset, end to end (read fields, score, suggest, write fields, record the
  run), against a bare ``set_values`` of the same fields (``--sizes``; needs
  FiftyOne).
* Training time per epoch of each method's heads on N x 512-d pairs, per
  device (``--epoch-pairs``, ``--epoch-methods``, ``--device``), with the
  share of wall time the GPU was busy on CUDA (NVML samples, and with
  ``--busy`` torch's profiler: summed kernel time over wall time).
* Embedding throughput: images/s of an open_clip image tower (random
  weights) over JPEG files decoded by DataLoader workers (``--embed-images``).
* AMP parity: detection AUROC of bf16 autocast against float32 training on
  the same seed (``--amp-parity``; CUDA only).

Each measurement runs in a fresh child process so its peak RSS is its own
(``--one-process`` times every epoch method of a size in one child: the
data is generated once).

    fiftyone-ncl bench speed --sizes 100000 1000000
    fiftyone-ncl bench speed --sizes --epoch-pairs 100000 1000000 --device cuda --busy
    fiftyone-ncl bench speed --sizes --epoch-methods --embed-images 2000 --amp-parity
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import threading
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


def _epoch_data(n, seed=0, dim=DIM):
    """n pairs of dim-d embeddings (one joint space plus noise), float32."""
    from fiftyone_ncl.core.data import PairData

    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, dim), dtype=np.float32)
    img = rng.standard_normal((n, dim), dtype=np.float32)
    img *= 0.5
    img += z
    txt = rng.standard_normal((n, dim), dtype=np.float32)
    txt *= 0.5
    txt += z
    del z
    return PairData(img, txt, np.arange(n))


class _BusySampler:
    """Samples the GPU's utilisation (NVML: the share of each sample period
    in which a kernel ran) every ``period`` seconds in a thread."""

    def __init__(self, device, period=0.05):
        self.device = device
        self.period = period
        self.samples = []
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        import torch

        try:
            torch.cuda.utilization(self.device)
        except Exception:  # no pynvml / NVML: nothing to sample
            return self

        def run():
            while not self._stop.wait(self.period):
                try:
                    self.samples.append(torch.cuda.utilization(self.device))
                except Exception:  # pragma: no cover
                    return

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *args):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mean(self):
        # the first samples may still cover the time before the fit
        samples = self.samples[2:] if len(self.samples) > 6 else self.samples
        return float(np.mean(samples)) / 100.0 if samples else None


def _warm_up(device):
    """One-time costs kept out of every epoch: torch._dynamo's import (paid by
    the first optimiser, ~2 s), the CUDA context and cuBLAS handles."""
    import torch

    from fiftyone_ncl.core.training import adam

    adam([torch.zeros(1, requires_grad=True)], 1e-3)
    if device.type == "cuda":
        a = torch.randn(256, 256, device=device)
        (a @ a).sum().item()
        adam([torch.zeros(1, device=device, requires_grad=True)], 1e-3, capturable=True)
        torch.cuda.synchronize()


def _fit_timed(spec, data, device, amp=None, busy=False, graphs=None):
    """Fits one epoch method; returns its row (seconds, pairs/s, GPU busy share...)."""
    import torch

    from fiftyone_ncl.core.registry import build_method

    method, options = parse_epoch_method(spec)
    options = dict(options, device=str(device))
    if amp is not None:
        options["amp"] = amp
    if graphs is not None:
        options["cuda_graphs"] = graphs
    m = build_method(method, **options)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    sampler = _BusySampler(device) if cuda else None
    if sampler is not None:
        sampler.__enter__()
    t0 = time.time()
    m.fit(data, progress=False)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.time() - t0
    if sampler is not None:
        sampler.__exit__()
    row = {
        "method": spec, "pairs": data.n_pairs, "device": str(device), "seconds": seconds,
        "pairs_per_s": data.n_pairs / seconds, "peak_rss_gib": _peak_rss_gib(), "threads": torch.get_num_threads(),
    }
    graphs_info = next((h["cuda_graphs"] for h in reversed(m.history) if "cuda_graphs" in h), None)
    if graphs_info:
        row["cuda_graphs"] = graphs_info
    if cuda:
        row["gpu_busy_nvml"] = sampler.mean()
        row["gpu_peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 1024**3
        row["amp"] = "bf16" if (amp is None or amp) else "fp32"
        if busy:
            row.update(_profiled_busy(spec, data, device, amp, graphs))
    return row


def _profiled_busy(spec, data, device, amp, graphs):
    """The fit again under torch's profiler: summed GPU kernel time over the
    profiled wall time (kernels of one stream do not overlap, so the sum is
    the time the GPU was busy); the profiler's own host overhead makes this
    a lower bound."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from fiftyone_ncl.core.registry import build_method

    method, options = parse_epoch_method(spec)
    options = dict(options, device=str(device))
    if amp is not None:
        options["amp"] = amp
    if graphs is not None:
        options["cuda_graphs"] = graphs
    m = build_method(method, **options)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.time()
        m.fit(data, progress=False)
        torch.cuda.synchronize()
        wall = time.time() - t0
    kernel_us = 0.0
    for evt in prof.key_averages():
        if getattr(evt, "device_type", None) is not None and "CUDA" in str(evt.device_type):
            kernel_us += getattr(evt, "self_device_time_total", 0.0) or 0.0
    if kernel_us == 0.0:  # older attribute names
        kernel_us = sum(getattr(e, "self_cuda_time_total", 0.0) or 0.0 for e in prof.key_averages())
    top = sorted(prof.key_averages(), key=lambda e: -(getattr(e, "self_cpu_time_total", 0.0) or 0.0))[:8]
    graphs_info = next((h["cuda_graphs"] for h in reversed(m.history) if "cuda_graphs" in h), None)
    return {
        "profiled_cuda_graphs": graphs_info,
        "profiled_wall_s": wall,
        "gpu_kernel_s": kernel_us / 1e6,
        "gpu_busy_profiler": kernel_us / 1e6 / wall if wall else None,
        "top_host_ops": [[e.key, round((e.self_cpu_time_total or 0.0) / 1e6, 3), e.count] for e in top],
    }


def epoch(spec, n, seed=0, device="auto", amp="auto", busy=0, graphs="auto"):
    """One training epoch of a method's heads on n x 512-d pairs
    (``spec`` as in :func:`parse_epoch_method`); see :func:`_fit_timed`."""
    return epochs([spec], n, seed, device, amp, busy, graphs)[0]


def epochs(specs, n, seed=0, device="auto", amp="auto", busy=0, graphs="auto"):
    """One epoch of each of several methods on one generated data set."""
    from fiftyone_ncl.core.training import resolve_device

    device = resolve_device(device)
    amp = {"auto": None, "on": True, "off": False}[amp]
    graphs = {"auto": None, "on": True, "off": False}[graphs]
    _warm_up(device)
    data = _epoch_data(n, seed)
    return [_fit_timed(spec, data, device, amp=amp, busy=bool(int(busy)), graphs=graphs) for spec in specs]


def embed(n, batch_size=256, workers=-1, device="auto", model="ViT-B-32", size=256):
    """Images/s of an open_clip image tower (random weights) over ``n`` JPEG
    files written to a temporary folder (decoded and preprocessed by
    DataLoader workers, batched autocast inference)."""
    import shutil
    import tempfile

    import torch

    try:
        import open_clip  # noqa: F401  pylint: disable=unused-import
    except ImportError:
        return {"skipped": "open_clip is not installed"}
    from PIL import Image

    from fiftyone_ncl.encoders.openclip import OpenClipEncoder

    folder = tempfile.mkdtemp(prefix="ncl-speed-embed-")
    try:
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, size=(64, size, size, 3), dtype=np.uint8)
        paths = []
        for i in range(int(n)):
            path = os.path.join(folder, "%06d.jpg" % i)
            Image.fromarray(np.roll(base[i % 64], i, axis=1)).save(path, quality=90)
            paths.append(path)
        encoder = OpenClipEncoder(model, pretrained=None, device=device, batch_size=int(batch_size),
                                  num_workers=None if int(workers) < 0 else int(workers))
        encoder.embed_images(paths[: min(len(paths), 2 * int(batch_size))], progress=False)  # load + warm up
        dev = encoder._device
        if dev.type == "cuda":
            torch.cuda.synchronize()
        sampler = _BusySampler(dev) if dev.type == "cuda" else None
        if sampler is not None:
            sampler.__enter__()
        t0 = time.time()
        out = encoder.embed_images(paths, progress=False)
        seconds = time.time() - t0
        if sampler is not None:
            sampler.__exit__()
        return {
            "images": int(n), "model": model, "device": str(dev), "batch_size": int(batch_size),
            "workers": encoder.last_num_workers, "seconds": seconds, "images_per_s": int(n) / seconds,
            "dim": int(out.shape[1]), "gpu_busy_nvml": sampler.mean() if sampler is not None else None,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def amp_parity(n=5000, methods="cosine,crcl,disncl", seed=0, device="auto"):
    """Detection AUROC with bf16 autocast and in float32, same data and seed,
    on the synthetic factor problem (40 % permuted captions)."""
    import torch

    from fiftyone_ncl.core.metrics import detection_metrics
    from fiftyone_ncl.core.registry import build_method
    from fiftyone_ncl.core.training import resolve_device
    from fiftyone_ncl.datasets.synthetic import make_synthetic

    device = resolve_device(device)
    if device.type != "cuda":
        return {"skipped": "AMP runs on CUDA only (CPU training is float32)"}
    data, truth = make_synthetic(n_images=int(n), exclusive_std=1.0, noise_rate=0.4, seed=seed)
    common = dict(embed_dim=32, hidden_dim=512, device=str(device), seed=seed)
    settings = {
        "cosine": dict(train_heads=True, epochs=10),
        "crcl": dict(stages=(3, 3), warmup_epochs=2),
        "disncl": dict(epochs=10, warmup_epochs=3, mi_diagnostics=False),
    }
    rows = []
    for name in methods.split(","):
        row = {"method": name}
        for label, amp in (("fp32", False), ("bf16", True)):
            t0 = time.time()
            m = build_method(name, amp=amp, **common, **settings[name]).fit(data, progress=False)
            scores = m.score(data, progress=False)
            row[label + "_auroc"] = detection_metrics(truth.noisy, scores.confidence)["auroc"]
            row[label + "_s"] = time.time() - t0
        row["diff"] = row["bf16_auroc"] - row["fp32_auroc"]
        rows.append(row)
        torch.cuda.empty_cache()
    return {"pairs": int(n), "bf16_supported": torch.cuda.is_bf16_supported(), "rows": rows}


def _child(task, *args):
    """Runs one measurement in a fresh interpreter; returns its JSON."""
    cmd = [sys.executable, "-m", "fiftyone_ncl.cli", "bench", "speed", "--child", task] + [str(a) for a in args]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode:
        tail = (out.stderr or out.stdout).strip().splitlines()[-12:]
        return {"error": "child %s failed (exit %d): %s" % (task, out.returncode, " | ".join(tail))}
    return json.loads(out.stdout.strip().splitlines()[-1])


def add_arguments(parser):
    """The options of ``fiftyone-ncl bench speed``."""
    parser.add_argument("--sizes", nargs="*", type=int, default=[100_000, 1_000_000],
                        help="scoring sizes (FiftyOne datasets); give none to skip scoring")
    parser.add_argument("--methods", nargs="*", default=["gmm"], help="scoring methods to time")
    parser.add_argument("--epoch-pairs", nargs="+", type=int, default=[100_000])
    parser.add_argument("--epoch-methods", nargs="*", default=["infonce", "crcl", "disncl"],
                        help="methods to time an epoch of; METHOD:key=value,... times a variant")
    parser.add_argument("--device", default="auto", help="training device: auto, cpu, cuda, cuda:N")
    parser.add_argument("--amp", choices=["auto", "on", "off"], default="auto",
                        help="mixed precision of the epoch timings (auto: bf16 on CUDA)")
    parser.add_argument("--cuda-graphs", choices=["auto", "on", "off"], default="auto",
                        help="capture training steps as CUDA graphs (auto: on for CUDA)")
    parser.add_argument("--busy", action="store_true",
                        help="on CUDA, also fit each method under torch's profiler for the GPU busy share "
                             "(sizes <= 200k)")
    parser.add_argument("--one-process", action="store_true",
                        help="time every epoch method of a size in one child (data generated once)")
    parser.add_argument("--embed-images", type=int, default=0, help="images for the embedding throughput (0: skip)")
    parser.add_argument("--embed-batch", type=int, default=256)
    parser.add_argument("--embed-workers", type=int, default=-1, help="DataLoader workers (-1: the encoder's default)")
    parser.add_argument("--embed-model", default="ViT-B-32")
    parser.add_argument("--amp-parity", action="store_true", help="bf16 vs fp32 detection AUROC (CUDA)")
    parser.add_argument("--parity-pairs", type=int, default=5000)
    parser.add_argument("--parity-methods", default="cosine,crcl,disncl")
    parser.add_argument("--out", default=os.path.join("bench-results", "speed"))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)


def _print_epoch(row, base):
    if "error" in row:
        print("epoch %-8s %s" % (row.get("method", "?"), row["error"]))
        return
    extra = []
    if base:
        extra.append("%.2fx InfoNCE" % (row["seconds"] / base))
    if row.get("gpu_busy_nvml") is not None:
        extra.append("GPU busy %.0f%% (NVML)" % (100 * row["gpu_busy_nvml"]))
    if row.get("gpu_busy_profiler") is not None:
        extra.append("%.0f%% (profiler)" % (100 * row["gpu_busy_profiler"]))
    graphs = row.get("cuda_graphs")
    if graphs:
        extra.append("CUDA graphs: %d replays" % graphs["replays"] if not graphs.get("failure")
                     else "CUDA graphs FAILED: %s" % graphs["failure"][:120])
    print("epoch %-8s %8d pairs on %-6s %7.2f s  %9.0f pairs/s%s" % (
        row["method"], row["pairs"], row["device"], row["seconds"], row["pairs_per_s"],
        "  (" + ", ".join(extra) + ")" if extra else ""))


def run(args, parser):
    """``fiftyone-ncl bench speed``."""
    for spec in args.epoch_methods:
        try:
            parse_epoch_method(spec)
        except ValueError as e:
            parser.error(str(e))

    if args.child:
        task, *rest = args.child
        if task == "epochs":
            specs, rest = rest[0].split("+"), rest[1:]
            rest = [int(r) if r.isdigit() else r for r in rest]
            print(json.dumps(epochs(specs, *rest)))
            return 0
        fn = {"build": build, "bare": bare_write, "score": score, "epoch": epoch, "embed": embed,
              "parity": amp_parity}[task]
        rest = [int(r) if r.lstrip("-").isdigit() else r for r in rest]
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
    common = [args.device, args.amp]
    for n in args.epoch_pairs if args.epoch_methods else []:
        busy = int(args.busy and n <= 200_000)
        if args.one_process:
            rows = _child("epochs", "+".join(args.epoch_methods), n, 0, *common, busy, args.cuda_graphs)
            rows = rows if isinstance(rows, list) else [dict(rows, method="+".join(args.epoch_methods))]
        else:
            rows = [dict(_child("epoch", spec, n, 0, *common, busy, args.cuda_graphs), method=spec)
                    for spec in args.epoch_methods]
        base = next((r["seconds"] for r in rows if r.get("method") == "infonce" and "seconds" in r), None)
        for row in rows:
            if base and "seconds" in row:
                row["vs_infonce"] = row["seconds"] / base
            results["epochs"].append(row)
            _print_epoch(row, base)
    if args.embed_images:
        row = _child("embed", args.embed_images, args.embed_batch, args.embed_workers, args.device, args.embed_model)
        results["embedding"] = row
        if "images_per_s" in row:
            print("embedding open_clip %s (random weights) on %s: %d images in %.1f s = %.0f images/s "
                  "(batch %d, %d workers%s)" % (
                      row["model"], row["device"], row["images"], row["seconds"], row["images_per_s"],
                      row["batch_size"], row["workers"],
                      ", GPU busy %.0f%%" % (100 * row["gpu_busy_nvml"]) if row.get("gpu_busy_nvml") is not None else ""))
        else:
            print("embedding: %s" % (row.get("skipped") or row.get("error")))
    if args.amp_parity:
        row = _child("parity", args.parity_pairs, args.parity_methods, 0, args.device)
        results["amp_parity"] = row
        if "rows" in row:
            for r in row["rows"]:
                print("AMP parity %-7s AUROC fp32 %.4f  bf16 %.4f  diff %+.4f (target |diff| <= 0.005)%s" % (
                    r["method"], r["fp32_auroc"], r["bf16_auroc"], r["diff"],
                    "" if abs(r["diff"]) <= 0.005 else "  MISSED"))
        else:
            print("AMP parity: %s" % (row.get("skipped") or row.get("error")))
    with open(os.path.join(args.out, "speed.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0
