#!/usr/bin/env bash
# The full-size look-alike benchmark (fmnist-captions, 60k photos) as it was
# run for the README: parts in two lanes of one torch thread each (two lanes
# of one thread finish sooner than one lane of two on a 2-core machine), then
# one merged table. Hours on 2 CPU cores; a part that already has results is
# skipped, so an interrupted run resumes.
#
#   bash scripts/bench-full-fmnist.sh [OUT]      (default bench-results/full)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench-results/full}"
BENCH=(.venv/bin/fiftyone-ncl bench --profile full --problems fmnist-captions)
mkdir -p "$OUT"

part() {  # part NAME ARGS...: one grid part into $OUT/NAME
    local name="$1"; shift
    [[ -f "$OUT/$name/results.json" ]] && return 0
    OMP_NUM_THREADS=1 "${BENCH[@]}" "$@" --out "$OUT/$name" >"$OUT/log-$name.txt" 2>&1
}

methods() {  # crcl and disncl at one rate and seed
    part "fmnist-category-methods-r$1-s$2" --methods crcl disncl --kinds category --rates "$1" --seed-list "$2"
}

lane_a() {
    part fmnist-category-r0.4-s0 --kinds category --rates 0.4 --seed-list 0
    part fmnist-category-base-r0.2-0.8-s0 --methods cosine gmm oracle --kinds category --rates 0.2 0.8 --seed-list 0
    part fmnist-category-base-s1-2 --methods cosine gmm oracle --kinds category --rates 0.2 0.4 0.6 0.8 --seed-list 1 2
    part fmnist-random-base-s0 --methods cosine gmm oracle --kinds random --rates 0 0.4 --seed-list 0
    methods 0.2 0
    methods 0.4 1
    methods 0.6 2
}

lane_b() {
    part fmnist-category-r0.6-s0 --kinds category --rates 0.6 --seed-list 0
    methods 0.8 0
    methods 0.6 1
    methods 0.4 2
}

lane_a & a=$!
lane_b & b=$!
wait $a && wait $b
.venv/bin/fiftyone-ncl bench merge "$OUT"/fmnist-category-* --out "$OUT/fmnist-category"
