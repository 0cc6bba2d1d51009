"""The bundled sample film: anatomical consistency of X2B alone and of X2BR with each detector's boxes.

Reconstructs ``Resources/SampleData/sample_radiograph.dcm`` (default quality, CPU) with X2B alone
and with ``--refine`` once per ``--detector NAME=DIR``, and prints ``metrics.consistency_metrics``
(rib turning deg/cm, bones in one piece, unbroken ribs) of each and of the film's ground truth.

    python bench/bench_sample_consistency.py --detector v2=DIR2 --detector v3=DIR3 [-o WORKDIR]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
KEYS = ("rib_turning_deg_per_cm_mean", "frac_bones_single_component", "frac_ribs_unbroken")


def main(argv=None) -> int:
    import slicerio

    from X2BRLib import metrics
    from X2BRLib.cli import main as x2br
    from X2BRLib.geometry import ProjectionGeometry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", action="append", default=[], metavar="NAME=DIR",
                    help="detector weights folder for one X2BR run (repeatable; default: the shipped one)")
    ap.add_argument("-o", "--workdir", help="where the reconstructions go (default: a temporary folder)")
    args = ap.parse_args(argv)
    sample = REPO / "Resources" / "SampleData" / "sample_radiograph.dcm"
    z = np.load(REPO / "Resources" / "SampleData" / "sample_radiograph_gt.npz")
    geom = ProjectionGeometry.from_json(str(z["geometry"]))
    _, origin, spacing = geom.box_grid(float(z["gt_voxel_mm"]))
    runs = {"x2b": []}
    for item in args.detector or ["shipped="]:
        name, _, folder = item.partition("=")
        runs[f"x2br_{name}"] = ["--refine"] + (["--detector-weights", folder] if folder else [])
    rows = {"ground_truth": metrics.consistency_metrics(z["gt_labels"], spacing, origin)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        for name, extra in runs.items():
            out = work / name
            with contextlib.redirect_stdout(sys.stderr):  # the command's JSON line: not part of the table
                rc = x2br(["reconstruct", str(sample), "-o", str(out), "--device", "cpu", "--no-meshes",
                           "--no-progress", "--overwrite"] + extra)
            if rc != 0:
                raise SystemExit(f"x2br reconstruct failed for {name}")
            labels = slicerio.read_segmentation(str(out / "bones.seg.nrrd"))["voxels"]
            rows[name] = metrics.consistency_metrics(labels, spacing, origin)
    print("| method | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for name, m in rows.items():
        print(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in KEYS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
