"""Detector recall on a gallery of real films: how many of the 45 catalog bones the bone
detector finds on every frontal film (issue 14: aim >= 40 of 45 on each adult one).

    .venv/bin/python bench/bench_gallery_recall.py --films ../shared/data/films [--weights DIR]
        [--conf 0.25] [--device cpu] [--json OUT.json]

Every file of ``--films`` whose name does not end in ``_lat`` (lateral films are left out) is
read as a user's file (``read_radiograph``) and given to ``Detector.detect_radiograph`` (the
network image of ``to_network_input``, at most one box per bone, confidence >= ``--conf``).
Prints one line per film (bones found at --conf and at 0.1, the bone groups missing at --conf)
and the mean and minimum over all frontal films and over the adult ones; ``--children``
names the files that are not adults (default: the three SOURCES.md of the shared gallery
marks as infant / child). No truth is needed: this measures what the detector finds, not
whether its boxes are right.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FILM_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".nrrd", ".mha", ".nii", ".gz", ""}
CHILDREN = ("nih_00005618_000_frontal", "nih_00011386_000_frontal", "nih_00019534_000_ap")


def frontal_films(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FILM_SUFFIXES
                  and not p.name.startswith(".") and not p.name.split(".")[0].endswith("_lat")
                  and p.suffix.lower() not in {".md", ".txt", ".csv", ".json"})


def group(name: str) -> str:
    return name.split("_")[0] if not name.startswith("vertebra") else "vertebra"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--films", required=True, help="folder of real films (lateral ones, *_lat.*, are skipped)")
    ap.add_argument("--weights", help="detector weights folder (default: the shipped Resources/Models/yolo)")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--children", nargs="*", default=list(CHILDREN), help="file stems that are not adults")
    ap.add_argument("--json", help="write per-film results here")
    args = ap.parse_args(argv)

    import warnings

    from X2BRLib import anatomy
    from X2BRLib.detect.detector import Detector
    from X2BRLib.errors import X2BRError

    det = Detector(args.weights, device=args.device)
    print(f"weights: {det.info['weights']} (sha256 {det.info['sha256'][:12]}), conf >= {args.conf}, "
          f"device {det.info['device']}")
    names = {b.label: b.name for b in anatomy.BONES}
    rows = []
    t0 = time.perf_counter()
    for path in frontal_films(Path(args.films)):
        stem = path.name.split(".")[0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found, _, _ = det.detect_radiograph(path, conf=0.1)
        except X2BRError as e:
            print(f"{path.name:42s} not read: {e}")
            continue
        at_conf = [d for d in found if d.confidence >= args.conf]
        missing = sorted(set(names) - {d.label for d in at_conf})
        miss_groups: dict[str, int] = {}
        for lab in missing:
            miss_groups[group(names[lab])] = miss_groups.get(group(names[lab]), 0) + 1
        row = {"film": path.name, "adult": stem not in args.children, "found": len(at_conf),
               "found_conf_0.1": len(found), "missing": [names[m] for m in missing]}
        rows.append(row)
        print(f"{path.name:42s} {'adult' if row['adult'] else 'child'}  {row['found']:2d}/45 "
              f"(conf 0.1: {row['found_conf_0.1']:2d})  missing: "
              + (", ".join(f"{k} {v}" for k, v in sorted(miss_groups.items())) or "none"))
    if not rows:
        print("no frontal film read")
        return 1
    summary = {}
    for label, sel in (("all frontal", rows), ("adult frontal", [r for r in rows if r["adult"]])):
        if sel:
            f = [r["found"] for r in sel]
            summary[label] = {"films": len(sel), "mean": round(statistics.mean(f), 2), "min": min(f),
                              "at_least_40": sum(x >= 40 for x in f)}
            print(f"{label}: {len(sel)} films, mean {statistics.mean(f):.1f} of 45, min {min(f)}, "
                  f">= 40 on {summary[label]['at_least_40']}")
    print(f"time: {time.perf_counter() - t0:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"weights": det.info, "conf": args.conf, "films": rows,
                                               "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
