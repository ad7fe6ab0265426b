"""Benchmarks: data with known mismatches, the evaluation grid, speed and
memory. Run with ``fiftyone-ncl bench`` (see :mod:`fiftyone_ncl.bench.cli`)."""
