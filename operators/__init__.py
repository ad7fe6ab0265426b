"""FiftyOne plugin of fiftyone-ncl: thin operators over the SDK.

Every operator class here is registered in :func:`register` and listed in the
repository's ``fiftyone.yml``.
"""
from .compute import ComputeCorrespondence
from .duplicates import ReviewDuplicateGroups
from .review import (
    AcceptSuggestion,
    DecideMismatches,
    RestoreCaption,
    ReviewSuspects,
    TagMismatches,
    UntagMismatches,
)
from .runs import DeleteCorrespondenceRun, GetCorrespondenceInfo, RenameCorrespondenceRun
from .shards import FinalizeShardedCorrespondence, QueueShardedCorrespondence, ScoreShard, ShardedCorrespondenceJobs
from .visualize import PlotConfidence, VisualizeSubspaces

OPERATORS = (
    ComputeCorrespondence,
    TagMismatches,
    UntagMismatches,
    DecideMismatches,
    ReviewSuspects,
    AcceptSuggestion,
    RestoreCaption,
    ReviewDuplicateGroups,
    VisualizeSubspaces,
    PlotConfidence,
    GetCorrespondenceInfo,
    RenameCorrespondenceRun,
    DeleteCorrespondenceRun,
    QueueShardedCorrespondence,
    ScoreShard,
    FinalizeShardedCorrespondence,
    ShardedCorrespondenceJobs,
)


def register(p):
    for operator in OPERATORS:
        p.register(operator)
