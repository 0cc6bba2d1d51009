"""The bundled held-out film from a cold start: `x2br reconstruct` and `x2br reconstruct --refine`
each run as a fresh process (Python start-up, imports, models, outputs), timed (wall) with the
child's peak RSS, then scored against the film's ground truth (all-bone and mean per-bone IoU)
and checked for one piece per bone (26-connected label pieces; every STL one closed,
consistently oriented surface).

Usage: python bench/bench_sample_film.py [--device cpu] [--quality default] [--json OUT.json]
       [--weights DIR] [--x2b-only | --test-time-both]
--test-time-both: X2BR twice, without the detector's test-time passes (x2br_plain, --no-test-time) and
with them (x2br_tt, --test-time); otherwise X2BR as `x2br reconstruct --refine` does by default.
Prints a table and one JSON line. The README's sample-film and cold-start numbers come from it
(output: bench/results/sample_film_cpu.txt).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO / "Resources" / "SampleData" / "sample_radiograph.dcm"
GT = REPO / "Resources" / "SampleData" / "sample_radiograph_gt.npz"


def _run_cold(args):
    """(wall s, peak RSS MB) of one `x2br` process; SystemExit with its error when it fails."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryFile() as err:               # a file, not a pipe: a chatty child never blocks
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "X2BRLib.cli", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"x2br {' '.join(args)} failed ({proc.returncode}): "
                             f"{err.read().decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0


def _score(out: Path) -> dict:
    import numpy as np
    import slicerio

    from X2BRLib import metrics
    from X2BRLib.io.outputs import read_stl_faces
    from X2BRLib.refine.pieces import is_one_closed_piece

    labels = slicerio.read_segmentation(str(out / "bones.seg.nrrd"))["voxels"]
    gt = np.load(GT)["gt_labels"]
    per_bone = [v for v in metrics.iou_per_bone(labels, gt).values() if np.isfinite(v)]
    comps = metrics.connected_components_per_bone(labels)
    stls = sorted((out / "meshes").glob("*.stl"))
    closed = sum(is_one_closed_piece(int(f.max()) + 1, f) for f in map(read_stl_faces, stls))
    report = json.loads((out / "report.json").read_text())
    return {"iou_all_bone": round(metrics.iou_all_bone(labels, gt), 4),
            "iou_mean_per_bone": round(float(np.mean(per_bone)), 4),
            "bones_present": sum(1 for c in comps.values() if c),
            "bones_one_piece": sum(1 for c in comps.values() if c == 1),
            "meshes": len(stls), "meshes_one_closed_piece": int(closed),
            "voxels_outside_largest_piece": report["stats"].get("refine", {}).get("voxels_outside_largest_piece"),
            "reconstruct_timings_s": report["timings_s"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quality", default="default", choices=["fast", "default", "high"])
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--weights", help="X2B weights folder (default: the shipped model)")
    ap.add_argument("--x2b-only", action="store_true", help="leave out the --refine run")
    ap.add_argument("--test-time-both", action="store_true",
                    help="X2BR without and with the detector's test-time passes (x2br_plain, x2br_tt)")
    a = ap.parse_args(argv)
    weights = ["--weights", a.weights] if a.weights else []
    methods = (("x2b", []),) if a.x2b_only else (("x2b", []), ("x2br", ["--refine"]))
    if a.test_time_both:
        methods = (("x2b", []), ("x2br_plain", ["--refine", "--no-test-time"]), ("x2br_tt", ["--refine", "--test-time"]))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method, extra in methods:
            out = Path(tmp) / method
            wall, rss = _run_cold(["reconstruct", str(SAMPLE), "-o", str(out), "--device", a.device,
                                   "--quality", a.quality, "--no-progress", *weights, *extra])
            rows[method] = {"cold_wall_s": round(wall, 1), "peak_rss_mb": round(rss), **_score(out)}
    import torch

    result = {"film": SAMPLE.name, "weights": a.weights or "shipped", "device": a.device, "quality": a.quality, "cpu_count": os.cpu_count(),
              "machine": platform.machine(), "torch": torch.__version__,
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "date_utc": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "methods": rows}
    print("| method | cold wall s | peak RSS MB | all-bone IoU | mean per-bone IoU | bones one piece | "
          "meshes one closed piece |")
    print("|---|---|---|---|---|---|---|")
    for m, r in rows.items():
        print(f"| {m} | {r['cold_wall_s']} | {r['peak_rss_mb']} | {r['iou_all_bone']:.3f} | "
              f"{r['iou_mean_per_bone']:.3f} | {r['bones_one_piece']} of {r['bones_present']} | "
              f"{r['meshes_one_closed_piece']} of {r['meshes']} |")
    print(json.dumps(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
