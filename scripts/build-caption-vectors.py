#!/usr/bin/env python
"""Precomputes the all-MiniLM-L6-v2 vectors of every caption the
fmnist-captions benchmark can produce (5 templates x 10 classes x (no phrase
+ 40 non-visual phrases) = 2,050 texts) into a small .npz, for machines where
sentence-transformers or its weights are missing (the GPU check):

    python scripts/build-caption-vectors.py gpu-data/fmnist-minilm.npz
    FIFTYONE_NCL_CAPTION_VECTORS=gpu-data/fmnist-minilm.npz fiftyone-ncl bench grid ...

The vectors are those SentenceTransformerEncoder.embed_texts returns here.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fiftyone_ncl.datasets import fmnist  # noqa: E402


def all_captions():
    """Every caption make_fmnist_captions / make_captions can return."""
    phrases = [None] + fmnist.EXCLUSIVE_PHRASES + fmnist.MORE_PHRASES
    out = []
    for name in fmnist.CLASS_NAMES:
        for template in fmnist.TEMPLATES:
            base = template.format(a="an" if name[0] in "aeiou" else "a", name=name)
            out.extend(base if p is None else base + ", " + p for p in phrases)
    return sorted(set(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the .npz to write")
    args = parser.parse_args()
    from fiftyone_ncl.encoders import SentenceTransformerEncoder

    captions = all_captions()
    # the benchmark's own samples must all be covered (a check on the enumeration)
    for seed in (0, 1):
        labels = np.arange(600) % len(fmnist.CLASS_NAMES)
        for kind in ("instance", "class", "none"):
            missing = set(fmnist.make_fmnist_captions(labels, seed, kind)) - set(captions)
            assert not missing, sorted(missing)[:3]
    encoder = SentenceTransformerEncoder()
    vectors = encoder.embed_texts(captions, progress=False).astype(np.float32)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez_compressed(args.out, captions=np.array(captions), vectors=vectors, model=np.array(encoder.name))
    print("wrote %s: %d captions x %d-d (%s)" % (args.out, len(captions), vectors.shape[1], encoder.name))


if __name__ == "__main__":
    main()
