"""fiftyone-ncl: find image-caption pairs that do not belong together.

Quick start::

    import fiftyone_ncl as ncl

    results = ncl.compute_correspondence(dataset, "caption", method="gmm",
                                         encoder="open_clip:ViT-B-32:laion2b_s34b_b79k")
    ncl.tag_mismatches(dataset, "ncl")
    session = fo.launch_app(ncl.suspects_view(dataset, "ncl"))
"""
__version__ = "0.1.0"

from fiftyone_ncl.core.methods import list_methods
from fiftyone_ncl.correspondence import (
    compute_correspondence,
    delete_run,
    evaluate,
    get_run_info,
    list_runs,
    load_run_results,
    rename_run,
)
from fiftyone_ncl.selfcheck import self_check
from fiftyone_ncl.visualize import (
    compute_visualizations,
    confidence_figure,
    embedding_spaces,
    plot_confidence,
)
from fiftyone_ncl.review import (
    accept_suggestions,
    restore_captions,
    save_suspects_view,
    suspects_view,
    tag_mismatches,
    untag_mismatches,
)

__all__ = [
    "accept_suggestions",
    "compute_correspondence",
    "compute_visualizations",
    "confidence_figure",
    "embedding_spaces",
    "delete_run",
    "evaluate",
    "get_run_info",
    "list_methods",
    "list_runs",
    "plot_confidence",
    "load_run_results",
    "rename_run",
    "restore_captions",
    "save_suspects_view",
    "self_check",
    "suspects_view",
    "tag_mismatches",
    "untag_mismatches",
]
