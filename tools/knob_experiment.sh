#!/usr/bin/env bash
# A stage-2 recipe measured the way issue 17 asks: the multi-reward model's reward knob, the no-reward
# baseline trained alike, and the paired per-edit difference at (5, 5, 5) -- all on one toy benchmark.
#
#   SEED=0 BENCH=runs/toy-cpu/toy-bench bash tools/knob_experiment.sh OUT DATA STEPS [train flags...]
#
# DATA: a toy training folder annotated as DATA/RewardEdit_20K.json (`rewardedit toy-data --out DATA --n 3000
# --seed 0 --flaw-rates 0.5,0.5,0.5` then `rewardedit annotate --data DATA --out DATA/RewardEdit_20K.json`).
# REWARDS overrides the rewards file (a course folder's: runs/NAME/rewards/RewardEdit_toy.json).
# Extra flags go to both trainings (a recipe change applies to both models). Resumable: finished parts are kept.
set -euo pipefail
R=${REWARDEDIT:-.venv/bin/rewardedit}; PY=${PYTHON:-.venv/bin/python}
OUT=$1; DATA=$2; STEPS=$3; shift 3
SEED=${SEED:-0}; BENCH=${BENCH:-runs/toy-cpu/toy-bench}; REWARDS=${REWARDS:-$DATA/RewardEdit_20K.json}
mkdir -p "$OUT"
[ -d "$OUT/mr/model" ] || $R train --profile toy-cpu --stage 2 --data "$DATA" --rewards "$REWARDS" \
    --out "$OUT/mr" --seed "$SEED" --steps "$STEPS" --no-progress "$@" | tail -1
$R knob --model "$OUT/mr/model" --bench "$BENCH" --out "$OUT/knob" --seed "$SEED" --no-progress | grep "^|\|knob"
[ -d "$OUT/base/model" ] || $R train --profile toy-cpu --stage 2 --rewards-mode none --data "$DATA" \
    --out "$OUT/base" --seed "$SEED" --steps "$STEPS" --no-progress "$@" | tail -1
$R evaluate --model "$OUT/base/model" --bench "$BENCH" --out "$OUT/base-eval" --seed "$SEED" --no-progress | tail -2
$PY "$(dirname "$0")/paired_difference.py" "$OUT/knob/F5-P5-Q5" "$OUT/base-eval"
