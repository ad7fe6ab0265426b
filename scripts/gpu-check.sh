#!/usr/bin/env bash
# The GPU check of issue 20, in one run (about 7 minutes on an H200):
#
#   1. the core and the bench import without FiftyOne
#   2. CUDA correctness tests (tests/unit/test_cuda.py + the training helpers)
#   3. heads epochs (InfoNCE / CRCL / DisNCL) over 100k and 1M x 512-d pairs
#      on CUDA with CUDA graphs, GPU busy share (NVML; profiler at 100k)
#   4. the same at 100k without CUDA graphs (what the graphs buy)
#   5. bf16 vs fp32 detection AUROC, open_clip images/s (random weights)
#   6. fmnist-captions at full size (60,000 photos, 40 % look-alike swaps,
#      every method + oracle, one seed), if the time left allows
#
# Needs the git-ignored folder gpu-data/ (carry it): Fashion-MNIST's four
# .gz files, the precomputed MiniLM caption vectors (fmnist-minilm.npz,
# scripts/build-caption-vectors.py) and open_clip wheels (whl/). Build it with
#   bash scripts/gpu-check.sh --prepare        (on a machine with the Debian
#                                               package, sentence-transformers and pip)
# Outputs (at most 8 files) go to $OUT; the summary prints last.
# CPU smoke test with small sizes (CUDA parts skip):
#   NCL_GPU_CHECK_SMALL=1 bash scripts/gpu-check.sh
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=$ROOT/gpu-data

if [ "${1:-}" = "--prepare" ]; then
  set -e
  PY=${PYTHON:-.venv/bin/python}
  mkdir -p "$DATA/fashion-mnist" "$DATA/whl"
  cp /usr/share/datasets/fashion-mnist/*.gz "$DATA/fashion-mnist/"
  "$PY" scripts/build-caption-vectors.py "$DATA/fmnist-minilm.npz"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$DATA/whl" open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
  grep -qx '/gpu-data/' .git/info/exclude 2>/dev/null || echo '/gpu-data/' >> .git/info/exclude
  du -sh "$DATA"
  exit 0
fi

OUT=${OUT:-/tmp/ncl-gpu-check}
mkdir -p "$OUT"
SMALL=${NCL_GPU_CHECK_SMALL:-0}
BUDGET=${NCL_GPU_CHECK_BUDGET:-450}  # seconds for everything; the fmnist part runs only if >= 150 s are left
PY=${PYTHON:-python3}
LOG=$OUT/gpu-check.log
WORK=$(mktemp -d /tmp/ncl-gpu-check-XXXX)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export FIFTYONE_NCL_FMNIST_DIR=$DATA/fashion-mnist
export FIFTYONE_NCL_CAPTION_VECTORS=$DATA/fmnist-minilm.npz
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
: > "$LOG"
: > "$WORK/stages.tsv"

# stage NAME TIMEOUT_S COMMAND...: runs it with a time limit, logs it, records status and seconds
stage() {
  local name=$1 limit=$2
  shift 2
  local t0 rc
  t0=$(date +%s)
  echo "=== $name (limit ${limit}s, $(left)s of the budget left) ===" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >> "$WORK/stages.tsv"
  echo "=== $name: exit $rc in $(($(date +%s) - t0)) s ===" | tee -a "$LOG"
}

if [ "$SMALL" = 1 ]; then
  DEVICE=cpu; PAIRS="3000"; PAIRS_BUSY=3000; EMBED=24; EMBED_BATCH=8; PARITY=600
  GRID=(--profile quick --set "*.epochs=1" "crcl.stages=(1,)" "crcl.warmup_epochs=0" "disncl.epochs=2"
        "disncl.warmup_epochs=1" "disncl.mi_diagnostics=False")
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
  DEVICE=cuda; PAIRS="100000 1000000"; PAIRS_BUSY=100000; EMBED=4000; EMBED_BATCH=256; PARITY=5000
  GRID=(--profile full)
fi

# 0. the machine; open_clip from the carried wheels when it is missing
{
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  small: $SMALL  device: $DEVICE"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
} 2>&1 | tee -a "$LOG"
if ! "$PY" -c "import open_clip" 2> /dev/null && ls "$DATA"/whl/*.whl > /dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$DATA"/whl/*.whl 2>&1 | tail -2 | tee -a "$LOG"
  export PYTHONPATH=$PYTHONPATH:$WORK/site
fi

# 1. the core rule: everything this script runs imports without FiftyOne
stage imports 60 "$PY" - << 'EOF'
import importlib, sys
mods = ["fiftyone_ncl.core.training", "fiftyone_ncl.core.alignment", "fiftyone_ncl.core.methods.crcl",
        "fiftyone_ncl.core.methods.disncl", "fiftyone_ncl.core.registry", "fiftyone_ncl.bench.speed",
        "fiftyone_ncl.bench.cli", "fiftyone_ncl.bench.problems", "fiftyone_ncl.bench.runner", "fiftyone_ncl.cli"]
for m in mods:
    importlib.import_module(m)
assert "fiftyone" not in sys.modules, "FiftyOne was imported"
print("imports OK without FiftyOne:", ", ".join(m.rsplit(".", 1)[-1] for m in mods))
for name in ("open_clip", "sentence_transformers", "fiftyone"):
    try:
        importlib.import_module(name)
        print("  %s: installed" % name)
    except Exception as e:
        print("  %s: absent (%s)" % (name, type(e).__name__))
EOF

# 2. CUDA correctness (they skip without CUDA)
stage cuda-tests 200 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" tests/unit/test_cuda.py \
  tests/unit/test_training.py -rs

# 3. epochs with CUDA graphs (the default on CUDA), busy share
stage epochs 240 "$PY" -m fiftyone_ncl.cli bench speed --sizes --epoch-pairs $PAIRS \
  --epoch-methods infonce crcl disncl --device $DEVICE --busy --one-process --out "$WORK/speed-epochs"
cp "$WORK/speed-epochs/speed.json" "$OUT/speed-epochs.json" 2> /dev/null

# 4. the same without CUDA graphs, at one size
if [ "$DEVICE" = cuda ]; then
  stage epochs-no-graphs 120 "$PY" -m fiftyone_ncl.cli bench speed --sizes --epoch-pairs $PAIRS_BUSY \
    --epoch-methods infonce crcl disncl --device $DEVICE --cuda-graphs off --one-process --out "$WORK/speed-nographs"
  cp "$WORK/speed-nographs/speed.json" "$OUT/speed-nographs.json" 2> /dev/null
fi

# 5. AMP parity and embedding throughput
stage parity-embedding 150 "$PY" -m fiftyone_ncl.cli bench speed --sizes --epoch-methods --device $DEVICE \
  --amp-parity --parity-pairs $PARITY --embed-images $EMBED --embed-batch $EMBED_BATCH --out "$WORK/speed-extra"
cp "$WORK/speed-extra/speed.json" "$OUT/speed-extra.json" 2> /dev/null

# 6. fmnist-captions at full size, one rate and seed, every method
if [ "$(left)" -ge 150 ] || [ "$SMALL" = 1 ]; then
  LIMIT=$(($(left) - 15)); [ "$LIMIT" -lt 120 ] && LIMIT=600
  stage fmnist-full "$LIMIT" "$PY" -m fiftyone_ncl.cli bench grid "${GRID[@]}" --problems fmnist-captions \
    --kinds category --rates 0.4 --seed-list 0 --out "$WORK/fmnist"
  cp "$WORK/fmnist/results.md" "$OUT/fmnist-results.md" 2> /dev/null
  cp "$WORK/fmnist/results.json" "$OUT/fmnist-results.json" 2> /dev/null
else
  echo "fmnist-full skipped: $(left) s of the budget left" | tee -a "$LOG"
  printf 'fmnist-full\tskipped\t0\n' >> "$WORK/stages.tsv"
fi

# the summary, last (the run's reply carries the end of the output)
"$PY" scripts/gpu_check_summary.py "$OUT" "$WORK/stages.tsv" "$(($(date +%s) - START))" 2>&1 | tee "$OUT/summary.md"
rm -rf "$WORK"
