"""Benchmark: X2BRLib.refine.cpd.deformable_cpd vs pycpd.DeformableRegistration (Gaussian kernel).

    .venv/bin/python bench/bench_cpd.py [--sizes 1000x1000 2000x2000 5000x5000 20000x50000]
        [--iters 10] [--pycpd-max 5000] [--device cpu]

Point sets (LPS-like mm): source M points on an ellipsoid (semi-axes 100, 70, 50 mm), target
N points on an independently sampled, smoothly deformed copy (up to ~12 mm, plus a 5 mm
shift). Both methods run the same fixed number of iterations (tol=0, so no early stop) with
beta=30 mm, lam=0.1, w=0. Each (method, size) runs in a fresh subprocess so peak memory is
its own:

* ``s/iter``: mean EM iteration time; ``setup s``: kernel / initial sigma2 / construction;
* ``peak RSS MB``: resource.getrusage ru_maxrss minus the RSS before the run (CPU; this
  covers numpy and CPU torch alike); ``tracemalloc MB``: tracemalloc peak (numpy only, so
  pycpd only); on CUDA ``cuda MB`` = torch.cuda.max_memory_allocated;
* ``mean dist mm``: mean distance of each deformed source point to its nearest target point.

Ours uses the dense kernel up to 3000 source points, above that the Nystrom (500 landmarks)
/ Woodbury M-step; float32 on the chosen device.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BETA, LAM = 30.0, 0.1


def point_sets(m: int, n: int, seed: int = 0):
    """source (m, 3), target (n, 3) float64 mm."""
    rng = np.random.default_rng(seed)

    def ellipsoid(k):
        u = rng.normal(size=(k, 3))
        return u / np.linalg.norm(u, axis=1, keepdims=True) * np.array([100.0, 70.0, 50.0])

    X = ellipsoid(n)
    X = X + 8.0 * np.sin(X[:, [1, 2, 0]] / 40.0) + np.array([5.0, -3.0, 2.0])
    return ellipsoid(m), X


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run_one(method: str, m: int, n: int, iters: int, device: str) -> dict:
    """One measurement in this process; returns a dict of the columns."""
    from scipy.spatial import cKDTree
    Y, X = point_sets(m, n)
    if method == "ours":
        import torch
        from X2BRLib.refine.cpd import deformable_cpd
    base = _rss_mb()
    out = dict(method=method, M=m, N=n, iters=iters)
    if method == "pycpd":
        import tracemalloc
        from pycpd import DeformableRegistration
        tracemalloc.start()
        t0 = time.perf_counter()
        reg = DeformableRegistration(X=X, Y=Y, alpha=LAM, beta=BETA, w=0.0, max_iterations=iters, tolerance=0.0)
        t1 = time.perf_counter()
        TY, _ = reg.register()
        t2 = time.perf_counter()
        out["tracemalloc_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        out.update(setup_s=t1 - t0, s_per_iter=(t2 - t1) / reg.iteration, iterations=reg.iteration)
    else:
        src = torch.as_tensor(Y, dtype=torch.float32, device=device)
        tgt = torch.as_tensor(X, dtype=torch.float32, device=device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = deformable_cpd(src, tgt, beta=BETA, lam=LAM, w=0.0, max_iter=iters, tol=0.0)
        TY = r.points.cpu().numpy().astype(np.float64)
        t2 = time.perf_counter()
        it_s = [h["seconds"] for h in r.history]
        out.update(setup_s=(t2 - t0) - sum(it_s), s_per_iter=float(np.mean(it_s)), iterations=r.iterations)
        if device.startswith("cuda"):
            out["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    out["mean_dist_mm"] = float(cKDTree(X).query(TY)[0].mean())
    out["init_mean_dist_mm"] = float(cKDTree(X).query(Y)[0].mean())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["1000x1000", "2000x2000", "5000x5000", "20000x50000"])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--pycpd-max", type=int, default=5000, help="run pycpd only where max(M, N) <= this")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", nargs=4, metavar=("METHOD", "M", "N", "ITERS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(run_one(a.one[0], int(a.one[1]), int(a.one[2]), int(a.one[3]), a.device)))
        return 0
    rows = []
    for size in a.sizes:
        m, n = (int(v) for v in size.lower().split("x"))
        for method in ("pycpd", "ours"):
            if method == "pycpd" and max(m, n) > a.pycpd_max:
                continue
            p = subprocess.run([sys.executable, __file__, "--device", a.device, "--one", method, str(m), str(n),
                                str(a.iters)], capture_output=True, text=True)
            if p.returncode:
                print(p.stderr, file=sys.stderr)
                return p.returncode
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(f"# {method} {size}: {rows[-1]}", file=sys.stderr, flush=True)
    print("| M x N | method | iters | setup s | s/iter | peak RSS MB | tracemalloc MB | mean dist mm (start) |"
          " speed-up/iter | memory ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ref = {}
    for r in rows:
        key = (r["M"], r["N"])
        if r["method"] == "pycpd":
            ref[key] = r
        base = ref.get(key)
        sp = f"{base['s_per_iter'] / r['s_per_iter']:.0f}x" if base and r["method"] == "ours" else ""
        mr = f"{base['peak_rss_mb'] / max(r['peak_rss_mb'], 1e-9):.1f}x" if base and r["method"] == "ours" else ""
        tm = f"{r['tracemalloc_mb']:.0f}" if "tracemalloc_mb" in r else (f"cuda {r['cuda_mb']:.0f}" if "cuda_mb" in r else "")
        print(f"| {r['M']} x {r['N']} | {r['method']} | {r['iterations']} | {r['setup_s']:.2f} | {r['s_per_iter']:.4f} |"
              f" {r['peak_rss_mb']:.0f} | {tm} | {r['mean_dist_mm']:.3f} ({r['init_mean_dist_mm']:.2f}) | {sp} | {mr} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
