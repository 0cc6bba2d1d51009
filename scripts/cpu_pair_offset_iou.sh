#!/usr/bin/env bash
# The lateral's height from the bones (issue 15 item 2), what it gains on IoU: the shipped two-view model
# (v6) on a small lateral test set, PA + lateral, the lateral's camera told D mm off (`evaluate
# --lateral-offset-mm D`, D = 20, 0, 10), placed from the bones (`--place-lateral auto`, what
# `reconstruct --lateral-offset auto` does) or not (none), on the same films. CPU, in parts of 5 cases
# (one per patient) so a partial run is usable; a part already written is kept. v6 SAW these patients
# in training (not these cases: test seeds): the comparison placed vs not is fair on the same films,
# the absolute IoU is not a held-out score. WEIGHTS: default the shipped two-view model (v6).
#   bash scripts/cpu_pair_offset_iou.sh DATA OUT [PARTS]   (PARTS: first cases of the parts, default "0 5"; "": merge and summarise only)
# DATA: x2br build-dataset --prepared .prepared --lateral --train 0 --val 0 --test 15 --points 1024
#       --image-size 256 --voxel-mm 2 -o DATA
# OUT gets off<D>_<none|auto>_f<F>.json (+ .log), off<D>_<none|auto>.json (the parts merged) and summary.txt.
set -uo pipefail
DATA=${1:?DATA}; OUT=${2:?OUT}; PARTS=${3-0 5}
mkdir -p "$OUT"
for F in $PARTS; do for D in 20 0 10; do for P in none auto; do
  out=$OUT/off${D}_${P}_f${F}.json
  [ -f "$out" ] && continue
  OMP_NUM_THREADS=2 python3 -m X2BRLib.cli evaluate --data "$DATA" --weights "${WEIGHTS:-Resources/Models/x2b_v6}" --device cpu \
    --views pa+lat --no-baseline --first-case "$F" --max-cases 5 --place-lateral $P --lateral-offset-mm $D \
    -o "$out" > "${out%.json}.log" 2>&1 || tail -2 "${out%.json}.log"
done; done; done
for D in 20 0 10; do for P in none auto; do
  parts=$(ls "$OUT"/off${D}_${P}_f*.json 2>/dev/null)
  [ -n "$parts" ] && python3 -m X2BRLib.cli merge-evaluations $parts -o "$OUT/off${D}_${P}.json" --overwrite > /dev/null
done; done
python3 scripts/eval_summary.py $(for D in 20 0 10; do for P in none auto; do echo "$OUT/off${D}_${P}.json"; done; done) \
  | tee "$OUT/summary.txt"
python3 - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for f in sorted(out.glob("off*_auto.json")):
    rows = [r["placement"] for r in json.loads(f.read_text())["per_case"]]
    told = json.loads(f.read_text())["lateral_offset_mm"]
    print(f"{f.stem}: placed on {sum(r['applied'] for r in rows)} of {len(rows)}; estimate - told offset: "
          + ", ".join(f"{r['offset_si_mm'] - told:+.2f}" for r in rows) + " mm")
EOF
