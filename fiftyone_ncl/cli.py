"""Command line: ``fiftyone-ncl demo | score | tag | runs | bench``.

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
    try:
        options = json.loads(args.options) if args.options else {}
    except ValueError as e:
        raise ValueError("--options is not JSON (%s); e.g. --options '{\"epochs\": 5}'" % e) from None
    if not isinstance(options, dict):
        raise ValueError("--options must be a JSON object, e.g. '{\"epochs\": 5}'")
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
        threshold=args.threshold,
        overwrite=args.overwrite,
        progress=not args.quiet,
        **options,
    )
    summary = results.summary()
    if args.tag:
        summary["tagged"] = ncl.tag_mismatches(dataset, args.run_key)
    print(json.dumps(summary, indent=2))


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
    else:
        for key in ncl.list_runs(dataset):
            print(key)


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
    p.add_argument("dataset")
    p.add_argument("--caption-field", default="caption")
    p.add_argument("--method", default=None)
    p.add_argument("--run-key", default="ncl")
    p.add_argument("--recipe", default=None, help="open_clip, fields, pixels_minilm, cnn_minilm, open_clip_finetune")
    p.add_argument("--image-field", default=None, help="precomputed image embeddings field")
    p.add_argument("--text-field", default=None, help="precomputed caption embeddings field")
    p.add_argument("--encoder", default=None, help="e.g. open_clip:ViT-B-32:laion2b_s34b_b79k")
    p.add_argument("--image-encoder", default=None)
    p.add_argument("--text-encoder", default=None)
    p.add_argument("--model", default=None, help="checkpoint of a trained model")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--options", default=None, help='method options as JSON, e.g. \'{"epochs": 5}\'')
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--tag", action="store_true", help="tag flagged samples 'suspected_mismatch'")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_score)

    p = sub.add_parser("tag", help="tag a run's suspected mismatches")
    p.add_argument("dataset")
    p.add_argument("run_key", nargs="?", default="ncl")
    p.add_argument("--threshold", type=float, default=None, help="default: the run's decision")
    p.add_argument("--top-k", type=int, default=None, help="instead, the k least confident samples")
    p.add_argument("--tag", default="suspected_mismatch")
    p.set_defaults(func=_tag)

    p = sub.add_parser("runs", help="list a dataset's runs, or show one")
    p.add_argument("dataset")
    p.add_argument("run_key", nargs="?")
    p.set_defaults(func=_runs)

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
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:
        if args.debug:
            raise
        print("fiftyone-ncl: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
