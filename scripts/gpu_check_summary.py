"""The summary table of scripts/gpu-check.sh (markdown, printed last):

    python scripts/gpu_check_summary.py OUT_DIR STAGES_TSV TOTAL_SECONDS
"""
import json
import os
import sys

TARGETS = {"infonce": 3.0, "crcl": 3.0, "disncl": 6.0}  # s per epoch over 1M pairs on the GPU (issue 20)


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _pct(x):
    return "-" if x is None else "%.0f%%" % (100 * x)


def main(out, stages_path, total):
    lines = ["# GPU check summary (issue 20)", ""]
    lines.append("| stage | exit | s |")
    lines.append("|---|---|---|")
    try:
        with open(stages_path) as f:
            for row in f:
                name, rc, sec = (row.rstrip("\n").split("\t") + ["", ""])[:3]
                lines.append("| %s | %s | %s |" % (name, rc, sec))
    except OSError:
        pass
    lines.append("| total | | %s |" % total)
    lines.append("")

    nographs = {}
    ng = _load(os.path.join(out, "speed-nographs.json"))
    for row in (ng or {}).get("epochs", []):
        if "seconds" in row:
            nographs[(row["method"], row["pairs"])] = row["seconds"]
    sp = _load(os.path.join(out, "speed-epochs.json"))
    if sp:
        lines.append("Heads epochs (`%s`):" % sp.get("command", ""))
        lines.append("")
        lines.append("| method | pairs | device | s | vs InfoNCE | no graphs s | GPU busy NVML | busy profiler "
                     "| graphs (captures/replays) | target |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for row in sp.get("epochs", []):
            if "seconds" not in row:
                lines.append("| %s | | | ERROR: %s | | | | | | |" % (row.get("method"), str(row.get("error"))[:200]))
                continue
            g = row.get("cuda_graphs") or {}
            graphs = ("FAILED: %s" % g["failure"][:80]) if g.get("failure") else (
                "%d/%d" % (g.get("captures", 0), g.get("replays", 0)) if g else "-")
            target = ""
            if row["pairs"] >= 1_000_000 and row.get("device", "").startswith("cuda") and row["method"] in TARGETS:
                t = TARGETS[row["method"]]
                target = "<= %.0f s: %s" % (t, "met" if row["seconds"] <= t else "MISSED")
            busy = row.get("gpu_busy_nvml")
            if busy is not None and row.get("device", "").startswith("cuda"):
                target += ("; " if target else "") + "busy >= 70%%: %s" % ("met" if busy >= 0.7 else "MISSED")
            ngs = nographs.get((row["method"], row["pairs"]))
            lines.append("| %s | %d | %s | %.2f | %s | %s | %s | %s | %s | %s |" % (
                row["method"], row["pairs"], row.get("device"), row["seconds"],
                "%.2fx" % row["vs_infonce"] if row.get("vs_infonce") else "-",
                "%.2f" % ngs if ngs else "-", _pct(busy), _pct(row.get("gpu_busy_profiler")), graphs, target))
        lines.append("")
        for row in sp.get("epochs", []):
            if row.get("top_host_ops"):
                lines.append("top host ops, %s %d pairs (profiler): %s" % (
                    row["method"], row["pairs"], ", ".join("%s %.2fs x%d" % tuple(op) for op in row["top_host_ops"][:5])))
        lines.append("")

    ex = _load(os.path.join(out, "speed-extra.json")) or {}
    par = ex.get("amp_parity") or {}
    if par.get("rows"):
        lines.append("AMP parity (synthetic, %d pairs, 40 %% noise, same seed):" % par.get("pairs", 0))
        lines.append("")
        lines.append("| method | fp32 AUROC | bf16 AUROC | diff | target |diff| <= 0.005 |")
        lines.append("|---|---|---|---|---|")
        for r in par["rows"]:
            lines.append("| %s | %.4f | %.4f | %+.4f | %s |" % (
                r["method"], r["fp32_auroc"], r["bf16_auroc"], r["diff"], "met" if abs(r["diff"]) <= 0.005 else "MISSED"))
        lines.append("")
    elif par:
        lines.append("AMP parity: %s" % (par.get("skipped") or par.get("error")))
    emb = ex.get("embedding") or {}
    if "images_per_s" in emb:
        lines.append("Embedding: open_clip %s (random weights) on %s, %d JPEGs, batch %d, %d DataLoader workers: "
                     "%.0f images/s (GPU busy %s)" % (emb["model"], emb["device"], emb["images"], emb["batch_size"],
                                                      emb["workers"], emb["images_per_s"], _pct(emb.get("gpu_busy_nvml"))))
    elif emb:
        lines.append("Embedding: %s" % (emb.get("skipped") or emb.get("error")))
    lines.append("")

    fm = _load(os.path.join(out, "fmnist-results.json"))
    if fm:
        rows = fm.get("rows") or fm.get("runs") or []
        total_s = fm.get("wall_seconds") or sum(r.get("seconds", 0) or 0 for r in rows if isinstance(r, dict))
        lines.append("fmnist-captions (`%s`): %d runs, %.0f s wall, data loading included "
                     "(target <= 300 s: %s)" % (fm.get("command", ""), len(rows), total_s,
                                                "met" if total_s <= 300 else "MISSED"))
        lines.append("")
        lines.append("| method | AUROC | AP | s |")
        lines.append("|---|---|---|---|")
        for r in rows:
            if isinstance(r, dict) and "method" in r:
                lines.append("| %s | %s | %s | %.0f |" % (
                    r["method"], "%.4f" % r["auroc"] if r.get("auroc") is not None else "-",
                    "%.4f" % r["ap"] if r.get("ap") is not None else "-", r.get("seconds", 0) or 0))
        lines.append("")
    text = "\n".join(lines)
    print(text)


if __name__ == "__main__":
    main(*sys.argv[1:4])
