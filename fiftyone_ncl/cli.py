"""Command line: ``fiftyone-ncl demo | score | runs | tag | bench``."""
import argparse
import json
import logging
import sys


def _demo(args):
    from fiftyone_ncl.demo import run_demo

    run_demo(n_samples=args.samples, noise_rate=args.noise, methods=args.methods, seed=args.seed,
             progress=not args.quiet)


def _score(args):
    import fiftyone as fo

    import fiftyone_ncl as ncl

    dataset = fo.load_dataset(args.dataset)
    options = json.loads(args.options) if args.options else {}
    results = ncl.compute_correspondence(
        dataset,
        args.caption_field,
        method=args.method,
        run_key=args.run_key,
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
    if args.tag:
        ncl.tag_mismatches(dataset, args.run_key)
    print(json.dumps(results.summary(), indent=2))


def _runs(args):
    import fiftyone as fo

    import fiftyone_ncl as ncl

    dataset = fo.load_dataset(args.dataset)
    if args.run_key:
        info = ncl.get_run_info(dataset, args.run_key)
        info.pop("info", None)
        print(json.dumps(info, indent=2, default=str))
    else:
        for key in ncl.list_runs(dataset):
            print(key)


def build_parser():
    parser = argparse.ArgumentParser(prog="fiftyone-ncl", description=__doc__)
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

    p = sub.add_parser("runs", help="list a dataset's runs, or show one")
    p.add_argument("dataset")
    p.add_argument("run_key", nargs="?")
    p.set_defaults(func=_runs)

    sub.add_parser("bench", help="benchmarks (see 'fiftyone-ncl bench --help')", add_help=False)
    return parser


def main(argv=None):
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser (argparse cannot forward leading options)
        from fiftyone_ncl.bench.cli import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
