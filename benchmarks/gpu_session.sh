#!/usr/bin/env bash
# One prepared GPU session: every GPU number benchmarks/README.md reports, plus the GPU-made toy stage-1
# model, each step under its own time limit inside one overall budget, so one failure costs one number.
#
#   bash benchmarks/gpu_session.sh OUT_DIR [BUDGET_S]
#
# Needs torch with CUDA, transformers and accelerate; diffusers (and bitsandbytes for the T4 profile) can
# come from PYTHONPATH. Writes OUT_DIR/session.log, one JSON per benchmark and toy-stage1.tar.gz.
# TINY=1 runs the same steps with tiny models and a tiny toy run: a dry run of this script on a CPU.
# By default the session measures speed only (the bundled toy stage-1 model exists). ONLY=toy skips the
# benchmarks and gives the whole budget to the toy stage-1 model; TOY_STEPS=N trains it for up to N steps
# instead of the preset's (`train --time-limit` stops it at the budget, saved and resumable); TOY_N=N sets the
# number of toy triplets (default 40000, drawn on all CPU cores); TOY_FLAW_RATES=F,P,Q their flaw rates (default
# 0.2 each). TOY=1 runs the toy model after the benchmarks.
set -u
OUT=${1:?usage: gpu_session.sh OUT_DIR [BUDGET_S]}
BUDGET=${2:-540}
mkdir -p "$OUT"
END=$(( $(date +%s) + BUDGET ))
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/session.log"
PY=${PYTHON:-python3}
if [ "${TINY:-0}" = 1 ]; then T="--tiny"; TOY_N=${TOY_N:-200}; B1="2"; B2="2"; else T=""; TOY_N=${TOY_N:-40000}; B1="4 32"; B2="8 16"; fi

left() { echo $(( END - $(date +%s) )); }
step() {  # step NAME LIMIT_S COMMAND...: run under min(LIMIT_S, time left), log everything
  local name=$1 limit=$2; shift 2
  local l; l=$(left)
  (( limit > l )) && limit=$l
  if (( limit < 20 )); then echo "== $name: skipped, ${l} s left" | tee -a "$LOG"; return; fi
  echo "== $name (limit ${limit} s): $*" | tee -a "$LOG"
  local t0; t0=$(date +%s)
  timeout -k 5 "$limit" "$@" 2>&1 | grep -v --line-buffered 'should be kept in float32\|requires torchvision' | tee -a "$LOG"
  echo "== $name: exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  $PY -c "import torch, diffusers, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
  $PY -c "import bitsandbytes as b; print('bitsandbytes', b.__version__)" 2>&1 | tail -1; } 2>&1 | tee -a "$LOG"

WANT_TOY=0; { [ "${ONLY:-all}" = toy ] || [ "${TOY:-0}" = 1 ]; } && WANT_TOY=1
if [ "$WANT_TOY" = 1 ]; then
  # The toy data for stage 1 is made on the CPU while the GPU benchmarks run (niced; all cores but two).
  TOYDIR=/tmp/toy-stage1
  rm -rf "$TOYDIR"; mkdir -p "$TOYDIR"
  WORKERS=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))
  nice -n 10 $PY -m rewardedit_lib.cli toy-data --out "$TOYDIR/data" --n "$TOY_N" --seed 0 --workers "$WORKERS" \
    ${TOY_FLAW_RATES:+--flaw-rates "$TOY_FLAW_RATES"} > "$TOYDIR/data.log" 2>&1 &
  GEN=$!
fi

if [ "${ONLY:-all}" != toy ]; then  # ONLY=toy: the whole budget goes to the toy stage-1 model
step train_throughput 150 $PY benchmarks/train_throughput.py $T --batch $B1 --json "$OUT/train_throughput.json"
# bf16 weights with an fp32 master copy: no autocast re-casting the weights every step
step train_master 100 $PY benchmarks/train_throughput.py $T --no-reference --batch $B1 \
  --set master_weights=true --json "$OUT/train_master.json"
step edit_latency 90 $PY benchmarks/edit_latency.py $T --json "$OUT/edit_latency.json"
step reward_overhead 45 $PY benchmarks/reward_overhead.py $T --json "$OUT/reward_overhead.json"
# torch.compile needed more than the 130 s one session gave it (its warm-up is untimed)
# COMPILE_MODE=reduce-overhead: the same with CUDA graphs (TrainConfig.compile_mode)
step train_compile 240 $PY benchmarks/train_throughput.py $T --compile --no-reference --batch ${B1##* } \
  --set master_weights=true ${COMPILE_MODE:+--set compile_mode=$COMPILE_MODE} --json "$OUT/train_compile.json"
step t4_memory 90 $PY benchmarks/train_throughput.py $T --profile sd15-t4 --no-reference --batch $B2 --steps 10 \
  --json "$OUT/t4_memory.json"
fi
if [ "$WANT_TOY" != 1 ]; then echo "== done, $(left) s of the budget left" | tee -a "$LOG"; exit 0; fi
TOY=$TOYDIR

T_GEN=$(date +%s); wait $GEN; cat "$TOY/data.log" | tee -a "$LOG"
echo "== toy data: waited $(( $(date +%s) - T_GEN )) s for it" | tee -a "$LOG"
# Training stops itself 60 s before the end: saving, then bundling (its imports alone took ~15 s on the
# device, and one session lost its card to the time limit). The run folder comes back either way.
TOY_BUDGET=$(( $(left) - 60 ))
step toy_stage1 $(( TOY_BUDGET + 55 )) $PY tools/make_toy_stage1.py --profile toy-stage1-gpu --n "$TOY_N" \
  ${TOY_STEPS:+--steps "$TOY_STEPS"} --budget-s "$TOY_BUDGET" --data "$TOY/data" --work "$TOY" --out "$TOY/asset" \
  --where "one $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo CPU)"
# the asset if it was bundled, and always the finished run (`make_toy_stage1.py --from-run run` bundles it)
if [ -d "$TOY/run/model" ]; then
  cp "$TOY/data/_truth/generator.json" "$TOY/run/toy_data.json"  # the data's manifest travels with the run
  tar -C "$TOY" -czf "$OUT/toy-stage1.tar.gz" $( [ -d "$TOY/asset" ] && echo asset ) run/model run/metrics.jsonl \
    run/toy_data.json run/summary.json run/train_config.json run/samples
fi
echo "== done, $(left) s of the budget left" | tee -a "$LOG"
