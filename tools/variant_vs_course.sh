#!/usr/bin/env bash
# One multi-reward variant against a course run's own baseline (for a change that leaves the no-reward
# baseline as it is, e.g. --center-rewards): train the variant on the course's data and rewards, measure its
# reward knob, and the paired per-edit difference at (5, 5, 5) against the course's baseline edits.
#
#   bash tools/variant_vs_course.sh COURSE_DIR OUT SEED [train flags...]
#   e.g. bash tools/variant_vs_course.sh runs/c18-s0 /tmp/centred 0 --center-rewards
set -euo pipefail
R=${REWARDEDIT:-.venv/bin/rewardedit}; PY=${PYTHON:-.venv/bin/python}
C=$1; OUT=$2; SEED=$3; shift 3
[ -d "$OUT/mr/model" ] || $R train --profile toy-cpu --stage 2 --data "$C/toy-data" \
    --rewards "$C/rewards/RewardEdit_toy.json" --out "$OUT/mr" --seed "$SEED" --no-progress "$@" | tail -1
$R knob --model "$OUT/mr/model" --bench "$C/toy-bench" --out "$OUT/knob" --seed "$SEED" --no-progress | grep "^|"
$PY "$(dirname "$0")/paired_difference.py" "$OUT/knob/F5-P5-Q5" "$C/eval/baseline"
