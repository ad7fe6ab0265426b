#!/usr/bin/env bash
# The full-size benchmark on fmnist-captions (60,000 photos); the README's
# full-size tables are the parts below (each merged results.md lists them):
# one grid part per (noise kind, rate, seed), in two lanes of one
# torch thread each (on 2 cores two one-thread lanes finish sooner than one
# two-thread lane), then one merged table per noise kind. About 50 minutes
# per part on 2 CPU cores; a part that already has results is skipped, so an
# interrupted run resumes where it stopped.
#
#   bash scripts/bench-full-fmnist.sh [OUT]      (default bench-results/full)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench-results/full}"
mkdir -p "$OUT"

part() {  # part KIND RATE SEED [TAG] [--methods ...]: one grid part into $OUT
    local kind="$1" rate="$2" seed="$3"; shift 3
    local name="fmnist-$kind-r$rate-s$seed"
    # a TAG names a part that adds methods to a cell another part already ran
    if [[ $# -gt 0 && "$1" != --* ]]; then name="$name-$1"; shift; fi
    [[ -f "$OUT/$name/results.json" ]] && return 0
    OMP_NUM_THREADS=1 .venv/bin/fiftyone-ncl bench --profile full --problems fmnist-captions \
        --kinds "$kind" --rates "$rate" --seed-list "$seed" "$@" --out "$OUT/$name" >"$OUT/log-$name.txt" 2>&1
}

# Most informative parts first: look-alike swaps at 40 and 60 % with every
# method (two seeds), clean training (the retrieval reference), the baselines
# at 20 and 80 % and on random swaps; the third seed at 40 / 60 %, then DisNCL
# at 20 % (a tagged part beside the baselines' part of that cell).
lane_a() {
    part category 0.4 0
    part category 0.4 1
    part random 0 0 --methods cosine
    part random 0.4 0 --methods cosine gmm oracle
    part category 0.4 2
    part category 0.2 0 disncl --methods disncl
}

lane_b() {
    part category 0.6 0
    part category 0.6 1
    # at 20 % CRCL alone takes about 35 minutes here; at 80 % every method that
    # learns from the noisy pairs falls below 0.5 already at 6,000 photos
    part category 0.2 0 --methods cosine gmm oracle
    part category 0.8 0 --methods cosine gmm oracle
    part category 0.6 2
}

lane_a & a=$!
lane_b & b=$!
wait $a
wait $b
merge() {  # merge NAME: the finished parts of one noise kind
    local parts=()
    for d in "$OUT"/fmnist-"$1"-r*; do [[ -f "$d/results.json" ]] && parts+=("$d"); done
    if [[ ${#parts[@]} -gt 0 ]]; then
        .venv/bin/fiftyone-ncl bench merge "${parts[@]}" --out "$OUT/fmnist-$1"
    fi
}
merge category
merge random
