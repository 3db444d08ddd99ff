#!/usr/bin/env bash
# Reproduce the shipped bundles from the public data, on a CPU: the whole-field model
# (models/whole-field), then the cell-mode model that is the shipped default (models/default).
#   tools/reproduce.sh [DATA_ROOT] [WHOLE_FIELD_OUT]
# Measured for the whole-field part: 23 min wall on the shared 2-core machine, giving a byte-identical model.tflite
# (training is seeded and deterministic on CPU). SEED 0 is the shipped run's seed.
# RUNS, TABLE and LEUKOSCOPE_TOOLS_CACHE move the work folders (default under .run/).
# Run it from the repository root: the tools' default paths (models/...) are relative to it.
set -euo pipefail
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
# Cell mode (issue 8) on the same split: crops of every detected white cell, three seeds,
# cross-source runs (three seeds each way), the comparison report, then the cells bundle.
# About 75 min more on the shared 2-core machine. CELLS=0 skips it.
if [ "${CELLS:-1}" = 1 ]; then
    CELLS_OUT=${CELLS_OUT:-models/default}
    CACHE=${CELL_CACHE:-build/cells}
    "$TOOLS" cells dataset "$DATA" --split "$OUT/split.csv" --out "$CACHE"
    for s in 0 1 2; do
        "$TOOLS" cells train "$CACHE" --seed "$s" --out "$CACHE/runs/both-s$s"
    done
    for s in 0 1 2; do
        "$TOOLS" cells train "$CACHE" --seed "$s" --sources all-idb1 --epoch-size 0 \
            --cross-splits test --out "$CACHE/runs/idb1-s$s"
        "$TOOLS" cells train "$CACHE" --seed "$s" --sources kaggle-all --out "$CACHE/runs/kaggle-s$s"
    done
    # Ablation (validation only): lower-magnification blur, against seed 1 without it.
    "$TOOLS" cells train "$CACHE" --seed 1 --lowmag 0.3 --out "$CACHE/ablation/lowmag-s1"
    "$TOOLS" cells compare "$DATA" "$CACHE" --runs "$CACHE/runs" --whole-field "$OUT" \
        --ablations "$CACHE/ablation" --out "$CACHE/report/COMPARE.md"
    "$TOOLS" cells ship "$DATA" "$CACHE" --runs "$CACHE/runs" \
        --compare "$CACHE/report/COMPARE.md" --out "$CELLS_OUT"
fi
echo "reproduced $OUT${CELLS_OUT:+ and $CELLS_OUT} in $(( ($(date +%s) - start) / 60 )) min"
