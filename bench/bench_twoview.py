"""Benchmark: the network's cost of a PA + lateral pair against the PA film alone (issue 15 asks
the pair's CPU time to stay under 1.5 x the single film's).

    .venv/bin/python bench/bench_twoview.py [--weights DIR] [--repeats 5] [--threads 2] [--device cpu]

The two-view model is grown from one-view weights (default: the shipped v4; cost does not depend
on the weights' values, and at has_lat = 0 it computes exactly those weights): encode the film(s)
once, then decode ``--points`` query points (one MISE batch) ``--repeats`` times, on random films of
the network's size. Prints the median times and the ratios (pair / PA alone). A whole
reconstruction costs encode + its number of MISE batches x decode; MISE's query count itself
depends on the occupancy the trained network gives (bench_mise.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import torch

    from X2BRLib.geometry import ProjectionGeometry
    from X2BRLib.pipeline import ONE_VIEW_WEIGHTS
    from X2BRLib.x2b.model import X2BNet, grow_from, make_decode_fn
    from X2BRLib.x2b.weights import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=str(ONE_VIEW_WEIGHTS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--points", type=int, default=65536)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    one = load_model(args.weights, "cpu")
    model = X2BNet(**one.config, views=2).eval()
    grow_from(model, one)
    model.to(args.device)
    size = tuple(one.record.get("image_size", (256, 256)))
    g, g_lat = (ProjectionGeometry.chest(v, size_px=size) for v in ("PA", "LL"))
    rng = np.random.default_rng(0)
    pa, lat = (rng.random(size[::-1]).astype(np.float32) for _ in range(2))
    pts = (rng.random((args.points, 3)) - 0.5) * np.array(g.box_size_mm)
    runs = {"pa": {}, "pa+lat": dict(lateral=lat, lateral_geometry=g_lat)}
    times = {name: {"encode": [], "decode": []} for name in runs}
    for _ in range(args.repeats):
        for name, kw in runs.items():  # interleaved: a load change on the machine hits both alike
            t0 = time.perf_counter()
            fn = make_decode_fn(model, pa, g, args.device, **kw)
            t1 = time.perf_counter()
            fn(pts)
            t2 = time.perf_counter()
            times[name]["encode"].append(t1 - t0)
            times[name]["decode"].append(t2 - t1)
    med = {n: {k: float(np.median(v)) for k, v in d.items()} for n, d in times.items()}
    print(f"weights {args.weights}; {size[0]}x{size[1]} px; {args.points} points; {args.threads} threads; "
          f"{args.device}; median of {args.repeats}")
    for name, d in med.items():
        print(f"{name:7s} encode {d['encode']:.3f} s  decode {d['decode']:.3f} s")
    for k in ("encode", "decode"):
        print(f"ratio pair / PA alone, {k}: {med['pa+lat'][k] / med['pa'][k]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
