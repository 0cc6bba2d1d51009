"""Tables of `x2br evaluate` reports, as the GPU scripts print them into summary.txt.

    python3 scripts/eval_summary.py REPORT.json [...]   (a missing report prints "<name> no report")

Per report: cases, split, patients, lateral offset, the baseline's patients; one row per method (mean +- std
of all-bone IoU, mean per-bone IoU, Chamfer-L1 mm, HD95 mm); with several patients, each patient's all-bone /
per-bone IoU per method.
"""
import json
import sys
from pathlib import Path

KEYS = ("iou_all_bone", "iou_mean_per_bone", "chamfer_l1_mm", "hd95_mm")

for path in map(Path, sys.argv[1:]):
    if not path.exists():
        print(path.stem, "no report")
        continue
    r = json.loads(path.read_text())
    print(f"{path.stem}: {r['n_cases']} {r['split']} cases of {sorted(r['per_patient'])}; lateral offset "
          f"{r.get('lateral_offset_mm', 0)} mm, placed {r.get('place_lateral', 'none')}; baseline from "
          f"{r['baseline_patients']}")
    print(f"  {'method':16s}" + "".join(f"{k:>18s}" for k in KEYS))
    for m, v in r["methods"].items():
        print(f"  {m:16s}" + "".join(f"{v['mean'][k]:11.4f} ±{v['std'][k]:.3f}" for k in KEYS))
    if len(r["per_patient"]) > 1:
        for p, by in r["per_patient"].items():
            print(f"  {p}: " + ", ".join(f"{m} {v['mean']['iou_all_bone']:.4f}/{v['mean']['iou_mean_per_bone']:.4f}"
                                          for m, v in by.items()))
