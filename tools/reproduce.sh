#!/usr/bin/env bash
# Reproduce the shipped bundle (models/default) from the public data, on a CPU.
#   tools/reproduce.sh [DATA_ROOT] [OUT_BUNDLE]     (about 30-40 min on 2 cores)
# SEED is the seed of the shipped run (the best of compare's seeds by validation AUC).
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-models/default}
SEED=${SEED:-0}
TOOLS=${TOOLS:-.venv/bin/leukoscope-tools}
TABLE=.run/split.csv
RUNS=.run/runs
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
echo "reproduced $OUT in $(( ($(date +%s) - start) / 60 )) min"
