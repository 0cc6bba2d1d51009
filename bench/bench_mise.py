"""Benchmark: MISE vs a dense grid at the same final resolution (queries, time, agreement).

    .venv/bin/python bench/bench_mise.py [--weights DIR] [--case case_00001.npz]
        [--voxel-mm 2] [--start-voxel-mm 4 8] [--device cuda]

Two parts:
* analytic phantom (a sphere and a 9 mm thick ring "rib"): the query savings of
  MISE on a known surface, independent of any network;
* the X2B model (random init unless --weights): wall time of encode-once +
  batched decode, dense vs MISE. A random-init network's occupancy is
  meaningless (p_bone ~ 45/46 everywhere, so MISE refines almost nothing);
  its decode throughput (points/s) is what matters, and with trained weights
  (and a real film via --case) the query counts become representative.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from X2BRLib.geometry import ProjectionGeometry  # noqa: E402
from X2BRLib.x2b.mise import dense_labels, extract_labels  # noqa: E402


def phantom(points):
    p = np.asarray(points, float)
    sph = np.linalg.norm(p - [10.0, 5.0, 30.0], axis=1) < 60.0
    ring = np.hypot(np.hypot(p[:, 0], p[:, 1]) - 130.0, p[:, 2] + 60.0) < 4.5
    return (sph | ring).astype(np.float32), np.where(sph, 25, 3).astype(np.uint8)


def _row(name, labels, stats, ref):
    agree = float((labels == ref).mean()) if ref is not None else float("nan")
    bone = int((labels > 0).sum())
    print(f"{name:<28} {stats['queries']:>10} {stats['queries'] / stats['dense_queries']:>7.3f} "
          f"{stats['time_total_s']:>8.3f} {stats['time_decode_s']:>8.3f} {bone:>9} {agree:>9.6f}")


def _header(title, shape):
    print(f"\n{title}  grid {shape}")
    print(f"{'method':<28} {'queries':>10} {'ratio':>7} {'total_s':>8} {'decode_s':>8} {'bone_vox':>9} {'agree':>9}")


def run(decode_fn, geometry, voxel_mm, starts, batch_points, title, sync=lambda: None):
    sync()
    dense, sd = dense_labels(decode_fn, geometry, voxel_mm, batch_points)
    sync()
    _header(title, sd["grid_shape"])
    _row(f"dense {voxel_mm:g} mm", dense, sd, dense)
    for s in starts:
        labels, st = extract_labels(decode_fn, geometry, voxel_mm, s, batch_points)
        sync()
        _row(f"MISE {s:g} -> {voxel_mm:g} mm", labels, st, dense)
    return sd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", help="weights folder/.pt (default: random-init X2BNet)")
    ap.add_argument("--encoder", default="atto", help="variant for random init (atto/femto/pico)")
    ap.add_argument("--case", help="dataset case .npz (film + geometry); default: blank film")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--voxel-mm", type=float, default=2.0)
    ap.add_argument("--start-voxel-mm", type=float, nargs="+", default=[4.0, 8.0])
    ap.add_argument("--batch-points", type=int, default=131072)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off")
    ap.add_argument("--skip-model", action="store_true")
    a = ap.parse_args(argv)

    geometry = ProjectionGeometry.chest(size_px=(a.image_size, a.image_size))
    image = np.zeros((a.image_size, a.image_size), np.float32)
    if a.case:
        with np.load(a.case) as z:
            image = z["image"].astype(np.float32)
            geometry = ProjectionGeometry.from_json(str(z["geometry"]))
    run(phantom, geometry, a.voxel_mm, a.start_voxel_mm, a.batch_points, "analytic phantom")
    if a.skip_model:
        return 0

    import torch

    from X2BRLib.x2b.model import X2BNet, make_decode_fn

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    if a.weights:
        from X2BRLib.x2b.weights import load_model
        model = load_model(a.weights, device)
    else:
        torch.manual_seed(0)
        model = X2BNet(a.encoder).to(device).eval()
    amp = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.amp]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    fn = make_decode_fn(model, image, geometry, device, amp)
    fn(np.zeros((a.batch_points, 3), np.float32))  # warm-up
    sync()
    print(f"\nmodel {model.config['encoder']} on {device} ({'weights ' + a.weights if a.weights else 'random init'}),"
          f" encode + warm-up {time.perf_counter() - t:.3f} s")
    sd = run(fn, geometry, a.voxel_mm, a.start_voxel_mm, a.batch_points, "X2B model", sync)
    print(f"decode throughput: {sd['queries'] / max(sd['time_decode_s'], 1e-9) / 1e6:.2f} M points/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
