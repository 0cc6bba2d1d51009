#!/usr/bin/env bash
# Does drawing virtual patients part of the way toward another patient (build-dataset --blend P) help on an
# unseen patient? One call (<= 10 min) on nvidia-h200-x2: the pool of gpu_folds.sh is rebuilt with --blend P
# (same seeds, same counts), fold A (held out: FOLD_A) is derived, and fold A is trained exactly as gpu_folds.sh
# trains it (from v4, same epochs and batch), then evaluated on the held-out patient's test films, the same 60
# films as gpu_folds.sh's fold_A_eval.json (test cases are never blended). Compare OUT/fold_A_blend_eval.json
# with that report. Run from the repo root with the prepared CTs in .prepared/ (carry [".prepared"]):
#   BLEND=0.5 EPOCHS=12 bash scripts/gpu_blend.sh OUT
set -uo pipefail
OUT=${1:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PREP=${PREP:-.prepared}; DATA=${DATA:-data_blend}; RUN=${RUN:-runs/blend_A}; FOLD_A=${FOLD_A:-ricord1a-000082}
V4=Resources/Models/x2b; NGPU=$(nvidia-smi -L | wc -l)
ARCH="--encoder femto --hidden 96 --n-blocks 4 --feat-dim 48 --hires 24"
args="--prepared $PREP -o $DATA/pool --train ${TRAIN:-7500} --val ${VAL:-50} --test ${TEST:-300} --image-size 256
  --voxel-mm 2 --points 65536 --device cuda --no-progress --blend ${BLEND:-0.5}"
for ((k = 0; k < NGPU; k++)); do
  CUDA_VISIBLE_DEVICES=$k python3 -m X2BRLib.cli build-dataset $args --workers 14 --part $k/$NGPU > /tmp/build_$k.log 2>&1 &
done
wait
python3 -m X2BRLib.cli build-dataset $args --workers 14 2>&1 | tail -1 | tee "$OUT/build.txt"
python3 -m X2BRLib.cli fold-dataset $DATA/pool -o $DATA/fold_A --test-patients $FOLD_A | tee -a "$OUT/build.txt"
echo "built in ${SECONDS}s"
python3 -m X2BRLib.x2b.train --data $DATA/fold_A --out $RUN $ARCH --epochs ${EPOCHS:-12} --batch-size 16 \
  --n-points 4096 --val-cases 8 --val-voxel-mm 2 --best-metric val_vol_score --device cuda --num-workers 24 \
  --init-weights $V4 --max-minutes ${MINUTES:-6.5} 2>&1 | grep -v -i warning | tail -3 | tee "$OUT/train.txt"
python3 -c "from X2BRLib.x2b.train import export_weights; export_weights('$RUN', '/tmp/blend_A', overwrite=True)"
n=$(python3 -c "import json; print(len(json.load(open('$DATA/fold_A/dataset.json'))['splits']['test']))")
P=6; per=$(( (n + P - 1) / P ))
for ((p = 0; p < P; p++)); do
  CUDA_VISIBLE_DEVICES=$((p % NGPU)) OMP_NUM_THREADS=2 python3 -m X2BRLib.cli evaluate --data $DATA/fold_A --split test \
    --weights /tmp/blend_A --no-baseline --device cuda --first-case $((p * per)) --max-cases $per \
    -o /tmp/evb_$p.json > /tmp/evb_$p.log 2>&1 &
done
wait
python3 -m X2BRLib.cli merge-evaluations /tmp/evb_*.json -o "$OUT/fold_A_blend_eval.json" --overwrite > /dev/null \
  || tail -n 3 /tmp/evb_*.log
python3 -c "
import json; r = json.load(open('$OUT/fold_A_blend_eval.json')); m = r['methods']['x2b']['mean']
print('fold A with blend ${BLEND:-0.5}:', r['n_cases'], 'cases', {k: round(m[k], 4) for k in ('iou_all_bone', 'iou_mean_per_bone', 'chamfer_l1_mm', 'hd95_mm')})" | tee "$OUT/summary.txt"
echo "done in ${SECONDS}s"
