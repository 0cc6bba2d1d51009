#!/usr/bin/env bash
# The detector job that scripts/gpu_twoview.sh runs beside the X2B runs (DETECT_CMD="bash scripts/gpu_detect_job.sh"):
# fine-tunes the shipped detector (Resources/Models/yolo) on the pool's yolo/ export (frontal and lateral films of the
# clinical film model), or resumes DRUN when a call before left it. POOL comes from gpu_twoview.sh.
# Env: DRUN (runs/yolo_clinical), DEPOCHS (10; fixed per run: it sets the schedule), DBATCH (64), DW (loader workers, 8),
# DDEV (cuda), DCACHE (ram), DMIN (minutes of this call, 7), DARGS (more train options, e.g. --augment scale=0.4).
# X2BR_CODE_COMMIT (set it to `git rev-parse HEAD` of the checkout sent here: the GPU machine's git record can be
# stale; exports record it as code_commit, and code_sha256 of the files whatever git says: X2BRLib/provenance.py).
DRUN=${DRUN:-runs/yolo_clinical}
R="--init-weights Resources/Models/yolo"; [ -f "$DRUN/weights/last.pt" ] && R="--resume"
exec python3 -m X2BRLib.detect.train train --data "$POOL" -o "$DRUN" --variant yolov9t $R --epochs "${DEPOCHS:-10}" \
  --imgsz 256 --batch "${DBATCH:-64}" --workers "${DW:-8}" --device "${DDEV:-cuda}" --cache "${DCACHE:-ram}" \
  --max-minutes "${DMIN:-7}" ${DARGS:-}
