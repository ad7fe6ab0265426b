"""fiftyone-ncl: find image-caption pairs that do not belong together.

Quick start::

    import fiftyone_ncl as ncl

    results = ncl.compute_correspondence(dataset, "caption", method="gmm",
                                         encoder="open_clip:ViT-B-32:laion2b_s34b_b79k")
    ncl.tag_mismatches(dataset, "ncl")
    session = fo.launch_app(ncl.suspects_view(dataset, "ncl"))

The SDK names below are resolved on first use (PEP 562), so that
``fiftyone_ncl.core`` imports and runs where FiftyOne is not installed (a GPU
worker, a ``torchrun`` job, another tool).
"""
import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "compute_correspondence": "fiftyone_ncl.correspondence",
    "evaluate": "fiftyone_ncl.correspondence",
    "score_in_chunks": "fiftyone_ncl.fo.streaming",
    "decide_in_chunks": "fiftyone_ncl.fo.streaming",
    "delete_run": "fiftyone_ncl.fo.runs",
    "get_run_info": "fiftyone_ncl.fo.runs",
    "list_runs": "fiftyone_ncl.fo.runs",
    "load_run_results": "fiftyone_ncl.fo.runs",
    "rename_run": "fiftyone_ncl.fo.runs",
    "validate_run_key": "fiftyone_ncl.fo.runs",
    "list_incomplete_runs": "fiftyone_ncl.fo.runs",
    "cleanup_checkpoints": "fiftyone_ncl.fo.runs",
    "repair_run": "fiftyone_ncl.fo.journal",
    "IncompleteRunError": "fiftyone_ncl.fo.journal",
    "RunBusyError": "fiftyone_ncl.fo.journal",
    "field_name": "fiftyone_ncl.fo.fields",
    "caption_fields": "fiftyone_ncl.fo.pairs",
    "DEFAULT_METHOD": "fiftyone_ncl.correspondence",
    "DEFAULT_TAG": "fiftyone_ncl.review",
    "list_methods": "fiftyone_ncl.core.registry",
    "method_capabilities": "fiftyone_ncl.core.registry",
    "load_method": "fiftyone_ncl.core.registry",
    "list_recipes": "fiftyone_ncl.recipes",
    "self_check": "fiftyone_ncl.selfcheck",
    "compute_visualizations": "fiftyone_ncl.visualize",
    "confidence_figure": "fiftyone_ncl.visualize",
    "figure_json": "fiftyone_ncl.visualize",
    "ORIGINAL_SUFFIX": "fiftyone_ncl.review",
    "embedding_spaces": "fiftyone_ncl.visualize",
    "plot_confidence": "fiftyone_ncl.visualize",
    "accept_suggestions": "fiftyone_ncl.review",
    "restore_captions": "fiftyone_ncl.review",
    "save_suspects_view": "fiftyone_ncl.review",
    "suspects_view": "fiftyone_ncl.review",
    "tag_mismatches": "fiftyone_ncl.review",
    "untag_mismatches": "fiftyone_ncl.review",
    "decide": "fiftyone_ncl.decisions",
    "describe_estimate": "fiftyone_ncl.decisions",
    "duplicate_groups": "fiftyone_ncl.duplicates",
    "duplicate_group_view": "fiftyone_ncl.duplicates",
    "tag_duplicate_group": "fiftyone_ncl.duplicates",
    "replace_duplicate_captions": "fiftyone_ncl.duplicates",
    "DUPLICATE_TAG": "fiftyone_ncl.duplicates",
    "queue_sharded_scoring": "fiftyone_ncl.fo.shards",
    "load_sharded_job": "fiftyone_ncl.fo.shards",
    "list_sharded_jobs": "fiftyone_ncl.fo.shards",
    "run_shard": "fiftyone_ncl.fo.shard_worker",
    "finalize_sharded_scoring": "fiftyone_ncl.fo.shard_global",
    "ShardedJobError": "fiftyone_ncl.fo.shard_store",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name not in _API:
        try:  # a submodule, e.g. ``fiftyone_ncl.correspondence``
            return importlib.import_module("%s.%s" % (__name__, name))
        except ModuleNotFoundError as e:
            if e.name != "%s.%s" % (__name__, name):
                raise
        raise AttributeError("module 'fiftyone_ncl' has no attribute %r" % name)
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # resolved once
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
