"""Training on several GPUs, processes or nodes with ``torchrun``.

::

    torchrun --nproc_per_node 8 -m fiftyone_ncl.train my-dataset --method disncl \\
        --image-field clip_img --text-field clip_txt --options '{"epochs": 10}'

Every rank reads the dataset's pairs and inputs, and the method is fitted once,
spread over the ranks (:mod:`fiftyone_ncl.core.distributed`: each rank encodes
its slice of every batch, the slices are gathered so in-batch negatives span
all ranks, per-pair state stays global); then rank 0 alone scores, decides
and writes the run with :func:`fiftyone_ncl.compute_correspondence`, exactly
as a one-process run with that fitted model would. Without torchrun the
command trains in one process.
"""
import argparse
import logging
import sys

logger = logging.getLogger(__name__)


def train(
    samples,
    caption_field="caption",
    method="crcl",
    run_key="ncl",
    recipe=None,
    image_embeddings=None,
    text_embeddings=None,
    encoder=None,
    image_encoder=None,
    text_encoder=None,
    decision="probability",
    level=None,
    threshold=0.5,
    overwrite=False,
    progress=True,
    **options,
):
    """Fits ``method`` on ``samples`` spread over the ranks of the
    ``torch.distributed`` group ``torchrun`` set up (one process without
    it), then writes the run from rank 0.

    Every rank must call this with the same arguments. The arguments are
    those of :func:`fiftyone_ncl.compute_correspondence` (a trained method:
    not ``"auto"``, which trials several). ``device`` defaults to this
    rank's GPU (``cuda:LOCAL_RANK``) or the CPU.

    Returns:
        the run's :class:`~fiftyone_ncl.fo.runs.CorrespondenceResults` on
        rank 0, None on the other ranks
    """
    import torch.distributed as dist

    import fiftyone_ncl as ncl
    from fiftyone_ncl.core import distributed
    from fiftyone_ncl.core.registry import build_method
    from fiftyone_ncl.fo.embeddings import gather_inputs
    from fiftyone_ncl.fo.fields import planned_suffixes
    from fiftyone_ncl.fo.pairs import caption_kind, read_pairs
    from fiftyone_ncl.fo.runs import check_new_run_key
    from fiftyone_ncl.recipes import make_recipe

    if method in (None, "auto"):
        raise ValueError("fiftyone_ncl.train fits one named method (crcl, disncl, gmm...); "
                         "method='auto' trials several: run it with compute_correspondence")
    rank, world, device = distributed.init_from_env()
    options.setdefault("device", device)
    fitted = build_method(method, **options)  # bad options fail before any data is read
    recipe = make_recipe(recipe, image_embeddings, text_embeddings, encoder, image_encoder, text_encoder)
    is_list = caption_kind(samples, caption_field) == "list"
    # refused now rather than after the training
    check_new_run_key(samples, run_key, overwrite, planned_suffixes(type(fitted), is_list))
    main = rank == 0
    pairs = read_pairs(samples, caption_field)
    gathered = gather_inputs(samples, pairs, recipe, progress=progress if main else False)
    if world > 1:
        logger.info("rank %d of %d: fitting %s on %d pairs (%s)", rank, world, method, gathered.data.n_pairs, device)
    with distributed.data_parallel():
        fitted.fit(gathered.data, progress=progress if main else False)
    if world > 1:
        dist.barrier()  # every rank's last collective is done
        dist.destroy_process_group()
    if not main:
        return None
    return ncl.compute_correspondence(
        samples, caption_field, model=fitted, run_key=run_key, recipe=recipe, decision=decision, level=level,
        threshold=threshold, overwrite=overwrite, progress=progress,
    )


def main(argv=None):
    """``python -m fiftyone_ncl.train`` / ``torchrun ... -m fiftyone_ncl.train``."""
    parser = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node N -m fiftyone_ncl.train",
        description="fit a method on a FiftyOne dataset over torchrun's ranks; rank 0 writes the run",
    )
    from fiftyone_ncl.cli import add_input_arguments

    add_input_arguments(parser, method="crcl")
    parser.add_argument("--options", default=None, help='method options as JSON, e.g. \'{"epochs": 5}\'')
    parser.add_argument("--decision", default="probability", choices=("probability", "fdr", "top_k", "fraction"))
    parser.add_argument("--level", type=float, default=None)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        import fiftyone_ncl.fo  # noqa: F401 (first: ranks starting one database take turns)
        from fiftyone_ncl.cli import _level, _load_dataset, _report, parse_options

        options = parse_options(args.options)

        dataset = _load_dataset(args.dataset)
        results = train(
            dataset, args.caption_field, method=args.method, run_key=args.run_key, recipe=args.recipe,
            image_embeddings=args.image_field, text_embeddings=args.text_field, encoder=args.encoder,
            image_encoder=args.image_encoder, text_encoder=args.text_encoder, decision=args.decision,
            level=_level(args), threshold=args.threshold, overwrite=args.overwrite, progress=not args.quiet,
            **options,
        )
    except (ValueError, KeyError, RuntimeError) as e:
        if args.debug:
            raise
        print("fiftyone_ncl.train: error: %s" % e, file=sys.stderr)
        return 2
    if results is not None:
        _report(dataset, results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
