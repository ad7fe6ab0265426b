"""Does a fit spread over torchrun's ranks detect like one process?

::

    python -m fiftyone_ncl.bench.distributed --problem fmnist-captions --size 6000 \\
        --kind category --rate 0.4 --methods crcl disncl --seeds 0 1 2 --nproc 2

For each method and seed the same fit runs twice on the same noisy pairs:
in one process, and under ``torchrun --nproc_per_node N`` (gloo on CPU,
NCCL on GPUs; :mod:`fiftyone_ncl.core.distributed`). Each run writes the
detection AUROC of the method's ranking, the wall time of the fit and a
checksum of every rank's trained weights; the table compares them.
Threads: every process runs one thread (``OMP_NUM_THREADS=1``, torchrun's
default for its ranks, set for the one-process run too), so the fit times
compare one core with ``N`` cores, not thread pools fighting over a busy
machine.

``python -m fiftyone_ncl.bench.distributed worker SPEC.json OUT.json`` is
the fit itself (what torchrun launches).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time


def _problem(spec):
    from fiftyone_ncl.bench.cli import PROFILES, load_problems

    name, size = spec["problem"], spec.get("size")
    if name == "fmnist-captions":
        kwargs = {"n_train": size or 6000, "n_test": 500}
    elif name.startswith("synthetic-"):
        kwargs = {"n_pairs": size or 5000}
    else:
        kwargs = {}
    problems = load_problems({name: kwargs})
    if not problems:
        raise ValueError("problem %r is not available here" % name)
    problem = problems[0]
    settings = dict(PROFILES["report"]["settings"].get("*", {}))
    settings.update(PROFILES["report"]["settings"].get(spec["method"], {}))
    settings.update(problem.method_settings(spec["method"]))
    settings.update(spec.get("options", {}))
    return problem, settings


def worker(spec_path, out_path):
    """One fit (every rank runs this; rank 0 writes ``out_path``)."""
    import numpy as np
    import torch
    import torch.distributed as dist

    from fiftyone_ncl.bench.runner import make_noisy
    from fiftyone_ncl.core import distributed
    from fiftyone_ncl.core.metrics import detection_metrics
    from fiftyone_ncl.core.registry import build_method

    with open(spec_path) as f:
        spec = json.load(f)
    rank, world, device = distributed.init_from_env()
    problem, settings = _problem(spec)
    data, noisy, _ = make_noisy(problem, spec["kind"], spec["rate"], spec["seed"])
    method = build_method(spec["method"], seed=spec["seed"], device=device, **settings)
    t0 = time.time()
    with distributed.data_parallel():
        method.fit(data, progress=False)
    fit_seconds = time.time() - t0
    net = getattr(method, method.network_attr, None) if method.network_attr else None
    params = list(net.parameters()) if net is not None else []
    # on the device the backend communicates from (NCCL: the rank's GPU)
    checksum = torch.tensor([float(sum(p.detach().double().sum() for p in params))], dtype=torch.float64,
                            device=device)
    checksums = [float(checksum)]
    if world > 1:
        everyone = [torch.zeros_like(checksum) for _ in range(world)]
        dist.all_gather(everyone, checksum)
        checksums = [float(t) for t in everyone]
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return
    scores = method.score(data, progress=False)
    metrics = detection_metrics(np.asarray(noisy), method.statistic(scores))
    history = [{k: v for k, v in h.items() if isinstance(v, (int, float, bool)) and not isinstance(v, bool)}
               for h in getattr(method, "history", [])]
    with open(out_path, "w") as f:
        json.dump({"world": world, "auroc": metrics["auroc"], "fit_seconds": fit_seconds,
                   "checksums": checksums, "history": history, "settings": settings}, f)


def torchrun_command(nproc, args):
    """The command running ``python ARGS...`` as ``nproc`` torchrun ranks on
    this machine (a free local port for the rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(port)] + list(args)


def run_fit(spec, nproc=1, timeout=None, env=None):
    """Runs one :func:`worker` fit in a subprocess (under torchrun when
    ``nproc`` > 1); returns its result dict (with ``wall_seconds``)."""
    with tempfile.TemporaryDirectory(prefix="ncl-ddp-") as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        module = ["-m", "fiftyone_ncl.bench.distributed", "worker", spec_path, out_path]
        if nproc > 1:
            cmd = torchrun_command(nproc, module)
        else:
            cmd = [sys.executable] + module
        env = dict(os.environ if env is None else env, OMP_NUM_THREADS="1")
        t0 = time.time()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if done.returncode != 0 or not os.path.exists(out_path):
            raise RuntimeError("fit with %d process(es) failed (%d):\n%s" % (nproc, done.returncode, done.stderr[-4000:]))
        with open(out_path) as f:
            out = json.load(f)
    out["wall_seconds"] = time.time() - t0
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        return worker(argv[1], argv[2])
    parser = argparse.ArgumentParser(prog="python -m fiftyone_ncl.bench.distributed")
    parser.add_argument("--problem", default="fmnist-captions")
    parser.add_argument("--size", type=int, default=6000)
    parser.add_argument("--kind", default="category")
    parser.add_argument("--rate", type=float, default=0.4)
    parser.add_argument("--methods", nargs="+", default=["crcl", "disncl"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--options", default=None, help="extra method options, JSON")
    parser.add_argument("--out", default=None, help="directory for results.json and table.md")
    args = parser.parse_args(argv)
    options = json.loads(args.options) if args.options else {}
    rows = []
    for method in args.methods:
        for seed in args.seeds:
            spec = {"problem": args.problem, "size": args.size, "kind": args.kind, "rate": args.rate,
                    "method": method, "seed": seed, "options": options}
            one = run_fit(spec, 1)
            many = run_fit(spec, args.nproc)
            rows.append({"method": method, "seed": seed, "one": one, "many": many})
            print("%s seed %d: AUROC %.4f (1 process, fit %.0f s) vs %.4f (%d processes, fit %.0f s); ranks' weights "
                  "equal: %s" % (method, seed, one["auroc"], one["fit_seconds"], many["auroc"], args.nproc,
                                 many["fit_seconds"], len(set(many["checksums"])) == 1), flush=True)
    table = format_table(rows, args)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
        with open(os.path.join(args.out, "table.md"), "w") as f:
            f.write(table + "\n")
    return 0


def format_table(rows, args):
    lines = ["%s, %d photos, %s swaps at %d %%: one process vs torchrun with %d processes (gloo, CPU)"
             % (args.problem, args.size, args.kind, round(100 * args.rate), args.nproc), "",
             "| method | seed | AUROC, 1 process | AUROC, %d processes | difference | fit s, 1 | fit s, %d | "
             "ranks' weights equal |" % (args.nproc, args.nproc),
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        one, many = r["one"], r["many"]
        lines.append("| %s | %d | %.4f | %.4f | %+.4f | %.0f | %.0f | %s |" % (
            r["method"], r["seed"], one["auroc"], many["auroc"], many["auroc"] - one["auroc"],
            one["fit_seconds"], many["fit_seconds"], "yes" if len(set(many["checksums"])) == 1 else "no"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
