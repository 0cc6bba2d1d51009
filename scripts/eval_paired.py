"""Paired differences between methods of `x2br evaluate` reports on the same cases.

    python3 scripts/eval_paired.py A.json:METHOD B.json:METHOD [...more pairs]

Each pair: mean of (B - A) per case over the cases both reports hold (matched by case file), its
standard error, and on how many cases B is higher, for all-bone IoU, mean per-bone IoU and Chamfer-L1 mm.
A report and a method name are joined by the last ':' (e.g. fold_B_eval.json:x2b+lat).
"""
import json
import sys

import numpy as np

KEYS = ("iou_all_bone", "iou_mean_per_bone", "chamfer_l1_mm")


def per_case(spec):
    path, method = spec.rsplit(":", 1)
    return {c["case"]: c[method] for c in json.load(open(path))["per_case"] if method in c}


args = sys.argv[1:]
if not args or len(args) % 2:
    sys.exit(__doc__)
for a_spec, b_spec in zip(args[::2], args[1::2]):
    a, b = per_case(a_spec), per_case(b_spec)
    cases = sorted(set(a) & set(b))
    print(f"{b_spec}  minus  {a_spec}  ({len(cases)} cases)")
    for k in KEYS:
        d = np.array([b[c][k] - a[c][k] for c in cases])
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        print(f"  {k:18s} {d.mean():+.4f} ± {se:.4f} (se)   B higher on {int((d > 0).sum())} of {len(d)}")
