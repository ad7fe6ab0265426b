"""``fiftyone-ncl bench``: the benchmark commands.

    fiftyone-ncl bench grid --profile quick     # < 10 min on 2 cores (``bench --profile ...`` too)
    fiftyone-ncl bench grid --profile report    # the README tables (~1 h, run in parts)
    fiftyone-ncl bench grid --profile full      # the full-size grid (many hours on a CPU)
    fiftyone-ncl bench merge DIR DIR ... --out DIR   # a grid run in parts
    fiftyone-ncl bench speed --sizes 100000 1000000
    fiftyone-ncl bench synthetic --n-images 3000     # disentanglement diagnostic
    fiftyone-ncl bench duplicates --profile lemon    # pasted-caption groups: recall, clean rows grouped

Grid results go to ``bench-results/<profile>/`` (results.json, results.md,
figures.html, noise masks, per-pair scores).
"""
import argparse
import json
import os
import shlex
import time

# Per-profile data sizes, noise grid and method budgets. Methods not named
# here (added later) run with their defaults plus the data set's overrides.
PROFILES = {
    "tiny": {  # plumbing checks (tests): seconds
        "problems": {"synthetic-high": {"n_pairs": 300}},
        "kinds": ["random"],
        "rates": [0.4],
        "seeds": [0],
        "settings": {
            "*": {"epochs": 2, "embed_dim": 32, "hidden_dim": 64},
            "crcl": {"stages": (1, 1), "warmup_epochs": 1},
            "disncl": {"epochs": 3, "warmup_epochs": 1, "mi_diagnostics": False},
        },
    },
    "quick": {
        "problems": {
            "synthetic-high": {"n_pairs": 2000},
            "fmnist-captions": {"n_train": 3000, "n_test": 1000},
            "coco-mini": {},
        },
        "kinds": ["category", "random"],
        "rates": [0.2, 0.6],
        "seeds": [0],
        "settings": {
            "*": {"epochs": 5},
            "crcl": {"stages": (2, 2, 4), "warmup_epochs": 2},
            "disncl": {"epochs": 10, "warmup_epochs": 3},
        },
    },
    "report": {  # the README tables are parts of this grid (commands in the README)
        "problems": {
            "fmnist-captions": {"n_train": 6000, "n_test": 2000},
            "synthetic-high": {"n_pairs": 5000},
            "synthetic-low": {"n_pairs": 5000},
            "coco-mini": {},
        },
        "kinds": ["category", "random", "noun"],
        "rates": [0.0, 0.2, 0.4, 0.6, 0.8],
        "seeds": [0, 1, 2],
        "settings": {
            "*": {"epochs": 5},
            "crcl": {"stages": (2, 2, 4), "warmup_epochs": 2},
            "disncl": {"epochs": 10, "warmup_epochs": 3},
        },
    },
}
# LEMoN's protocol (Zhang et al., ICML 2025): 40 % noise, random, category and
# noun swaps, AUROC / AUPRC / F1 (f1_at_rate, best_f1 and the decision's f1);
# ``bench duplicates --profile lemon`` pastes one caption onto 2 % of the images
# the varied regime suite (fiftyone_ncl.datasets.regimes): defaults are chosen
# on the regimes not held out; held-out ones are only reported
def _suite_problems(size=None):
    from fiftyone_ncl.datasets.regimes import list_regimes

    return {"regime:%s" % name: ({} if size is None else {"size": size}) for name in list_regimes()}


PROFILES["suite"] = {
    "problems": _suite_problems(),
    "kinds": ["mixed"],
    "rates": [0.0, 0.2, 0.4, 0.6],
    "seeds": [0],
    "settings": {},
}
# the same regimes at 300 pairs: where a curator's set is a few hundred pairs
# and trained heads can memorise them (README, "Small sets")
PROFILES["suite-small"] = dict(PROFILES["suite"], problems=_suite_problems(size=300), rates=[0.4], seeds=[0, 1])
PROFILES["lemon"] = {
    "problems": {
        "coco-mini-aligned": {},
        "fmnist-captions": {"n_train": 2000, "n_test": 500},
        "synthetic-high": {"n_pairs": 3000},
        "synthetic-low": {"n_pairs": 3000},
    },
    "kinds": ["random", "category", "noun"],
    "rates": [0.4],
    "seeds": [0, 1, 2],
    "settings": PROFILES["report"]["settings"],
    "duplicates": {"rate": 0.02},
}
# the same grid at full size (many hours on 2 cores; a GPU run)
PROFILES["full"] = dict(
    PROFILES["report"],
    problems={
        "fmnist-captions": {"n_train": 60000, "n_test": 10000},
        "synthetic-high": {"n_pairs": 10000},
        "synthetic-low": {"n_pairs": 10000},
        "coco-mini": {},
    },
    settings={
        "*": {"epochs": 5},
        "crcl": {"stages": (3, 3, 6), "warmup_epochs": 2},
        "disncl": {"epochs": 12, "warmup_epochs": 3},
    },
)


def load_problems(spec, log=print):
    """Builds the named problems; skips unavailable ones with a message."""
    from fiftyone_ncl.bench import problems as P

    out = []
    for name, kwargs in spec.items():
        try:
            if name == "fmnist-captions":
                out.append(P.fmnist_captions(**kwargs))
            elif name.startswith("synthetic-"):
                out.append(P.synthetic(name.split("-", 1)[1], **kwargs))
            elif name == "coco-mini":
                out.append(P.coco_mini(**kwargs))
            elif name == "coco-mini-aligned":
                out.append(P.coco_mini_aligned(**kwargs))
            elif name.startswith("regime:"):
                out.append(P.regime(name.split(":", 1)[1], **kwargs))
            else:
                raise ValueError("unknown data set %r" % name)
        except FileNotFoundError as e:
            log("skipping %s: %s" % (name, e))
    return out


def grid_main(args):
    from fiftyone_ncl.bench.report import write_results
    from fiftyone_ncl.bench.runner import run_grid

    profile = PROFILES[args.profile]
    problems = profile["problems"]
    if args.problems:
        problems = {k: v for k, v in problems.items() if k in args.problems}
    out_dir = args.out or os.path.join("bench-results", args.profile)
    command = "fiftyone-ncl bench " + " ".join(shlex.quote(a) for a in args.argv)
    settings = {}
    for method, opts in profile["settings"].items():
        settings[method] = dict(opts)
    for method, key, value in args.set or []:
        settings.setdefault(method, {})[key] = value
    expanded = _expand(settings, args.methods)
    _check_settings(expanded)  # a typo fails now, not after an hour of training
    t0 = time.time()
    loaded = load_problems(problems)
    rows = run_grid(
        loaded,
        kinds=args.kinds or profile["kinds"],
        rates=args.rates or profile["rates"],
        seeds=_seeds(args, profile),
        methods=args.methods,
        out_dir=out_dir,
        settings=expanded,
    )
    md = write_results(rows, out_dir, command, extra={"profile": args.profile, "wall_seconds": time.time() - t0})
    print(md)
    print("\nWrote %s/results.json, results.md, figures.html (%.0f s)" % (out_dir, time.time() - t0))
    return 0


def _seeds(args, profile):
    if args.seed_list:
        return list(args.seed_list)
    return list(range(args.seeds)) if args.seeds else list(profile["seeds"])


def parse_setting(text):
    """``"crcl.epochs=12"`` / ``"*.epochs=12"`` -> ``("crcl", "epochs", 12)``
    (the value is a Python literal: ``"disncl.stages=(1, 2)"``)."""
    import ast

    target, eq, value = text.partition("=")
    method, dot, key = target.partition(".")
    if not eq or not dot or not method or not key:
        raise argparse.ArgumentTypeError("expected METHOD.option=value (or *.option=value), got %r" % text)
    try:
        value = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError("the value in %r is not a Python literal" % text) from None
    return method.strip(), key.strip(), value


def _check_settings(expanded):
    from fiftyone_ncl.bench.runner import AUTO, CCA_ORACLE, FOLDS_SETTING, ORACLES
    from fiftyone_ncl.core.auto import CANDIDATES, accepted_options
    from fiftyone_ncl.core.methods.base import make_config
    from fiftyone_ncl.core.registry import build_method, get_method_class

    for method, options in expanded.items():
        if method == CCA_ORACLE:
            continue
        base = method.split("@", 1)[0]  # "crcl@cca": a variant of crcl
        if base == AUTO:  # each candidate takes the options it has (as compute_correspondence does)
            taken = set()
            for name in CANDIDATES:
                taken |= set(accepted_options(build_method, name, options))
            unknown = sorted(set(options) - taken)
            if unknown:
                raise ValueError("%s: no auto candidate takes %s" % (method, ", ".join(unknown)))
            continue
        cls = get_method_class(ORACLES.get(base, base))
        options = dict(options)
        folds = options.pop(FOLDS_SETTING, None)  # the runner's, not the method's
        if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
            raise ValueError("%s.%s must be an integer >= 2, got %r" % (method, FOLDS_SETTING, folds))
        make_config(cls.config_cls, options, method)


def _expand(settings, methods):
    """Applies the ``"*"`` entry to every method (and the oracle)."""
    from fiftyone_ncl.bench.runner import ORACLE
    from fiftyone_ncl.core.registry import list_methods

    common = settings.get("*", {})
    out = {}
    names = list(methods or list_methods()) + [ORACLE]
    if any(m.split("@", 1)[0] == "auto" for m in names):  # auto's candidates trial with their own settings
        from fiftyone_ncl.core.auto import CANDIDATES

        names += [c for c in CANDIDATES if c not in names]
    for m in names:
        base = m.split("@", 1)[0]
        name = "cosine" if base == ORACLE else base
        out[m] = dict(common, **settings.get(name, {}))
        if base != m:
            out[m].update(settings.get(m, {}))
    return out


def merge_main(args):
    """``fiftyone-ncl bench merge PART [PART ...] --out DIR``."""
    from fiftyone_ncl.bench.report import merge_results

    print(merge_results(args.parts, args.out))
    print("\nWrote %s/results.json, results.md, figures.html" % args.out)
    return 0


def duplicates_main(args):
    """``fiftyone-ncl bench duplicates``: the pasted-caption benchmark."""
    from fiftyone_ncl.bench.duplicates import markdown, run_duplicates

    profile = PROFILES[args.profile]
    problems = profile["problems"]
    if args.problems:
        problems = {k: v for k, v in problems.items() if k in args.problems}
    rate = args.rate if args.rate is not None else profile.get("duplicates", {}).get("rate", 0.02)
    settings = _expand({m: dict(o) for m, o in profile["settings"].items()}, [args.method])
    rows = run_duplicates(load_problems(problems), rate=rate, seeds=_seeds(args, profile), method=args.method,
                          settings=settings)
    command = "fiftyone-ncl bench duplicates " + " ".join(shlex.quote(a) for a in args.argv)
    md = markdown(rows, command, rate)
    print(md)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "duplicates.json"), "w") as f:
            json.dump({"command": command, "rate": rate, "rows": rows}, f, indent=1, default=float)
        with open(os.path.join(args.out, "duplicates.md"), "w") as f:
            f.write(md + "\n")
    return 0


def synthetic_main(args):
    """``fiftyone-ncl bench synthetic``: the disentanglement diagnostic."""
    from fiftyone_ncl.bench.disentanglement import format_report, run_synthetic_benchmark

    result = run_synthetic_benchmark(
        exclusive_stds=args.exclusive_stds,
        n_images=args.n_images,
        noise_rate=args.noise_rate,
        seed=args.seed,
        methods=args.methods,
        train=dict(epochs=args.epochs, hidden_dim=args.hidden_dim, embed_dim=args.embed_dim),
        disncl=args.disncl,
    )
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=float)
    return 0


def add_bench_commands(bench):
    """The ``grid``, ``merge``, ``speed`` and ``synthetic`` subcommands of
    ``fiftyone-ncl bench`` (an argparse sub-parsers object)."""
    from fiftyone_ncl.bench import speed

    p = bench.add_parser("grid", help="detection/retrieval grid (profiles quick, report, full)",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--problems", nargs="*", help="subset of the profile's data sets")
    p.add_argument("--kinds", nargs="*", help="noise kinds: random category noun")
    p.add_argument("--rates", nargs="*", type=float, help="noise rates, e.g. 0.2 0.4")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, help="number of seeds (0, 1, ..., N - 1)")
    seeds.add_argument("--seed-list", type=int, nargs="+", metavar="SEED",
                       help="these seeds only, e.g. --seed-list 1 2 (a grid split by seed, merged later)")
    p.add_argument("--methods", nargs="*", help="methods (default: all registered + oracle)")
    p.add_argument("--set", nargs="*", type=parse_setting, metavar="METHOD.OPTION=VALUE",
                   help="override a method option of the profile, e.g. cosine.epochs=12 or *.batch_size=256")
    p.add_argument("--out", help="output directory (default bench-results/<profile>)")
    p.set_defaults(func=lambda args, parser: grid_main(args))

    p = bench.add_parser("merge", help="merge a grid run in parts into one table")
    p.add_argument("parts", nargs="+", help="output directories (or results.json files) of grid runs")
    p.add_argument("--out", required=True, help="where to write the merged results")
    p.set_defaults(func=lambda args, parser: merge_main(args))

    p = bench.add_parser("speed", help="scoring time and memory against a bare set_values; epoch times",
                         description=speed.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    speed.add_arguments(p)
    p.set_defaults(func=speed.run)

    p = bench.add_parser("duplicates", help="pasted-caption groups: recall and clean rows grouped")
    p.add_argument("--profile", choices=sorted(PROFILES), default="lemon")
    p.add_argument("--problems", nargs="*", help="subset of the profile's data sets")
    p.add_argument("--rate", type=float, default=None, help="fraction of images given the pasted caption (0.02)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, help="number of seeds (0, 1, ..., N - 1)")
    seeds.add_argument("--seed-list", type=int, nargs="+", metavar="SEED")
    p.add_argument("--method", default="gmm", help="the method whose embeddings the groups are found in")
    p.add_argument("--out", help="also write duplicates.json / duplicates.md here")
    p.set_defaults(func=lambda args, parser: duplicates_main(args))

    p = bench.add_parser("synthetic", help="disentanglement diagnostic on the synthetic factor problems")
    p.add_argument("--n-images", type=int, default=3000)
    p.add_argument("--noise-rate", type=float, default=0.4)
    p.add_argument("--exclusive-stds", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--embed-dim", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--disncl", type=json.loads, default=None, help="JSON dict of DisNCL options")
    p.add_argument("--json", default=None, help="also write the full result here")
    p.set_defaults(func=lambda args, parser: synthetic_main(args))
