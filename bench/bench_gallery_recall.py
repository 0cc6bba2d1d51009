"""Detector recall on a gallery of real films: how many of the 45 catalog bones the bone
detector finds on every frontal film (issue 14: aim >= 40 of 45 on each adult one).

    .venv/bin/python bench/bench_gallery_recall.py --films ../shared/data/films [--weights DIR]
        [--conf 0.25] [--device cpu] [--json OUT.json] [--test-time [plain,clahe,zoom]]
        [--x2b [--x2b-weights DIR] [--quality fast]]

Every file of ``--films`` whose name does not end in ``_lat`` (lateral films are left out) is
read as a user's file (``read_radiograph``) and given to ``Detector.detect_radiograph`` (the
network image of ``to_network_input``, at most one box per bone, confidence >= ``--conf``), as
the pipeline does: a PNG / JPEG stored as its negative is read as that (``X2BRLib.polarity``).
``--test-time``: as ``x2br reconstruct --refine`` with its test-time passes, polarity is decided on the
plain pass and the image chosen then goes through the passes (``X2BRLib/detect/test_time.py``); each
line names the plain pass's count where the passes change it.
Prints one line per film (bones found at --conf and at 0.1, the bone groups missing at --conf)
and the mean and minimum over all frontal films and over the adult ones; ``--children``
names the files that are not adults (default: the three SOURCES.md of the shared gallery
marks as infant / child). No truth is needed: this measures what the detector finds, not
whether its boxes are right.

``--x2b``: also reconstruct every film with the shipped X2B model (``--quality``, the film check
forced so that every film gets a number) and compare each bone's projected box
(``builder.bone_boxes`` of the label volume through the film's geometry) with the detector's
box of that bone on the same network image: box IoU per bone found by both, the film's mean,
and the share of those bones with IoU >= 0.5; and the total bone volume (issue 14: a plausible adult
skeleton holds 700-2,500 ml) and the skeleton's depth front to back (2nd to 98th percentile of its voxels).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

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


def box_iou(a, b) -> float:
    """IoU of two (u0, v0, u1, v1) boxes in pixels (edges at +-0.5 of the centres: + 1 px per side)."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1.0
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1.0
    if iw <= 0 or ih <= 0:
        return 0.0
    area = lambda r: (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0)  # noqa: E731
    return float(iw * ih / (area(a) + area(b) - iw * ih))


def x2b_agreement(recon, det, path, conf: float, passes=False) -> dict:
    """X2B's bones projected onto the film against the detector's boxes on the same network image."""
    from X2BRLib.dataset.builder import bone_boxes

    rec = recon.reconstruct(path)
    projected = {int(r[0]): tuple(r[1:]) for r in bone_boxes(rec.labels_xyz, rec.origin_lps_mm, rec.spacing_mm,
                                                              rec.geometry)}
    found = {d.label: d.box_px for d in det.detect(rec.image, conf=conf, test_time=passes)}
    ious = [box_iou(projected[k], found[k]) for k in sorted(set(projected) & set(found))]
    ys = rec.origin_lps_mm[1] + rec.spacing_mm[1] * np.nonzero(rec.labels_xyz)[1]  # LPS y: front to back
    depth = float(np.percentile(ys, 98) - np.percentile(ys, 2)) if ys.size else 0.0
    return {"x2b_bones_compared": len(ious), "x2b_mean_box_iou": float(statistics.mean(ious)) if ious else 0.0,
            "x2b_share_iou_0.5": float(sum(i >= 0.5 for i in ious) / len(ious)) if ious else 0.0,
            "x2b_volume_ml": float(sum(rec.bone_volumes_ml().values())), "x2b_depth_mm": depth}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--films", required=True, help="folder of real films (lateral ones, *_lat.*, are skipped)")
    ap.add_argument("--weights", help="detector weights folder (default: the shipped Resources/Models/yolo)")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--children", nargs="*", default=list(CHILDREN), help="file stems that are not adults")
    ap.add_argument("--json", help="write per-film results here")
    ap.add_argument("--x2b", action="store_true", help="also X2B's projected bones against the detector's boxes")
    ap.add_argument("--quality", default="fast", choices=["fast", "default", "high"])
    ap.add_argument("--x2b-weights", help="X2B weights folder for --x2b (default: the shipped model)")
    ap.add_argument("--test-time", nargs="?", const="plain,clahe,zoom", metavar="PASSES",
                    help="the detector's test-time passes (X2BRLib/detect/test_time.py; default all: plain,clahe,zoom)")
    args = ap.parse_args(argv)

    import warnings

    from X2BRLib import anatomy
    from X2BRLib.detect.detector import Detector
    from X2BRLib.errors import X2BRError
    from X2BRLib.io.radiograph import read_radiograph
    from X2BRLib.polarity import choose

    det = Detector(args.weights, device=args.device)
    passes = tuple(args.test_time.split(",")) if args.test_time else False
    print(f"weights: {det.info['weights']} (sha256 {det.info['sha256'][:12]}), conf >= {args.conf}, "
          f"device {det.info['device']}" + (f", test-time passes {args.test_time}" if args.test_time else ""))
    names = {b.label: b.name for b in anatomy.BONES}
    recon = None
    if args.x2b:
        from X2BRLib.pipeline import ReconstructOptions, Reconstructor

        recon = Reconstructor(ReconstructOptions(quality=args.quality, device=args.device, force=True,
                                                 detector_weights=args.weights, weights=args.x2b_weights))
    rows = []
    t0 = time.perf_counter()
    for path in frontal_films(Path(args.films)):
        stem = path.name.split(".")[0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rad, found, image, _, pol = choose(read_radiograph(path, default_spacing_mm=None),
                                                   lambda r: det.detect_radiograph(r, conf=0.1))
        except X2BRError as e:
            print(f"{path.name:42s} not read: {e}")
            continue
        plain_found = sum(d.confidence >= args.conf for d in found)
        if passes:  # as the pipeline: polarity decided on the plain pass, the chosen image through the passes
            found = det.detect(image, conf=0.1, test_time=passes)
        at_conf = [d for d in found if d.confidence >= args.conf]
        missing = sorted(set(names) - {d.label for d in at_conf})
        miss_groups: dict[str, int] = {}
        for lab in missing:
            miss_groups[group(names[lab])] = miss_groups.get(group(names[lab]), 0) + 1
        row = {"film": path.name, "adult": stem not in args.children, "found": len(at_conf),
               "found_conf_0.1": len(found), "missing": [names[m] for m in missing],
               "found_plain": plain_found, "read_as": (pol or {}).get("read_as", "stored")}
        rows.append(row)
        print(f"{path.name:42s} {'adult' if row['adult'] else 'child'}  {row['found']:2d}/45 "
              f"(conf 0.1: {row['found_conf_0.1']:2d})  missing: "
              + (", ".join(f"{k} {v}" for k, v in sorted(miss_groups.items())) or "none")
              + ("  [read as its negative]" if row["read_as"] == "negative" else "")
              + (f"  [plain pass {plain_found}]" if passes and plain_found != row["found"] else ""))
        if recon is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row.update(x2b_agreement(recon, det, path, args.conf, passes))
            print(f"{'':42s} X2B vs detector: {row['x2b_bones_compared']} bones, mean box IoU "
                  f"{row['x2b_mean_box_iou']:.3f}, IoU >= 0.5 on {row['x2b_share_iou_0.5']:.0%}; "
                  f"bone volume {row['x2b_volume_ml']:.0f} ml, depth {row['x2b_depth_mm']:.0f} mm")
    if not rows:
        print("no frontal film read")
        return 1
    if recon is not None:
        ious = [r["x2b_mean_box_iou"] for r in rows if r.get("x2b_bones_compared")]
        print(f"X2B vs detector: mean over films of the mean box IoU {statistics.mean(ious):.3f} ({len(ious)} films)")
        adults = [r for r in rows if r["adult"] and "x2b_volume_ml" in r]
        vols = [r["x2b_volume_ml"] for r in adults]
        print(f"X2B on {len(adults)} adult films: bone volume median {statistics.median(vols):.0f} ml "
              f"(range {min(vols):.0f}-{max(vols):.0f}; outside 700-2500 ml on "
              f"{sum(not 700 <= v <= 2500 for v in vols)}), depth (2-98 %) median "
              f"{statistics.median(r['x2b_depth_mm'] for r in adults):.0f} mm")
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
