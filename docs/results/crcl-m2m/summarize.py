"""Tables of the CRCL official-vs-relative runs (results.json files written
by bench_labels.py): per cell AUROC, decision precision / recall, clean
pairs flagged and the share of SCC labels cut to 0.

    python docs/results/crcl-m2m/summarize.py docs/results/crcl-m2m/suite ... > docs/results/crcl-m2m/summary.md
"""
import json
import os
import sys


def fmt(v, digits=3):
    return "-" if v is None else ("%.*f" % (digits, v))


def table(path):
    with open(os.path.join(path, "results.json")) as f:
        result = json.load(f)
    out = ["### %s" % os.path.basename(path.rstrip("/")), "", "Command: `%s`" % result["command"], "",
           "Machine: %s" % result["machine"], "",
           "| data set | kind | rate | method | AUROC | AP | flagged | precision | recall | F1 | clean flagged "
           "| labels zeroed | labels < 0.1 | label mean | zeroed: clean / noisy | label AUROC | s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = sorted(result["rows"], key=lambda r: (r["problem"], r["kind"], r["rate"], r["method"]))
    for r in rows:
        split = ("%s / %s" % (fmt(r.get("labels_zeroed_clean"), 2), fmt(r.get("labels_zeroed_noisy"), 2))
                 if "labels_zeroed_clean" in r else "-")
        out.append("| %s | %s | %d%% | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f |" % (
            r["problem"], r["kind"], round(100 * r["rate"]), r["method"], fmt(r.get("auroc")), fmt(r.get("ap")),
            r["flagged"], fmt(r.get("precision")), fmt(r.get("recall")), fmt(r.get("f1")),
            fmt(r.get("clean_flagged")), fmt(r.get("labels_zeroed"), 2), fmt(r.get("labels_near_zero"), 2),
            fmt(r.get("label_mean"), 2), split, fmt(r.get("label_auroc")), r["seconds"]))
    return "\n".join(out)


if __name__ == "__main__":
    print("\n\n".join(table(p) for p in sys.argv[1:]))
