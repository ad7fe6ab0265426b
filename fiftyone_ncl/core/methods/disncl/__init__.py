"""DisNCL: its networks (:mod:`.nets`), its loss terms (:mod:`.terms`) and the
method with its training loop (:mod:`.method`)."""
from fiftyone_ncl.core.methods.disncl.method import DisNCLConfig, DisNCLMethod

__all__ = ["DisNCLConfig", "DisNCLMethod"]
