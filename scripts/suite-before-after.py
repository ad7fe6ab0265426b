"""Per-regime tables of the regime suite from several grid results, with
methods renamed per file (e.g. the former default ``crcl`` as
``crcl (random start)``): detection AUROC with ``<`` where a method is below
the baseline by more than 0.01, and the share of clean pairs flagged.

    python scripts/suite-before-after.py --baseline cca \
        docs/results/suite/results.json:cca=cca,crcl="crcl (random start)" \
        docs/results/suite-crcl-start/results.json:crcl=crcl > tables.md
"""
import argparse
import json

from fiftyone_ncl.datasets.regimes import REGIMES


def load(spec):
    """``path:old=new,old=new``: rows of the methods named, renamed."""
    path, _, names = spec.partition(":")
    rename = dict(item.split("=", 1) for item in names.split(",")) if names else None
    rows = []
    for row in json.load(open(path))["rows"]:
        if rename is None or row["method"] in rename:
            rows.append(dict(row, method=(rename or {}).get(row["method"], row["method"])))
    return rows


def tables(rows, baseline="cca", margin=0.01):
    cells, methods = {}, []
    for row in rows:
        cells[(row["problem"], row["rate"], row["method"])] = row
        if row["method"] not in methods:
            methods.append(row["method"])
    regimes = sorted({r["problem"] for r in rows}, key=lambda p: (_held_out(p), p))
    rates = sorted({r["rate"] for r in rows if r["rate"] > 0})
    out = ["| regime | rate | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    below = dict.fromkeys(methods, 0)
    for p in regimes:
        for rate in rates:
            base = cells.get((p, rate, baseline), {}).get("auroc")
            line = []
            for m in methods:
                value = cells.get((p, rate, m), {}).get("auroc")
                if value is None:
                    line.append("-")
                    continue
                worse = m != baseline and base is not None and value < base - margin
                below[m] += worse
                line.append(("< " if worse else "") + "%.3f" % value)
            out.append("| %s%s | %d%% | %s |" % (_name(p), " *" if _held_out(p) else "", round(100 * rate),
                                                 " | ".join(line)))
    out.append("")
    out.append("Cells below %s by more than %.2f: %s" % (
        baseline, margin, ", ".join("%s %d" % (m, below[m]) for m in methods if m != baseline)))
    out += ["", "Clean data (0 %): share of pairs flagged by the default decision", "",
            "| regime | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for p in regimes:
        line = []
        for m in methods:
            value = cells.get((p, 0.0, m), {}).get("clean_flagged")
            line.append("-" if value is None else "%.1f%%" % (100 * value))
        out.append("| %s%s | %s |" % (_name(p), " *" if _held_out(p) else "", " | ".join(line)))
    return "\n".join(out)


def _name(problem):
    return problem.split(":", 1)[-1]


def _held_out(problem):
    regime = REGIMES.get(_name(problem))
    return bool(regime and regime.held_out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="path/to/results.json[:old=new,...]")
    p.add_argument("--baseline", default="cca")
    args = p.parse_args()
    rows = [row for spec in args.results for row in load(spec)]
    print(tables(rows, args.baseline))


if __name__ == "__main__":
    main()
