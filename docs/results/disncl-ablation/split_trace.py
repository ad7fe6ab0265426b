"""Per-epoch trace of DisNCL's split: for each split, the AUROC of the
reference loss against the true swaps, the mean w of swapped / clean pairs,
the GMM's weights and means, the 95th loss percentile, Ashman's D, and what
the gate did. Usage (from the repository root, env activated):

    nice -n 5 python docs/results/disncl-ablation/split_trace.py fmnist 0.6 '{"split_gate": false}'
    nice -n 5 python docs/results/disncl-ablation/split_trace.py regime:heldout-mimic 0.6 '{}'

fmnist = fmnist-captions n_train 2000 with category swaps and the lemon /
report profile's DisNCL budget (10 epochs, 3 warm-up); a regime uses mixed
swaps and the method's defaults, as the suite profile does. The traces
split-trace-*.txt here were written before the gate became the default:
'{}' then meant split_gate=False.
"""
import sys, json, time
import torch; torch.set_num_threads(1)
import numpy as np
from sklearn.metrics import roc_auc_score
from fiftyone_ncl.bench.cli import load_problems
from fiftyone_ncl.bench.runner import make_noisy
from fiftyone_ncl.core.methods.disncl import method as M
from fiftyone_ncl.core.methods.disncl import DisNCLMethod

prob_name = sys.argv[1]; rate = float(sys.argv[2]); opts = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
spec = {prob_name: {}} if prob_name.startswith("regime:") else {"fmnist-captions": {"n_train": 2000, "n_test": 500}}
kind = "mixed" if prob_name.startswith("regime:") else "category"
problem = load_problems(spec)[0]
data, noisy, _ = make_noisy(problem, kind, rate, 0)
settings = problem.method_settings("disncl"); settings.update(opts)
if not prob_name.startswith("regime:"):
    settings.update(epochs=10, warmup_epochs=3)
orig = M.reference_confidence
log = []
def wrapped(*a, **k):
    out = orig(*a, **k)
    w, loss, _, fit = out
    if len(loss) == len(noisy):
        au = roc_auc_score(noisy, loss) if noisy.any() else float("nan")
        fd = fit.to_dict() if fit else None
        d = None
        if fit:
            m, s = fit.means, fit.stds
            d = float(np.sqrt(2) * abs(m[1] - m[0]) / np.sqrt(s[0] ** 2 + s[1] ** 2))
        log.append(dict(auroc=round(au, 3), wclean_noisy=round(float(w[noisy].mean()), 3) if noisy.any() else None,
                        wclean_clean=round(float(w[~noisy].mean()), 3),
                        weights=[round(x, 3) for x in fd["weights"]] if fd else None,
                        means=[round(x, 3) for x in fd["means"]] if fd else None,
                        q95=round(float(np.quantile(loss, 0.95)), 3), D=round(d, 2) if d else None))
    return out
M.reference_confidence = wrapped
t0 = time.time()
m = DisNCLMethod(seed=0, **settings).fit(data, progress=False)
s = m.score(data, progress=False)
stat = m.statistic(s)
for i, (h, l) in enumerate(zip([h for h in m.history if "calibration" in h] + [{}], log)):
    extra = {k: h.get(k) for k in ("gate", "gate_reason", "fraction_clean")} if h else {}; extra["sep"] = round(h["split_check"]["separation"], 2) if h and h.get("split_check") and h["split_check"]["separation"] is not None else None
    print(i, l, extra)
print("FINAL AUROC %.3f" % (roc_auc_score(noisy, -stat) if noisy.any() else float("nan")), "%.0fs" % (time.time() - t0), opts)
