"""Real PA + lateral pairs (no 3D truth, no spacing): what the lateral film changes, by proxies (issue 15 item 5).

    PYTHONPATH=. .venv/bin/python bench/bench_real_pairs.py --films ../shared/data/films \\
        [--detector-weights DIR] [--weights DIR] [--previews /tmp/realpairs]

Every pair ``<name>_pa.* + <name>_lat.*`` of the folder is reconstructed twice with the SAME two-view
weights (default: the shipped v6), default quality, as ``x2br reconstruct`` does it
(``Reconstructor.reconstruct``: film check, scale, pair checks): from the PA film alone and from the
pair. Then, for each:

* (a) lateral agreement: each reconstructed bone projected through the lateral film's geometry (the
  pair path's: same isocentre and height as the PA), its 2D box (``builder.bone_boxes``, the detector's
  training convention) against the detector's box of that bone on the lateral; mean box IoU over the
  bones the detector finds at confidence >= 0.25 (a bone detected but not reconstructed counts 0);
  also for the midline bones (vertebrae, sternum: no left/right ambiguity on a lateral), with left and
  right exchangeable (the best of a bone and its other side's box: on a lateral they overlap), and the
  mean |column offset| of the box centres in mm at the isocentre (columns run front to back on a lateral);
* (b) the same on the PA film (its detections and network geometry);
* (c) total bone volume (ml), bones found, front-to-back (y) extent of the rib cage (ribs) and of the
  spine (C7-L1), and the rib cage's width (x), in mm;
* (d) the pair checks (view, spacing source, vertical scale check, mirror check, warnings) and the
  wall time of each reconstruction.

A pair refused by a check is reported with the line (no force). ``--previews`` writes each run's
preview (the PA-alone one with the lateral panel too, bones projected with the pair's lateral geometry)
outside the repository: the films and anything derived from them are never committed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
CONF = 0.25


def box_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def agreement(rec, geom, dets) -> dict:
    """Projected bone boxes of ``rec`` on the film of ``geom`` against detections (same frame)."""
    from X2BRLib import anatomy
    from X2BRLib.dataset.builder import bone_boxes

    proj = {int(r[0]): tuple(float(v) for v in r[1:])
            for r in bone_boxes(rec.labels_xyz, rec.origin_lps_mm, rec.spacing_mm, geom)}
    names = anatomy.by_name()
    mm_per_px = geom.spacing_mm[0] / geom.magnification
    per, mid, swap, du = {}, [], [], []
    for d in dets:
        if d.confidence < CONF:
            continue
        b = anatomy.bone(d.label)
        p = proj.get(int(d.label))
        iou = box_iou(p, d.box_px) if p is not None else 0.0
        per[b.name] = round(iou, 4)
        best = iou
        if b.laterality:
            other = names[b.name.replace(b.laterality, "right" if b.laterality == "left" else "left")]
            q = proj.get(other.label)
            best = max(best, box_iou(q, d.box_px) if q is not None else 0.0)
        swap.append(best)
        if b.group in ("vertebra", "sternum"):
            mid.append(iou)
        if p is not None:
            du.append(abs(0.5 * (p[0] + p[2] - d.box_px[0] - d.box_px[2])) * mm_per_px)
    mean = (lambda xs: round(float(np.mean(xs)), 4) if xs else None)
    return {"n_detected": len(per), "n_reconstructed": len(du), "iou_mean": mean(list(per.values())),
            "iou_midline": mean(mid), "n_midline": len(mid), "iou_sides_exchangeable": mean(swap),
            "centre_offset_u_mm": mean(du), "per_bone": per}


def shape_numbers(rec) -> dict:
    """Total volume, bones found, y (front-to-back) extent of ribs and spine, x extent of the ribs (mm)."""
    from X2BRLib import anatomy

    lab = rec.labels_xyz
    sp = np.asarray(rec.spacing_mm, float)
    out = {"volume_ml": round(sum(rec.bone_volumes_ml().values()), 1), "bones_found": len(rec.bone_volumes_ml())}
    for key, group, axis in (("ribs_ap_mm", "rib", 1), ("spine_ap_mm", "vertebra", 1), ("ribs_width_mm", "rib", 0)):
        vals = [b.label for b in anatomy.group(group)]
        idx = np.nonzero(np.isin(lab, vals).any(axis=tuple(a for a in range(3) if a != axis)))[0]
        out[key] = round(float((idx.max() - idx.min() + 1) * sp[axis]), 1) if len(idx) else None
    return out


def main(argv=None) -> int:
    import torch

    from X2BRLib.errors import InputError
    from X2BRLib.io import outputs
    from X2BRLib.io.preview_text import preview_title
    from X2BRLib.io.radiograph import read_radiograph, to_network_input
    from X2BRLib.pipeline import DEFAULT_TWO_VIEW_WEIGHTS, ReconstructOptions, Reconstructor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--films", required=True, help="a folder with <name>_pa.* and <name>_lat.* films")
    ap.add_argument("--weights", default=str(DEFAULT_TWO_VIEW_WEIGHTS))
    ap.add_argument("--detector-weights", default=None, help="the shipped detector when not given")
    ap.add_argument("--quality", default="default", choices=["fast", "default", "high"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--previews", default=None, help="a folder OUTSIDE the repository for the preview PNGs")
    ap.add_argument("--only", default=None, help="comma-separated pair names (default: all)")
    ap.add_argument("--no-follow-mirror-warning", dest="follow_mirror_warning", action="store_false",
                    help="do not run a pair again with the other --lateral-view when its lateral looks mirrored")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    t_load = time.perf_counter()
    rc = Reconstructor(ReconstructOptions(quality=args.quality, device=args.device, weights=args.weights,
                                          detector_weights=args.detector_weights))
    rc.check_two_view_weights()
    det = rc.detector.info
    print(f"# weights {args.weights}; detector {det['weights']} (sha256 {det['sha256'][:12]}); "
          f"quality {args.quality}; device {args.device}; torch threads {torch.get_num_threads()}; "
          f"loaded in {time.perf_counter() - t_load:.1f} s", flush=True)
    films = sorted(p for p in Path(args.films).iterdir() if p.suffix.lower() in SUFFIXES)
    pairs = []
    for lat in (p for p in films if "_lat." in p.name):
        name = lat.name.split("_lat.")[0]
        pa = next((p for p in films if p.name.startswith(name + "_pa.")), None)
        if pa is not None and (args.only is None or name in args.only.split(",")):
            pairs.append((name, pa, lat))
    rows = []
    size = (rc.detector.imgsz,) * 2
    for name, pa, lat in pairs:
        rc.options.lateral, rc.options.lateral_view = None, None
        t0 = time.perf_counter()
        r_pa = rc.reconstruct(pa)
        pa_s = round(time.perf_counter() - t0, 1)
        frontal, pa_dets = rc.check_and_scale(read_radiograph(pa, default_spacing_mm=None), with_detections=True)
        pa_geom = to_network_input(frontal, size)[1]
        view = None  # as read (the file's, else LL); then, if the mirror check warns, the other view
        while True:
            row = {"name": name, "lateral_view_given": view, "pa_s": pa_s}
            rc.options.lateral, rc.options.lateral_view = lat, view
            t0 = time.perf_counter()
            try:
                r_pair = rc.reconstruct(pa)
            except InputError as e:
                row["refused"] = str(e)
                rows.append(row)
                print(f"{name}: pair refused: {e}", flush=True)
                break
            finally:
                rc.options.lateral, rc.options.lateral_view = None, None
            row["pair_s"] = round(time.perf_counter() - t0, 1)
            lat_film = r_pair.lateral
            lat_geom = to_network_input(lat_film.radiograph, size)[1]
            rec = lat_film.record
            vs = rec["pair"]["vertical_scale"]
            row["checks"] = {
                "pa_spacing_mm": round(float(frontal.geometry.spacing_mm[0]), 4),
                "pa_spacing_source": frontal.meta["scale"]["source"], "lateral_view": rec["view"],
                "lateral_view_source": rec["view_source"], "lateral_spacing_source": rec["spacing"]["source"],
                "vertical_scale": {k: vs[k] for k in ("checked", "n_bones", "ratio", "offset_mm")},
                "mirror_check": {k: rec["mirror_check"][k]
                                 for k in ("back_side", "from", "contrast", "looks_mirrored")},
                "lateral_looks_frontal": rec["film_check"].get("looks_frontal"),
                "warnings": r_pair.report()["warnings"]}
            for key, r in (("pa", r_pa), ("pair", r_pair)):
                row[key] = {"lateral": agreement(r, lat_geom, lat_film.detections),
                            "pa": agreement(r, pa_geom, pa_dets), **shape_numbers(r)}
            rows.append(row)
            a, b = row["pa"], row["pair"]
            print(f"{name} (lateral {rec['view']}, {rec['view_source']}): lateral IoU {a['lateral']['iou_mean']} -> "
                  f"{b['lateral']['iou_mean']} (n={b['lateral']['n_detected']}), PA IoU {a['pa']['iou_mean']} -> "
                  f"{b['pa']['iou_mean']} (n={b['pa']['n_detected']}); {row['pa_s']} s / {row['pair_s']} s; "
                  f"mirror {row['checks']['mirror_check']}", flush=True)
            if args.previews:
                folder = Path(args.previews)
                folder.mkdir(parents=True, exist_ok=True)
                for key, r in (("pa", r_pa), ("pair", r_pair)):
                    outputs.write_preview_png(folder / f"{name}_{rec['view']}_{key}.png", r.image, r.geometry,
                                              r.labels_xyz, r.origin_lps_mm, r.spacing_mm, overwrite=True,
                                              title=f"{name}: v6 from the {'PA alone' if key == 'pa' else 'pair'}; "
                                                    + preview_title(r.report()),
                                              lateral=(lat_film.image, lat_film.geometry))
            if view is not None or not args.follow_mirror_warning or not rec["mirror_check"]["looks_mirrored"]:
                break
            view = "RL" if rec["view"] == "LL" else "LL"  # what the warning tells the user to pass
    print()
    print("| pair | lateral view | lateral: bones det. | lateral box IoU PA alone -> pair | midline | "
          "sides exchangeable | lateral centre offset mm | PA film: bones det. | PA box IoU | volume ml | "
          "rib cage AP mm | spine AP mm | s PA / pair |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    f = (lambda r, view, k: "-" if r[view][k] is None else f"{r[view][k]:.3f}" if "iou" in k else f"{r[view][k]:.1f}")
    for row in rows:
        if "refused" in row:
            print(f"| {row['name']} | refused: {row['refused']} ||||||||||||")
            continue
        a, b, c = row["pa"], row["pair"], row["checks"]
        arrow = (lambda view, k: f"{f(a, view, k)} -> {f(b, view, k)}")
        print(f"| {row['name']} | {c['lateral_view']} ({'--lateral-view' if row['lateral_view_given'] else 'as read'}"
              f"{', looks mirrored' if c['mirror_check']['looks_mirrored'] else ''}) | {b['lateral']['n_detected']} | "
              f"{arrow('lateral', 'iou_mean')} | {arrow('lateral', 'iou_midline')} (n={b['lateral']['n_midline']}) | "
              f"{arrow('lateral', 'iou_sides_exchangeable')} | {arrow('lateral', 'centre_offset_u_mm')} | "
              f"{b['pa']['n_detected']} | {arrow('pa', 'iou_mean')} | {a['volume_ml']} -> {b['volume_ml']} | "
              f"{a['ribs_ap_mm']} -> {b['ribs_ap_mm']} | {a['spine_ap_mm']} -> {b['spine_ap_mm']} | "
              f"{row['pa_s']} / {row['pair_s']} |")
    ok = [r for r in rows if "refused" not in r]
    last = {r["name"]: r for r in ok}  # per pair: the run the warnings lead to (the other view when mirrored)
    for label, done in (("as read", [r for r in ok if r["lateral_view_given"] is None]),
                        ("after the mirror warning", list(last.values()))):
        print()
        for view in ("lateral", "pa"):
            for k in ("iou_mean", "iou_midline", "iou_sides_exchangeable", "centre_offset_u_mm"):
                xs = [(r["pa"][view][k], r["pair"][view][k]) for r in done
                      if r["pa"][view][k] is not None and r["pair"][view][k] is not None]
                if xs:
                    x = np.array(xs, float)
                    print(f"{label}: mean over {len(xs)} pairs, {view} film, {k}: PA alone {x[:, 0].mean():.3f}, "
                          f"pair {x[:, 1].mean():.3f} (pair higher on {int((x[:, 1] > x[:, 0]).sum())})")
        for k in ("volume_ml", "ribs_ap_mm", "spine_ap_mm", "ribs_width_mm"):
            x = np.array([(r["pa"][k], r["pair"][k]) for r in done if None not in (r["pa"][k], r["pair"][k])], float)
            if len(x):
                print(f"{label}: mean over {len(x)} pairs, {k}: PA alone {x[:, 0].mean():.1f}, "
                      f"pair {x[:, 1].mean():.1f}")
    if ok:
        print()
        for row in ok:
            c = row["checks"]
            print(f"{row['name']}: PA spacing {c['pa_spacing_mm']} mm ({c['pa_spacing_source']}); lateral "
                  f"{c['lateral_view']}, spacing {c['lateral_spacing_source']}; vertical scale {c['vertical_scale']}; "
                  f"mirror {c['mirror_check']}; warnings: {c['warnings']}")
    print(json.dumps({"weights": args.weights, "detector": rc.detector.info, "quality": args.quality,
                      "device": args.device, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                      "load_average_after": [round(x, 2) for x in os.getloadavg()],
                      "date_utc": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "pairs": rows}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
