"""Command line: ``fiftyone-ncl demo | score | decide | tag | runs | repair | cleanup | bench``.

Errors a user can fix print as one line with the fix; ``--debug`` shows the
traceback.
"""
import argparse
import json
import logging
import sys


def _demo(args):
    from fiftyone_ncl.demo import run_demo

    run_demo(n_samples=args.samples, noise_rate=args.noise, methods=args.methods, seed=args.seed,
             progress=not args.quiet)


def _load_dataset(name):
    import fiftyone as fo

    if not fo.dataset_exists(name):
        datasets = fo.list_datasets()
        raise ValueError("no dataset %r; datasets: %s" % (name, ", ".join(datasets) or "none"))
    return fo.load_dataset(name)


def _score(args):
    import fiftyone_ncl as ncl

    dataset = _load_dataset(args.dataset)
    options = parse_options(args.options)
    results = ncl.compute_correspondence(
        dataset,
        args.caption_field,
        method=args.method,
        run_key=args.run_key,
        recipe=args.recipe,
        image_embeddings=args.image_field,
        text_embeddings=args.text_field,
        encoder=args.encoder,
        image_encoder=args.image_encoder,
        text_encoder=args.text_encoder,
        model=args.model,
        labels=args.labels,
        decision=args.decision,
        level=_level(args),
        threshold=args.threshold,
        folds=args.folds,
        overwrite=args.overwrite,
        progress=not args.quiet,
        **options,
    )
    _report(dataset, results, args)


def parse_options(text):
    """``--options``: a JSON object of method options (``{}`` when absent)."""
    try:
        options = json.loads(text) if text else {}
    except ValueError as e:
        raise ValueError("--options is not JSON (%s); e.g. --options '{\"epochs\": 5}'" % e) from None
    if not isinstance(options, dict):
        raise ValueError("--options must be a JSON object, e.g. '{\"epochs\": 5}'")
    return options


def add_input_arguments(p, method=None):
    """The dataset, caption field, method, run key and input arguments that
    ``score`` and ``fiftyone_ncl.train`` share."""
    p.add_argument("dataset")
    p.add_argument("--caption-field", default="caption")
    p.add_argument("--method", default=method)
    p.add_argument("--run-key", default="ncl")
    p.add_argument("--recipe", default=None, help="open_clip, fields, pixels_minilm, cnn_minilm, open_clip_finetune")
    p.add_argument("--image-field", default=None, help="precomputed image embeddings field")
    p.add_argument("--text-field", default=None, help="precomputed caption embeddings field")
    p.add_argument("--encoder", default=None, help="e.g. open_clip:ViT-B-32:laion2b_s34b_b79k")
    p.add_argument("--image-encoder", default=None)
    p.add_argument("--text-encoder", default=None)


def _report(dataset, results, args):
    """Prints a run's summary (JSON) and, on stderr, the estimate in words."""
    import fiftyone_ncl as ncl

    summary = results.summary()
    if getattr(args, "tag", False):
        summary["tagged"] = ncl.tag_mismatches(dataset, args.run_key)
    print(json.dumps(summary, indent=2))
    from fiftyone_ncl.decisions import describe_estimate

    print(describe_estimate(results), file=sys.stderr)
    if results.health.get("verdict") == "check":
        print("health: " + results.health["summary"], file=sys.stderr)
    if getattr(args, "tag", False):
        print("tagged %d samples 'suspected_mismatch' from run %r" % (summary["tagged"], args.run_key),
              file=sys.stderr)


def _level(args):
    """--level as the mode wants it: a count for top_k."""
    if args.level is not None and args.decision == "top_k":
        if args.level != int(args.level):
            raise ValueError("--level of --decision top_k is a count, got %r" % args.level)
        return int(args.level)
    return args.level


def _decide(args):
    import fiftyone_ncl as ncl

    dataset = _load_dataset(args.dataset)
    results = ncl.decide(dataset, args.run_key, decision=args.decision, level=_level(args), labels=args.labels)
    _report(dataset, results, args)


def _tag(args):
    import fiftyone_ncl as ncl

    dataset = _load_dataset(args.dataset)
    n = ncl.tag_mismatches(dataset, args.run_key, threshold=args.threshold, top_k=args.top_k, tag=args.tag)
    print("tagged %d samples %r from run %r" % (n, args.tag, args.run_key))


def _runs(args):
    import fiftyone_ncl as ncl

    dataset = _load_dataset(args.dataset)
    if args.run_key:
        info = ncl.get_run_info(dataset, args.run_key)
        info.pop("info", None)
        print(json.dumps(info, indent=2, default=str))
        return
    incomplete = ncl.list_incomplete_runs(dataset)
    for key in ncl.list_runs(dataset):
        print(key if key not in incomplete else "%s  INCOMPLETE" % key)
    for key in incomplete:
        if key not in ncl.list_runs(dataset):
            print("%s  INCOMPLETE (no record yet)" % key)
    for message in incomplete.values():
        print(message, file=sys.stderr)


def _repair(args):
    import fiftyone_ncl as ncl

    dataset = _load_dataset(args.dataset)
    done = ncl.repair_run(dataset, args.run_key, force=args.force)
    for item in done:
        print("%s: %s" % (item["run_key"], item["action"]))
    if not done:
        print("nothing to repair on %r" % dataset.name)


def _cleanup(args):
    import fiftyone_ncl as ncl

    paths = ncl.cleanup_checkpoints(dry_run=args.dry_run)
    for path in paths:
        print(path)
    print("%s %d orphan checkpoint paths" % ("would delete" if args.dry_run else "deleted", len(paths)),
          file=sys.stderr)


def build_parser():
    from fiftyone_ncl.bench.cli import add_bench_commands

    parser = argparse.ArgumentParser(prog="fiftyone-ncl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="score a demo dataset with known mismatches and print detection quality")
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--noise", type=float, default=0.3, help="fraction of captions swapped")
    p.add_argument("--methods", nargs="*", default=None, help="methods to run (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_demo)

    p = sub.add_parser("score", help="score the pairs of a FiftyOne dataset")
    add_input_arguments(p)
    p.add_argument("--model", default=None, help="checkpoint of a trained model")
    p.add_argument("--labels", default=None,
                   help="BooleanField of pairs you judged (True = matches); neighbors/ensemble fit weights on them")
    p.add_argument("--decision", default="probability", choices=("probability", "fdr", "top_k", "fraction", "f1"),
                   help="how pairs are flagged (default: posterior probability of a match below --level)")
    p.add_argument("--level", type=float, default=None,
                   help="the decision's level: probability 0.5, fdr 0.1, top_k a count, fraction 0.1")
    p.add_argument("--threshold", type=float, default=0.5, help="level of the probability decision")
    p.add_argument("--folds", type=int, default=None,
                   help="decide on out-of-sample statistics from this many folds (folds + 1 fits)")
    p.add_argument("--options", default=None, help='method options as JSON, e.g. \'{"epochs": 5}\'')
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--tag", action="store_true", help="tag flagged samples 'suspected_mismatch'")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_score)

    p = sub.add_parser("decide", help="flag a run's pairs again with another decision, without retraining")
    p.add_argument("dataset")
    p.add_argument("run_key", nargs="?", default="ncl")
    p.add_argument("--decision", default="probability", choices=("probability", "fdr", "top_k", "fraction", "f1"))
    p.add_argument("--level", type=float, default=None)
    p.add_argument("--labels", default=None, help="for --decision f1: BooleanField of pairs you judged")
    p.set_defaults(func=_decide)

    p = sub.add_parser("tag", help="tag a run's suspected mismatches")
    p.add_argument("dataset")
    p.add_argument("run_key", nargs="?", default="ncl")
    p.add_argument("--threshold", type=float, default=None, help="default: the run's decision")
    p.add_argument("--top-k", type=int, default=None, help="instead, the k least confident samples")
    p.add_argument("--tag", default="suspected_mismatch")
    p.set_defaults(func=_tag)

    p = sub.add_parser("runs", help="list a dataset's runs (marking interrupted ones), or show one")
    p.add_argument("dataset")
    p.add_argument("run_key", nargs="?")
    p.set_defaults(func=_runs)

    p = sub.add_parser("repair", help="roll back (or complete) runs whose write was interrupted")
    p.add_argument("dataset")
    p.add_argument("run_key", nargs="?", default=None, help="default: every interrupted run of the dataset")
    p.add_argument("--force", action="store_true",
                   help="also take over a write whose process seems alive (another host)")
    p.set_defaults(func=_repair)

    p = sub.add_parser("cleanup", help="delete model checkpoints of deleted runs and datasets")
    p.add_argument("--dry-run", action="store_true", help="only list them")
    p.set_defaults(func=_cleanup)

    bench = sub.add_parser("bench", help="benchmarks: grid, merge, speed, synthetic")
    add_bench_commands(bench.add_subparsers(dest="bench_command", required=True))
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "bench":
        # ``bench --profile ...`` (no subcommand) is the grid, as before
        at = argv.index("bench") + 1
        if at == len(argv) or argv[at].startswith("-") and argv[at] not in ("-h", "--help"):
            argv.insert(at, "grid")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        args.argv = [a for a in argv[argv.index("bench") + 1 :] if a != "grid"] if args.bench_command == "grid" \
            else argv[argv.index("bench") + 2 :]
        return _run(args, lambda: args.func(args, parser))
    return _run(args, lambda: args.func(args))


def _run(args, fn):
    """Runs a command; user errors become one line on stderr (exit 2)."""
    try:
        return fn() or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # pylint: disable=broad-except
        if args.debug or not _is_user_error(e):
            raise
        print("fiftyone-ncl: error: %s" % e, file=sys.stderr)
        return 2


def _is_user_error(e):
    """Errors a user can fix from the message alone (bad arguments, data,
    files, a run to repair, a database to point at)."""
    if isinstance(e, (ValueError, TypeError, FileNotFoundError, IsADirectoryError, ImportError)):
        return True
    names = {"IncompleteRunError", "RunBusyError", "DatabaseMismatchError", "DatasetNotFoundError"}
    return any(cls.__name__ in names for cls in type(e).__mro__)


if __name__ == "__main__":
    sys.exit(main())
