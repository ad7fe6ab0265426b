"""What a run's health check says where CRCL memorises a small set.

Each case is a regime of the suite at a size, with 40 % random swaps; for
each, the CCA's and CRCL's (default options) detection AUROC, CRCL's
estimated mismatch rate and the verdict of the health checks a run records
(the same function ``compute_correspondence`` calls).

    python scripts/health-on-small-sets.py aligned-easy:250:0 aligned-easy:1000:0
"""
import argparse

import numpy as np
from sklearn.metrics import roc_auc_score

import fiftyone_ncl.fo  # noqa: F401  (FiftyOne's settings before anything imports it)
from fiftyone_ncl.bench.problems import regime
from fiftyone_ncl.bench.runner import make_noisy
from fiftyone_ncl.core.judge import judge
from fiftyone_ncl.core.registry import build_method
from fiftyone_ncl.correspondence import _health  # the checks compute_correspondence records on a run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", metavar="REGIME:PAIRS:SEED")
    parser.add_argument("--rate", type=float, default=0.4)
    args = parser.parse_args()
    print("| regime | pairs | seed | cca | crcl | crcl's estimate | health | failed checks |")
    print("|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        name, size, seed = case.split(":")
        size, seed = int(size), int(seed)
        problem = regime(name, size=size, seed=seed)
        data, noisy, _ = make_noisy(problem, "random", args.rate, seed)
        matched = ~np.asarray(noisy, dtype=bool)
        cca = build_method("cca", seed=seed).fit(data, progress=False)
        cca_auroc = roc_auc_score(matched, cca.statistic(cca.score(data, progress=False)))
        crcl = build_method("crcl", seed=seed).fit(data, progress=False)
        scores = crcl.score(data, progress=False)
        verdict = judge(crcl, data, seed=seed)
        health = _health(crcl, data, verdict, scores)
        failed = ", ".join(c["check"] for c in health["checks"] if not c["ok"]) or "-"
        print("| %s | %d | %d | %.3f | %.3f | %.2f | %s | %s |" % (
            name, data.n_pairs, seed, cca_auroc, roc_auc_score(matched, crcl.statistic(scores)),
            verdict.rate.rate, health["verdict"], failed), flush=True)


if __name__ == "__main__":
    main()
