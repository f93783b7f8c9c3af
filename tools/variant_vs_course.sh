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
$PY - "$OUT" "$C" <<'PY'
import sys
from rewardedit_lib import evaluate as E
out, course = sys.argv[1:]
a, b = E.read_results(out + "/knob/F5-P5-Q5"), E.read_results(course + "/eval/baseline")
for p in ("following", "preserving", "quality"):
    d = E.paired_difference(a, b, p)
    print(f"multi-reward - baseline, {p}: {d['yes_diff']:+.1f} [{d['yes_diff_ci'][0]:+.1f}, {d['yes_diff_ci'][1]:+.1f}]")
PY
