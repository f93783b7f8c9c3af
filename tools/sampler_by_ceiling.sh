#!/usr/bin/env bash
# The toy sampler chosen by the ceiling, not by the comparison (RESULTS.md, seventh session):
#   1. per seed, a model trained like the baseline on flawless data (3,000 triplets at flaw rates 0, the
#      course's stage-2 recipe) is edited at each sampler setting below on that seed's course benchmark;
#   2. the setting with the highest mean yes-rate over following, preserving, quality and the seeds wins
#      (ties: the first listed);
#   3. only then the course's two models (RUNS/c*-sN/models/{baseline,multi-reward}) are compared at it: the
#      baseline evaluated, the multi-reward model's knob, and the paired difference at (5, 5, 5).
#
#   RUNS=runs PREFIX=c20 SEEDS="0 1 2" bash tools/sampler_by_ceiling.sh OUT
#
# Resumable: finished data, models and evaluation folders are kept.
set -euo pipefail
R=${REWARDEDIT:-.venv/bin/rewardedit}; PY=${PYTHON:-.venv/bin/python}
OUT=$1; RUNS=${RUNS:-runs}; PREFIX=${PREFIX:-c20}; SEEDS=${SEEDS:-"0 1 2"}
SETTINGS=("S1:--guidance-scale 2 --image-guidance-scale 1.25 --eta 1"
          "S2:--guidance-scale 1 --image-guidance-scale 1 --eta 1"
          "S3:--guidance-scale 2 --image-guidance-scale 1.25 --eta 0"
          "S4:--guidance-scale 1 --image-guidance-scale 1 --eta 0")
mkdir -p "$OUT"
for s in $SEEDS; do
  D=$OUT/flawless-data-s$s; M=$OUT/flawless-s$s; B=$RUNS/$PREFIX-s$s/toy-bench
  [ -f "$D/seeds.json" ] || $R toy-data --out "$D" --n 3000 --seed "$s" --flaw-rates 0,0,0 --workers 2 | tail -1
  [ -d "$M/model" ] || $R train --profile toy-cpu --stage 2 --rewards-mode none --data "$D" --out "$M" --seed "$s" \
      --no-progress | tail -1
  for set in "${SETTINGS[@]}"; do
    # shellcheck disable=SC2086  # the flags are meant to split
    $R evaluate --model "$M/model" --bench "$B" --out "$OUT/ceiling-s$s-${set%%:*}" --seed "$s" --no-progress \
        ${set#*:} > /dev/null
  done
done
CHOSEN=$($PY - "$OUT" "$SEEDS" "${SETTINGS[@]}" <<'EOF'
import json, sys
out, seeds, settings = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
best, best_mean = None, -1.0
for entry in settings:
    name, flags = entry.split(":", 1)
    rates = [json.load(open(f"{out}/ceiling-s{s}-{name}/summary.json"))["overall"][p]["yes_rate"]
             for s in seeds for p in ("following", "preserving", "quality")]
    mean = sum(rates) / len(rates)
    print(f"flawless-data model, {name} ({flags}): mean yes-rate {mean:.2f}", file=sys.stderr)
    if mean > best_mean + 1e-9:
        best, best_mean = entry, mean
print(best)
EOF
)
echo "chosen: $CHOSEN"
for s in $SEEDS; do
  B=$RUNS/$PREFIX-s$s/toy-bench; O=$OUT/compare-s$s
  # shellcheck disable=SC2086
  $R evaluate --model "$RUNS/$PREFIX-s$s/models/baseline/model" --bench "$B" --out "$O/baseline" --seed "$s" \
      --no-progress ${CHOSEN#*:} > /dev/null
  # shellcheck disable=SC2086
  $R knob --model "$RUNS/$PREFIX-s$s/models/multi-reward/model" --bench "$B" --out "$O/knob" --seed "$s" \
      --no-progress ${CHOSEN#*:} | grep "^|"
  echo "seed $s:"; $PY "$(dirname "$0")/paired_difference.py" "$O/knob/F5-P5-Q5" "$O/baseline"
done
