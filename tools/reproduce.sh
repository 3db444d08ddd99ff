#!/usr/bin/env bash
# Reproduce the shipped bundles from the public data, on a CPU: the whole-field model
# (models/whole-field), then the cell-mode runs and reports (issue 13; SHIP=1 replaces models/default).
#   tools/reproduce.sh [DATA_ROOT] [WHOLE_FIELD_OUT]
# Measured for the whole-field part: 23 min wall on the shared 2-core machine, giving a byte-identical model.tflite
# (training is seeded and deterministic on CPU). SEED 0 is the shipped run's seed.
# RUNS, TABLE and LEUKOSCOPE_TOOLS_CACHE move the work folders (default under .run/).
# Run it from the repository root: the tools' default paths (models/...) are relative to it.
set -euo pipefail
# Training is seeded and gives the same weights run after run on one machine. Across CPUs
# the float sums differ when TensorFlow's oneDNN kernels take another instruction set
# (AVX-512 against this machine's AVX2) or another thread count, and a few epochs amplify
# that into another model. Pinned here to the development machine's: 2 threads, AVX2.
# Not yet checked on a second machine: until it is, expect the seed spread the report gives.
export TF_NUM_INTRAOP_THREADS=${TF_NUM_INTRAOP_THREADS:-2}
export TF_NUM_INTEROP_THREADS=${TF_NUM_INTEROP_THREADS:-2}
export ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-AVX2}
DATA=${1:-../shared/data}
OUT=${2:-models/whole-field}
SEED=${SEED:-0}
TOOLS=${TOOLS:-.venv/bin/leukoscope-tools}
TABLE=${TABLE:-.run/split.csv}
RUNS=${RUNS:-.run/runs}
start=$(date +%s)
"$TOOLS" dataset "$DATA" --out "$TABLE"
"$TOOLS" train --data "$DATA" --table "$TABLE" --arch thanh --seed "$SEED" --out "$RUNS/shipped"
# Cross-source runs: the same recipe trained without the source it is tested on.
"$TOOLS" train --data "$DATA" --table "$TABLE" --arch thanh --seed "$SEED" \
    --train-sources kaggle-all --out "$RUNS/cross-kaggle-all"
"$TOOLS" train --data "$DATA" --table "$TABLE" --arch thanh --seed "$SEED" \
    --train-sources all-idb1 --out "$RUNS/cross-all-idb1"
"$TOOLS" quantize "$RUNS/shipped" --data "$DATA" --table "$TABLE"
"$TOOLS" bundle "$RUNS/shipped" --data "$DATA" --table "$TABLE" \
    --cross "$RUNS/cross-kaggle-all" "$RUNS/cross-all-idb1" --out "$OUT"
"$TOOLS" evaluate "$OUT" "$DATA"
# Cell mode (issues 8 and 13) on the same split: crops of every detected white cell with
# labels at their true level (ALL-IDB1 blast and other marked centres, healthy slides,
# ALL-IDB2, PBC's normal cells; kaggle-all's cells by their photo's label), then four runs
# of the shipped recipe (photo labels, PBC's hard negatives, the simulated change of lab):
# seed 0 to its best validation epoch (`both-s0-best`, the shipped cells-thanh 1.1.0) and
# three seeds to a fixed length, ending on the mean of their last 5 epochs' weights
# (`both-s*-avg`); the comparison picks the run with the best validation crop AUC.
# Leave-one-source-out runs (the earlier multiple-instance recipe, 3 epochs) and the
# per-source cell report (cell-sources.md) follow. The cell runs use ONE TensorFlow thread
# (the shipped run was trained so; two give another model). Not timed as a whole: the
# steps, timed one by one on the shared 2-core machine, add to about 100 min (the seeds
# 25-40 min each under a load of 3-8; two at a time fit the 2 cores).
# CELLS=0 skips it; SHIP=1 replaces models/default with the run the comparison picks.
if [ "${CELLS:-1}" = 1 ]; then
    CELLS_OUT=${CELLS_OUT:-models/default}
    CACHE=${CELL_CACHE:-build/cells}
    ONE=(env TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1)
    P=(--kaggle-labels photo --epoch-size 1536)
    "$TOOLS" cells dataset "$DATA" --split "$OUT/split.csv" --out "$CACHE"
    "${ONE[@]}" "$TOOLS" cells train "$CACHE" --seed 0 "${P[@]}" --epochs 10 --out "$CACHE/runs/both-s0-best"
    for s in 0 1 2; do
        "${ONE[@]}" "$TOOLS" cells train "$CACHE" --seed "$s" "${P[@]}" --epochs 14 --average-last 5 \
            --out "$CACHE/runs/both-s$s-avg"
    done
    # Leave one source out (seed 0, 3 epochs, multiple instances for kaggle-all): without
    # ALL-IDB1 (judged on all its slides), without kaggle-all (its test photos; this is
    # also "photo labels not at all"), without PBC (no blasts there: judged by the share
    # of its cells called blast). And the shipped recipe without PBC (10 epochs, the mean
    # of the last 4): another lab's normal cells never seen.
    E=(--epoch-size 1024)
    "$TOOLS" cells train "$CACHE" --seed 0 --epochs 3 "${E[@]}" --sources kaggle-all pbc \
        --out "$CACHE/loso/no-all-idb1"
    "$TOOLS" cells train "$CACHE" --seed 0 --epochs 3 "${E[@]}" --sources all-idb1 pbc \
        --cross-splits test --out "$CACHE/loso/no-kaggle-all"
    "$TOOLS" cells train "$CACHE" --seed 0 --epochs 3 "${E[@]}" --sources all-idb1 kaggle-all \
        --out "$CACHE/loso/no-pbc"
    "${ONE[@]}" "$TOOLS" cells train "$CACHE" --seed 0 "${P[@]}" --epochs 10 --average-last 4 \
        --sources all-idb1 kaggle-all --out "$CACHE/loso/photo-no-pbc"
    "$TOOLS" cells sources "$CACHE" --runs "$CACHE"/runs/both-s* "$CACHE"/loso/* \
        --fields "$CACHE"/runs/both-s* --out "$CACHE/report/cell-sources.md"
    "$TOOLS" cells compare "$DATA" "$CACHE" --runs "$CACHE/runs" --whole-field "$OUT" \
        --out "$CACHE/report/COMPARE.md"
    if [ "${SHIP:-0}" = 1 ]; then
        "$TOOLS" cells ship "$DATA" "$CACHE" --runs "$CACHE/runs" \
            --compare "$CACHE/report/COMPARE.md" --out "$CELLS_OUT"
        "$TOOLS" cells sources "$CACHE" --bundle "$CELLS_OUT" \
            --out "$CACHE/report/cell-sources-shipped.md"
        "$TOOLS" cells samples "$DATA" --bundle "$CELLS_OUT" --split "$OUT/split.csv" --write-manifest
    fi
fi
echo "reproduced $OUT${CELLS_OUT:+ and $CELLS_OUT} in $(( ($(date +%s) - start) / 60 )) min"
