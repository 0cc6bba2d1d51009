"""Issue 14's target "--refine keeps every bone one piece on every frontal gallery film", measured:
every frontal film of a gallery through `x2br reconstruct --refine` (one command, one sub-folder per
film), then each bone of each `bones.seg.nrrd` counted in 26-connected pieces
(`metrics.connected_components_per_bone`) and each `meshes/*.stl` checked as one closed surface.

    python bench/bench_gallery_pieces.py --films ../shared/data/films -o /tmp/gallery_refine \
        [--quality fast] [--detector-weights DIR] [--test-time | --no-test-time] [--only STEM ...] [--count-only]

--count-only: count what an earlier run left in -o (e.g. a run stopped before its last film).
--test-time / --no-test-time: passed on to `x2br reconstruct` (its default when neither).
--only: just these films (file names without extension).

Prints one line per film (bones written, bones in more than one piece, meshes not one closed piece,
total bone volume (report.json bone_volumes_ml), bones X2BR's detection found (report.json
stats.refine.n_detections), its detection time (timings_s.refine_detect), the scale used and where
from) and a total. Lateral films (*_lat.*) and SOURCES.md are skipped.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from X2BRLib import metrics  # noqa: E402
from X2BRLib.io.outputs import read_stl_faces  # noqa: E402
from X2BRLib.refine.pieces import is_one_closed_piece  # noqa: E402

FILM_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".mha", ".nrrd", ".tif", ".tiff"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--films", required=True)
    ap.add_argument("-o", "--output", required=True, help="folder for the reconstructions (must not exist)")
    ap.add_argument("--quality", default="default", choices=["fast", "default", "high"])
    ap.add_argument("--detector-weights")
    ap.add_argument("--count-only", action="store_true", help="no reconstruction: count the outputs already in -o")
    ap.add_argument("--test-time", action=argparse.BooleanOptionalAction, default=None,
                    help="x2br reconstruct --test-time / --no-test-time (default: the command's default)")
    ap.add_argument("--only", nargs="+", metavar="STEM", help="only these films (names without extension)")
    args = ap.parse_args(argv)
    films = sorted(p for p in Path(args.films).iterdir()
                   if p.suffix.lower() in FILM_SUFFIXES and "_lat." not in p.name
                   and (not args.only or p.stem in args.only))
    if args.only and len(films) != len(set(args.only)):
        missing = sorted(set(args.only) - {p.stem for p in films})
        print(f"--only: no frontal film named {', '.join(missing)} in {args.films}")
        return 2
    cmd = [sys.executable, "-m", "X2BRLib.cli", "reconstruct", *map(str, films), "-o", args.output,
           "--refine", "--quality", args.quality, "--no-progress"]
    if args.detector_weights:
        cmd += ["--detector-weights", args.detector_weights]
    if args.test_time is not None:
        cmd.append("--test-time" if args.test_time else "--no-test-time")
    t0 = time.time()
    run = None if args.count_only else subprocess.run(cmd, capture_output=True, text=True)
    flag = "" if args.test_time is None else (" --test-time" if args.test_time else " --no-test-time")
    print(f"# {len(films)} frontal films, `x2br reconstruct --refine --quality {args.quality}{flag}`: "
          + ("counted from an earlier run's outputs" if run is None
             else f"exit {run.returncode}, {time.time() - t0:.0f} s"))
    import slicerio

    totals = dict(films=0, bones=0, broken_bones=0, open_meshes=0, volume_ml=0.0, detect_s=0.0)
    from X2BRLib.io.batch import output_folders

    for f, out in zip(films, output_folders(films, args.output)):  # the folders `x2br reconstruct` wrote
        seg = out / "bones.seg.nrrd"
        if not seg.exists():
            print(f"{f.name:40s} no output (refused, failed, or not reached)")
            continue
        comps = metrics.connected_components_per_bone(slicerio.read_segmentation(str(seg))["voxels"])
        present = [n for n, c in comps.items() if c]
        broken = sorted(n for n, c in comps.items() if c > 1)
        open_ = [p.stem for p in sorted((out / "meshes").glob("*.stl"))
                 if not is_one_closed_piece(int((fc := read_stl_faces(p)).max()) + 1, fc)]
        rep = json.loads((out / "report.json").read_text())
        sc = rep.get("scale") or {}
        volume = sum(rep.get("bone_volumes_ml", {}).values())
        refine = (rep.get("stats") or {}).get("refine") or {}
        detect_s = rep.get("timings_s", {}).get("refine_detect", 0.0)
        tt = refine.get("test_time") or {}
        totals["films"] += 1
        totals["bones"] += len(present)
        totals["broken_bones"] += len(broken)
        totals["open_meshes"] += len(open_)
        totals["volume_ml"] += volume
        totals["detect_s"] += detect_s
        print(f"{f.name:40s} bones {len(present):2d}  in >1 piece: {len(broken)} {broken or ''}  "
              f"meshes not one closed piece: {len(open_)}  volume {volume:.0f} ml  "
              f"detected {refine.get('n_detections', '?')} (passes {','.join(tt.get('passes', [])) or 'plain'}) "
              f"in {detect_s:.2f} s  scale {sc.get('spacing_mm', '?')} mm ({sc.get('source', '?')})")
    print(f"total: {totals['films']} films reconstructed, {totals['bones']} bones written, {totals['broken_bones']} "
          f"bones in more than one piece, {totals['open_meshes']} meshes not one closed piece, bone volume "
          f"{totals['volume_ml']:.0f} ml, X2BR's detection {totals['detect_s']:.2f} s")
    if run is not None and run.returncode:
        print("stderr tail:", run.stderr.strip().splitlines()[-3:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
