# Sourced by the GPU scripts (gpu_folds.sh, gpu_twoview.sh): shared helpers over their variables
# (PREP, POOL, VOXEL, DEVICE, W, NGPU, RUNS, BUDGET_S, TRAIN/VAL/TEST, IMAGE, POINTS).
gpu() { echo $(( $1 % NGPU )); }
minutes_left() { python3 -c "print(round(max(0.3, ($BUDGET_S - $SECONDS) / 60 - $1), 2))"; }

build_pool() {  # EXTRA build-dataset args: the pool, one part per GPU, then its whole manifest; 1 when not complete
  local args="--prepared $PREP -o $POOL --train ${TRAIN:-7500} --val ${VAL:-50} --test ${TEST:-300}
    --image-size ${IMAGE:-256} --voxel-mm $VOXEL --points ${POINTS:-65536} --device $DEVICE --no-progress $*"
  local left=$(( BUDGET_S - SECONDS - 30 ))
  for ((k = 0; k < NGPU; k++)); do
    CUDA_VISIBLE_DEVICES=$k timeout $left python3 -m X2BRLib.cli build-dataset $args --workers $W \
      --part $k/$NGPU > "$RUNS/build_$k.log" 2>&1 &
  done
  wait
  timeout $(( BUDGET_S - SECONDS - 20 )) python3 -m X2BRLib.cli build-dataset $args --workers $W 2>&1 | tail -1 \
    | tee -a "$RUNS/build.txt"
  [ "${PIPESTATUS[0]}" = 0 ]
}
