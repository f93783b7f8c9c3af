#!/usr/bin/env bash
# Issue 17's untested lever, prepared for one device session: the course's stage 2 with a GPU's budget. For each
# seed it rebuilds the course's inputs exactly as `rewardedit course --profile toy-cpu --set seed=N` does (3,000
# triplets at flaw rates 0.5, annotated by the local toy judge; the 65-image benchmark of that seed), trains the
# no-reward baseline and the multi-reward model alike with the toy-gpu preset (STEPS, default its 3,000, batch
# 64), then measures the knob and the paired difference at (5, 5, 5) as tools/knob_experiment.sh does.
#
#   bash tools/gpu_stage2_seeds.sh OUT_DIR [BUDGET_S]
#
# SEEDS (default "0 2": the toy-cpu course's lowest following knob, +31.2, and smallest preserving gain, +9.0;
# RESULTS.md, eighth session), STEPS, PROFILE (default toy-gpu).
# Every training run stops itself when its share of the budget is spent (`train --time-limit`: saved, and
# resumable with `--resume latest`), so one slow run costs its own numbers, not the session's. Needs torch,
# transformers, accelerate and diffusers (on the device machine: diffusers from PYTHONPATH, see
# benchmarks/README.md). TINY=1 (STEPS=20 on 300 triplets, 2 benchmark images): a dry run of this script on a CPU.
# On the device machine, with the diffusers wheel carried in .whl/ (benchmarks/README.md says how to get it):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   bash tools/gpu_stage2_seeds.sh $OUT 780
# Writes OUT_DIR/session.log and, per seed, OUT_DIR/sN/{base,mr}/ (metrics, summaries; the model folders too).
set -u
OUT=${1:?usage: gpu_stage2_seeds.sh OUT_DIR [BUDGET_S]}
BUDGET=${2:-780}
END=$(( $(date +%s) + BUDGET ))
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
R="$PY -m rewardedit_lib.cli"
LOG="$OUT/session.log"
SEEDS=${SEEDS:-0 2}; PROFILE=${PROFILE:-toy-gpu}
if [ "${TINY:-0}" = 1 ]; then N=300; IMAGES=2; STEPS=${STEPS:-20}; else N=3000; IMAGES=65; fi
STEP_FLAG=${STEPS:+--steps $STEPS}
left() { echo $(( END - $(date +%s) )); }
log() { echo "$*" | tee -a "$LOG"; }
quiet() { grep -v --line-buffered 'requires torchvision\|should be kept in float32\|deprecat' | tee -a "$LOG"; }

log "== $(date -u) seeds [$SEEDS], profile $PROFILE, ${STEPS:-preset} steps, budget $BUDGET s"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi"; } 2>&1 | tee -a "$LOG"
n_seeds=$(wc -w <<< "$SEEDS"); i=0
for s in $SEEDS; do
  D="$OUT/s$s"; mkdir -p "$D"
  # the course's inputs (toyworld.ensure_toy_dataset / ensure_toy_bench are deterministic per seed)
  [ -f "$D/data/seeds.json" ] || $R toy-data --out "$D/data" --n $N --seed "$s" --flaw-rates 0.5,0.5,0.5 \
    --workers "$(nproc)" 2>&1 | quiet
  [ -f "$D/rewards.json" ] || $R annotate --data "$D/data" --out "$D/rewards.json" 2>&1 | tail -2 | quiet
  [ -d "$D/bench" ] || $R toy-bench --out "$D/bench" --images $IMAGES --seed "$s" 2>&1 | quiet
  # this seed's share of what is left, ~40 s of it kept for the evaluations after each training run
  share=$(( $(left) / (n_seeds - i) )); i=$(( i + 1 ))
  per_run=$(( share / 2 - 40 ))
  if (( per_run < 30 )); then log "== seed $s: skipped, $(left) s left"; continue; fi
  # the multi-reward model first; the baseline then trains exactly as many steps (a fair pair even when the
  # clock stopped the first one early)
  log "== seed $s mr: train (time limit $per_run s)"
  [ -d "$D/mr/model" ] || $R train --profile "$PROFILE" --stage 2 --data "$D/data" --rewards "$D/rewards.json" \
    --out "$D/mr" --seed "$s" $STEP_FLAG --time-limit "$per_run" --no-progress 2>&1 | tail -1 | quiet
  done_steps=$($PY -c "import json; print(json.load(open('$D/mr/summary.json'))['steps'])" 2>/dev/null) || {
    log "== seed $s: the multi-reward model did not finish"; continue; }
  log "== seed $s base: train $done_steps steps (time limit $(( per_run + 60 )) s)"
  [ -d "$D/base/model" ] || $R train --profile "$PROFILE" --stage 2 --rewards-mode none --data "$D/data" \
    --out "$D/base" --seed "$s" --steps "$done_steps" --time-limit "$(( per_run + 60 ))" --no-progress 2>&1 \
    | tail -1 | quiet
  [ -d "$D/mr/model" ] && $R knob --model "$D/mr/model" --bench "$D/bench" --out "$D/knob" --seed "$s" \
    --no-progress 2>&1 | grep "^|" | quiet
  [ -d "$D/base/model" ] && $R evaluate --model "$D/base/model" --bench "$D/bench" --out "$D/base-eval" \
    --seed "$s" --no-progress 2>&1 | tail -1 | quiet
  [ -d "$D/knob/F5-P5-Q5" ] && [ -d "$D/base-eval" ] && \
    $PY tools/paired_difference.py "$D/knob/F5-P5-Q5" "$D/base-eval" 2>&1 | quiet
  for m in mr base; do [ -f "$D/$m/summary.json" ] && log "seed $s $m: $(tr -d '\n ' < "$D/$m/summary.json")"; done
done
log "== done, $(left) s of the budget left"
