"""Benchmark results as JSON, markdown tables and plotly figures."""
import json
import os
import platform
import sys
from collections import defaultdict

import numpy as np

from fiftyone_ncl.utils import to_jsonable

METRICS = ("auroc", "ap", "precision_at_k", "best_f1", "f1", "flagged", "precision", "recall", "clean_flagged",
           "estimated_rate", "correction_accuracy", "rsum", "i2t_r1", "seconds")


def machine():
    """A one-line description of where the benchmark ran."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return "%s, %d cores (%d torch threads), %s, Python %s, torch %s" % (
        cpu, os.cpu_count(), torch.get_num_threads(), gpu, platform.python_version(), torch.__version__,
    )


def aggregate(rows):
    """Mean and sd over seeds per (problem, kind, rate, method)."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["problem"], r["kind"], r["rate"], r["method"])].append(r)
    out = []
    for (problem, kind, rate, method), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3])):
        entry = {"problem": problem, "kind": kind, "rate": rate, "method": method, "seeds": len(rs),
                 "realised_rate": float(np.mean([r["realised_rate"] for r in rs]))}
        for m in METRICS:
            vals = [r.get(m) for r in rs if r.get(m) is not None]
            if vals:
                entry[m] = float(np.mean(vals))
                entry[m + "_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        chosen = [r["chosen"] for r in rs if r.get("chosen")]
        if chosen:  # method="auto": what it ran, over the seeds
            entry["chosen"] = ", ".join("%s x%d" % (name, chosen.count(name)) for name in sorted(set(chosen)))
        out.append(entry)
    return out


def _fmt(entry, metric, digits=3):
    if metric not in entry:
        return "-"
    if entry.get("seeds", 1) > 1:
        return "%.*f ± %.*f" % (digits, entry[metric], digits, entry[metric + "_sd"])
    return "%.*f" % (digits, entry[metric])


def markdown(summary, command, machine_line):
    """Markdown tables: AUROC per rate for each (problem, kind), then a
    detailed table per (problem, kind) at every rate."""
    if isinstance(command, str):
        lines = ["Command: `%s`" % command, ""]
    else:  # merged parts: every command that produced a row
        lines = ["Commands (one per part, merged):", ""] + ["* `%s`" % c for c in command] + [""]
    lines += ["Machine: %s" % machine_line, ""]
    by = defaultdict(list)
    for e in summary:
        by[(e["problem"], e["kind"])].append(e)
    clean_rows = {(e["problem"], e["method"]): e for e in summary if e["kind"] == "none"}
    for (problem, kind), entries in sorted(by.items()):
        if kind == "none":
            continue
        rates = sorted({e["rate"] for e in entries})
        methods = list(dict.fromkeys(e["method"] for e in entries))
        cell = {(e["method"], e["rate"]): e for e in entries}
        realised = {r: np.mean([e["realised_rate"] for e in entries if e["rate"] == r]) for r in rates}
        lines.append("### %s, %s noise: detection AUROC (mean ± sd over seeds)" % (problem, kind))
        lines.append("")
        lines.append("| method | " + " | ".join("%d%% (realised %.0f%%)" % (round(100 * r), 100 * realised[r]) for r in rates) + " |")
        lines.append("|---" * (len(rates) + 1) + "|")
        for m in methods:
            lines.append("| %s | " % m + " | ".join(_fmt(cell[(m, r)], "auroc") if (m, r) in cell else "-" for r in rates) + " |")
        lines.append("")
        lines.append("Details (AP = AUPRC; P@k = precision at k = F1 flagging the true number of noisy pairs; best F1 over "
                     "every cut; F1 of the decision at the threshold; correction accuracy of suggestions; retrieval rSum "
                     "on the clean test split; seconds per run):")
        lines.append("")
        lines.append("| rate | method | AP | P@k | best F1 | F1 | correction | rSum | i2t R@1 | s |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in rates:
            for m in methods:
                e = cell.get((m, r))
                if e is None:
                    continue
                lines.append("| %d%% | %s | %s | %s | %s | %s | %s | %s | %s | %.0f |" % (
                    round(100 * r), m, _fmt(e, "ap"), _fmt(e, "precision_at_k"), _fmt(e, "best_f1"), _fmt(e, "f1"),
                    _fmt(e, "correction_accuracy"),
                    _fmt(e, "rsum", 1), _fmt(e, "i2t_r1", 1), e.get("seconds", 0)))
        for m in methods:
            e = clean_rows.get((problem, m))
            if e is not None and "rsum" in e:
                lines.append("| 0%% | %s | - | - | - | - | - | %s | %s | %.0f |" % (m, _fmt(e, "rsum", 1), _fmt(e, "i2t_r1", 1), e.get("seconds", 0)))
        lines.append("")
        lines += _decision_table(problem, methods, rates, cell, clean_rows)
        lines += _auto_table(rates, methods, cell, clean_rows, problem)
    lines += suite_tables(summary)
    return "\n".join(lines)


def _decision_table(problem, methods, rates, cell, clean_rows):
    """The default decision per rate: how many pairs it flags, how many of
    them are right, and the estimated rate against the true one."""
    lines = ["Decisions (the run's default decision; clean flagged = share of the matched pairs flagged; "
             "estimate = estimated mismatch rate):", "",
             "| rate | method | flagged | precision | recall | F1 | clean flagged | estimate |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted({0.0, *rates}):
        for m in methods:
            e = cell.get((m, r)) or (clean_rows.get((problem, m)) if r == 0.0 else None)
            if e is None or "flagged" not in e:
                continue
            lines.append("| %d%% | %s | %s | %s | %s | %s | %s | %s |" % (
                round(100 * r), m, _fmt(e, "flagged", 0), _fmt(e, "precision"), _fmt(e, "recall"), _fmt(e, "f1"),
                _fmt(e, "clean_flagged"), _fmt(e, "estimated_rate")))
    return lines + [""]


def _auto_table(rates, methods, cell, clean_rows, problem):
    """What ``method="auto"`` ran at each rate (seeds counted)."""
    rows = []
    for r in sorted({0.0, *rates}):
        for m in methods:
            e = cell.get((m, r)) or (clean_rows.get((problem, m)) if r == 0.0 else None)
            if e is not None and e.get("chosen"):
                rows.append("| %d%% | %s | %s |" % (round(100 * r), m, e["chosen"]))
    if not rows:
        return []
    return ["method='auto' chose (seeds):", "", "| rate | row | chose |", "|---|---|---|"] + rows + [""]


def suite_tables(summary, baseline="cca"):
    """For the varied regime suite (:mod:`fiftyone_ncl.datasets.regimes`): one AUROC
    table over every regime and rate, a cell marked ``<`` where a method
    ranks below ``baseline`` by more than 0.01, and the share of pairs each
    method flags on clean data. Empty when no regime was run."""
    from fiftyone_ncl.datasets.regimes import REGIMES

    def regime(problem):
        return REGIMES.get(problem.split(":", 1)[-1])

    entries = [e for e in summary if regime(e["problem"]) is not None]
    if not entries:
        return []

    methods = list(dict.fromkeys(e["method"] for e in entries))
    cell = {(e["problem"], e["rate"], e["method"]): e for e in entries}
    problems = sorted({e["problem"] for e in entries}, key=lambda p: (regime(p).held_out, p))
    rates = sorted({e["rate"] for e in entries if e["rate"] > 0})
    lines = ["### The regime suite: detection AUROC (`<`: below %s by more than 0.01; * held out)" % baseline, "",
             "| regime | rate | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
    below = defaultdict(int)
    for p in problems:
        name = regime(p).name + (" *" if regime(p).held_out else "")
        for r in rates:
            base = cell.get((p, r, baseline), {}).get("auroc")
            row = []
            for m in methods:
                e = cell.get((p, r, m))
                if e is None or "auroc" not in e:
                    row.append("-")
                    continue
                worse = base is not None and m != baseline and e["auroc"] < base - 0.01
                below[m] += worse
                row.append(("< " if worse else "") + "%.3f" % e["auroc"])
            lines.append("| %s | %d%% | %s |" % (name, round(100 * r), " | ".join(row)))
    lines += ["", "Cells below %s: %s" % (baseline, ", ".join("%s %d" % (m, below[m]) for m in methods if m != baseline)),
              ""]
    clean = [(p, m, cell.get((p, 0.0, m))) for p in problems for m in methods]
    if any(e is not None for _, _, e in clean):
        lines += ["### The regime suite, clean data: share of pairs flagged by the default decision", "",
                  "| regime | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        for p in problems:
            vals = [cell.get((p, 0.0, m)) for m in methods]
            lines.append("| %s | %s |" % (regime(p).name, " | ".join(
                "-" if e is None or "clean_flagged" not in e else "%.1f%%" % (100 * e["clean_flagged"]) for e in vals)))
        lines.append("")
    return lines


def figures(rows, summary, hist_rate=0.4):
    """Plotly figures: AUROC vs noise rate per method for each (data set,
    noise kind), and confidence histograms of clean vs noisy pairs at
    ``hist_rate``."""
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:  # a bare machine (the GPU check): tables only
        return None

    figs = []
    by = defaultdict(list)
    for e in summary:
        if e["kind"] != "none":
            by[(e["problem"], e["kind"])].append(e)
    for (problem, kind), entries in sorted(by.items()):
        fig = go.Figure()
        for method in dict.fromkeys(e["method"] for e in entries):
            pts = sorted((e["rate"], e["auroc"], e.get("auroc_sd", 0)) for e in entries if e["method"] == method and "auroc" in e)
            if not pts:
                continue
            fig.add_trace(go.Scatter(
                x=[100 * p[0] for p in pts], y=[p[1] for p in pts], name=method, mode="lines+markers",
                error_y=dict(type="data", array=[p[2] for p in pts], visible=True),
            ))
        fig.update_layout(title="%s, %s noise: detection AUROC" % (problem, kind), xaxis_title="noise rate (%)",
                          yaxis_title="AUROC", template="plotly_white")
        figs.append(fig)

    hist = defaultdict(list)
    for r in rows:
        if "_confidence" in r and abs(r["rate"] - hist_rate) < 1e-9:
            hist[(r["problem"], r["kind"])].append(r)
    for (problem, kind), rs in sorted(hist.items()):
        fig = make_subplots(rows=1, cols=len(rs), subplot_titles=[r["method"] for r in rs])
        for i, r in enumerate(rs, start=1):
            conf, noisy = r["_confidence"], r["_noisy"]
            fig.add_trace(go.Histogram(x=conf[~noisy], name="clean", marker_color="#2e7d32", opacity=0.6,
                                       nbinsx=40, showlegend=i == 1), row=1, col=i)
            fig.add_trace(go.Histogram(x=conf[noisy], name="noisy", marker_color="#c62828", opacity=0.6,
                                       nbinsx=40, showlegend=i == 1), row=1, col=i)
        fig.update_layout(barmode="overlay", title="%s, %s noise %d%%: confidence of clean vs noisy pairs"
                          % (problem, kind, round(100 * hist_rate)), template="plotly_white", height=380)
        figs.append(fig)
    return figs


def write_figures(figs, path):
    """All figures in one standalone HTML file (plotly.js inlined once, so it
    opens offline); nothing without plotly (``figs`` None)."""
    if figs is None:
        return None
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    with open(path, "w") as f:
        f.write("<html><head><meta charset='utf-8'><title>fiftyone-ncl benchmark</title></head><body>\n")
        f.write("\n".join(parts))
        f.write("\n</body></html>\n")
    return path


def write_results(rows, out_dir, command, extra=None):
    """Writes ``results.json``, ``results.md`` and the figures to ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    summary = aggregate(rows)
    machine_line = machine()
    plain = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(to_jsonable({"command": command, "machine": machine_line, "argv": sys.argv, "rows": plain,
                               "summary": summary, **(extra or {})}), f, indent=1)
    md = markdown(summary, command, machine_line)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md + "\n")
    write_figures(figures(rows, summary), os.path.join(out_dir, "figures.html"))
    return md


def merge_results(parts, out_dir):
    """Merges the ``results.json`` of grid runs made in parts (e.g. cheap
    methods at every rate, trained ones at some) into one ``results.json``,
    ``results.md`` and AUROC figure under ``out_dir``. Each part's command
    and machine are kept; a row present in two parts (same data set, kind,
    rate, seed and method) is an error rather than silently averaged twice."""
    rows, commands, machines, seen = [], [], [], {}
    for part in parts:
        path = os.path.join(part, "results.json") if os.path.isdir(part) else part
        if not os.path.exists(path):
            raise FileNotFoundError("no benchmark results at %s" % path)
        with open(path) as f:
            result = json.load(f)
        commands.append(result["command"])
        machines.append(result["machine"])
        for r in result["rows"]:
            key = (r["problem"], r["kind"], r["rate"], r["seed"], r["method"])
            if key in seen:
                raise ValueError("%s and %s both hold the run %s" % (seen[key], path, key))
            seen[key] = path
            rows.append(r)
    os.makedirs(out_dir, exist_ok=True)
    summary = aggregate(rows)
    machine_line = "; ".join(dict.fromkeys(machines))
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(to_jsonable({"commands": commands, "machine": machine_line, "parts": list(parts),
                               "rows": rows, "summary": summary}), f, indent=1)
    md = markdown(summary, commands, machine_line)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md + "\n")
    # confidence arrays are not kept in JSON: the merged figures are the AUROC curves
    write_figures(figures(rows, summary), os.path.join(out_dir, "figures.html"))
    return md
