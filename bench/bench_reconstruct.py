"""Reconstruction time by stage (read, encode, MISE, [refinement,] writing) and MISE vs a dense grid.

Usage: python bench/bench_reconstruct.py [--device cpu|cuda] [--quality default] [--repeats 3] [--dense] [--refine]
--refine times ``x2br reconstruct --refine`` (detection, template fit, geodesic CPD, voxelisation).
Prints one JSON line per quality: median seconds per stage and query counts.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    import torch

    from X2BRLib.pipeline import ReconstructOptions, Reconstructor, write_outputs
    from X2BRLib.x2b.mise import dense_labels
    from X2BRLib.x2b.model import make_decode_fn

    ap = argparse.ArgumentParser()
    ap.add_argument("--input", default=str(REPO / "Resources/SampleData/sample_radiograph.dcm"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quality", nargs="+", default=["fast", "default"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense", action="store_true", help="also time a dense grid at the same final resolution")
    ap.add_argument("--refine", action="store_true", help="X2BR: X2B then detection + template + CPD")
    args = ap.parse_args(argv)
    machine = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
               "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
    for q in args.quality:
        rec_ = Reconstructor(ReconstructOptions(quality=q, device=args.device, refine=args.refine))
        runs = []
        for _ in range(args.repeats + 1):  # first run is warm-up
            t0 = time.perf_counter()
            rec = rec_.reconstruct(args.input)
            wall = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                t1 = time.perf_counter()
                write_outputs(rec, tmp)
                write_wall = time.perf_counter() - t1
            runs.append({**rec.timings_s, "reconstruct_wall": wall, "write_wall": write_wall,
                         "end_to_end_wall": wall + write_wall})
        runs = runs[1:]
        med = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
        row = {"quality": q, "device": args.device, "refine": args.refine, **machine, "median_s": med,
               "queries": rec.stats.get("queries"), "dense_queries": rec.stats.get("dense_queries")}
        if args.dense:
            from X2BRLib.io.radiograph import read_radiograph, to_network_input
            from X2BRLib.pipeline import QUALITY

            image, geom = to_network_input(read_radiograph(args.input), rec_.image_size)
            decode = make_decode_fn(rec_.model, image, geom, rec_.device, rec_.amp)
            t0 = time.perf_counter()
            dense, _ = dense_labels(decode, geom, voxel_mm=QUALITY[q]["voxel_mm"])
            row["dense_s"] = round(time.perf_counter() - t0, 3)
            row["mise_equals_dense_fraction"] = round(float((dense == rec.labels_xyz).mean()), 5)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
