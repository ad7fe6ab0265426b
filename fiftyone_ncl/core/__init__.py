"""Pure numpy / torch core of fiftyone-ncl.

Nothing in this package imports FiftyOne: it works on arrays of embeddings (or
pixels) and an index that says which image each caption belongs to. The
FiftyOne side (:mod:`fiftyone_ncl.fo`) reads those arrays from a collection
and writes the results back.
"""
