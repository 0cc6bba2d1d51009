"""Benchmark: what the lateral film's detector boxes give the refinement (issue 15, refine/lateral_fit.py).

    PYTHONPATH=. .venv/bin/python bench/bench_lateral_fit.py --data DS --rows OUT.jsonl \
        [--max-cases 10] [--settings 0.5:30 0.3:30 0.7:30 0.5:15] [--weights DIR] [--device cpu]

DS: a dataset built with ``x2br build-dataset --lateral`` (its test split: films without a
between-exposure error, so the lateral geometry given is the true one). For every case:

1. the two-view model (default: the shipped v6) reconstructs from the PA film and the lateral
   (``x2b+lat``, as ``x2br reconstruct PA --lateral LAT``);
2. the bone detector runs on both films (the lateral at the pair check's confidence, 0.1, as
   ``pair.prepare_lateral`` does; the refiner keeps what it needs);
3. X2BR refines that reconstruction without the lateral fit (``x2br``: ``use_lateral=False``) and
   with it at each setting ``CONF:CAP`` (``x2br[lat CONF CAP]``: ``lateral_conf``,
   ``lateral_max_shift_mm``). A setting that moves the same bones by the same amounts as one
   already run reuses its result (the rest of the refinement is deterministic).

Metrics: :func:`X2BRLib.metrics.evaluate_case` as ``x2br evaluate`` computes them (all-bone IoU,
mean per-bone IoU, Chamfer-L1 mm, HD95 mm, ``iou/<bone>``), and each bone's antero-posterior
error: |centroid - the truth's centroid| along the lateral's columns (the axis the lateral fit
moves), for the template as placed before CPD (``placed_ap_mm``) and for the final bones
(``ap_mm``); ``true_boxes`` (``true_boxes_extent``): the placement before CPD moved by the truth's boxes on the
lateral (the dataset's ``boxes_lat``) instead of the detector's, what the method gives with perfect
boxes (also scaled to their extent). A setting ``CONF:CAP:extent`` runs the fit with
``match_extent`` (``RefineOptions.lateral_extent``). Every case is one JSON line appended to ``--rows`` (a re-run skips cases already
there); the summary over all rows is printed at the end (``--summary-only``: just that).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASE = "x2br"


def _name(conf: float, cap: float, extent: bool = False) -> str:
    return f"x2br[lat {conf:g} {cap:g}{' extent' if extent else ''}]"


def _settings(items) -> list[tuple[float, float, bool]]:
    """CONF:CAP or CONF:CAP:extent -> (conf, cap, match_extent)."""
    out = []
    for item in items:
        conf, cap, *rest = str(item).split(":")
        out.append((float(conf), float(cap), rest == ["extent"]))
    return out


def _ap_errors(labels_xyz, gt, origin, spacing, ap_dir) -> dict:
    """{bone label: |centroid difference| along ap_dir (mm)} for bones in both volumes."""
    from X2BRLib.refine.fit import label_centroids

    mine = label_centroids(labels_xyz, origin, spacing, min_voxels=1)
    truth = label_centroids(gt, origin, spacing, min_voxels=1)
    return {b: abs(float((mine[b] - truth[b]) @ ap_dir)) for b in mine if b in truth}


def _vertex_ap_errors(vertices, vertex_labels, gt, origin, spacing, ap_dir) -> dict:
    """The same for a placed template (vertex means against the truth's voxel centroids)."""
    from X2BRLib.refine.fit import label_centroids

    truth = label_centroids(gt, origin, spacing, min_voxels=1)
    out = {}
    for b in np.unique(vertex_labels):
        if int(b) in truth:
            c = np.asarray(vertices)[vertex_labels == b].mean(0)
            out[int(b)] = abs(float((c - truth[int(b)]) @ ap_dir))
    return out


def run_case(path: Path, reconstructor, refiner, settings, voxel: float) -> dict:
    from X2BRLib import anatomy, metrics
    from X2BRLib.filmcheck import REFUSE_BELOW_CONFIDENCE
    from X2BRLib.geometry import ProjectionGeometry
    from X2BRLib.pair import LateralFilm
    from X2BRLib.refine.fit import fit_template
    from X2BRLib.refine.lateral_fit import lateral_ap_shifts
    from X2BRLib.x2b.evaluate import _detections_from_boxes

    with np.load(path) as z:
        image = z["image"].astype(np.float32)
        geom = ProjectionGeometry.from_json(str(z["geometry"]))
        gt = z["gt_labels"]
        image_lat = z["image_lat"].astype(np.float32)
        geom_lat = ProjectionGeometry.from_json(str(z["geometry_lat"]))
        true_lat_boxes = _detections_from_boxes(z["boxes_lat"])  # the truth's boxes on the lateral
    shape, origin, spacing = geom.box_grid(voxel)
    in_gt = np.bincount(gt.ravel(), minlength=256) > 0
    ap_dir = np.array(geom_lat.u_dir)
    t0 = time.perf_counter()
    rec = reconstructor.reconstruct_image(image, geom, voxel_mm=voxel, lateral=image_lat, lateral_geometry=geom_lat)
    dets = refiner.detect(image)
    lat_dets = refiner.detector.detect(image_lat, conf=REFUSE_BELOW_CONFIDENCE)
    rec = replace(rec, lateral=LateralFilm(None, image_lat, geom_lat, {}, lat_dets))
    t_x2b = time.perf_counter() - t0

    def score(labels) -> dict:
        m = metrics.evaluate_case(labels, gt, spacing, origin, max(geom.box_size_mm), seed=0, per_bone_surface=False)
        keep = {k: m[k] for k in ("iou_all_bone", "iou_mean_per_bone", "chamfer_l1_mm", "hd95_mm")}
        keep["iou_per_bone"] = {b.name: m[f"iou/{b.name}"] for b in anatomy.BONES if in_gt[b.label]}
        keep["ap_mm"] = float(np.mean(list(_ap_errors(labels, gt, origin, spacing, ap_dir).values())))
        return keep

    row = {"case": path.name, "x2b+lat": score(rec.labels_xyz)}
    # the placement before CPD, as the refiner makes it (fit_template, then lateral_ap_shifts)
    tmpl = refiner.template
    V0, _ = fit_template(tmpl, rec.geometry, dets, (rec.labels_xyz, rec.origin_lps_mm, rec.spacing_mm),
                         min_voxels=refiner.options.min_voxels)
    labels_v = np.asarray(tmpl.vertex_labels)
    row["lateral_boxes"] = {"n": len(lat_dets), "conf>=0.3": sum(d.confidence >= 0.3 for d in lat_dets),
                            "conf>=0.5": sum(d.confidence >= 0.5 for d in lat_dets),
                            "conf>=0.7": sum(d.confidence >= 0.7 for d in lat_dets)}
    # the method with perfect boxes (the dataset's, confidence 1, no cap): what a better detector could give
    for key, extent in (("true_boxes", False), ("true_boxes_extent", True)):
        V_true, moved_true = lateral_ap_shifts(V0, labels_v, geom_lat, true_lat_boxes, 0.0, 1e9, extent)
        row[key] = {"placed_ap_mm": float(np.mean(list(_vertex_ap_errors(
            V_true, labels_v, gt, origin, spacing, ap_dir).values()))), "bones_moved": len(moved_true),
            "mean_abs_shift_mm": float(np.mean([abs(m["shift_mm"]) for m in moved_true.values()] or [0.0]))}
    done = {}
    for name, conf, cap, extent in [(BASE, None, None, False)] + [(_name(*s), *s) for s in settings]:
        t1 = time.perf_counter()
        if conf is None:
            V, moved = V0, {}
            opt = replace(refiner.options, use_lateral=False)
        else:
            V, moved = lateral_ap_shifts(V0, labels_v, geom_lat, lat_dets, conf, cap, extent)
            opt = replace(refiner.options, use_lateral=True, lateral_conf=conf, lateral_max_shift_mm=cap,
                          lateral_extent=extent)
        key = tuple(sorted((b, m["shift_mm"], m["extent_scale"]) for b, m in moved.items()))
        placed = float(np.mean(list(_vertex_ap_errors(V, labels_v, gt, origin, spacing, ap_dir).values())))
        if key in done:
            result = dict(done[key], reused_from=done[key]["name"])
        else:
            out = refiner.refine(rec, dets, options=opt)
            result = {"name": name, **score(out.labels_xyz), "refine_s": round(time.perf_counter() - t1, 2)}
            done[key] = result
        row[name] = {**{k: v for k, v in result.items() if k != "name"}, "placed_ap_mm": placed,
                     "bones_moved": len(moved),
                     "mean_abs_shift_mm": float(np.mean([abs(m["shift_mm"]) for m in moved.values()] or [0.0])),
                     "clamped": sum(abs(m["wanted_mm"]) > cap for m in moved.values()) if moved else 0}
    row["x2b_s"] = round(t_x2b, 2)
    return row


def summarise(rows: list[dict]) -> str:
    from X2BRLib import anatomy

    methods = [k for k in rows[0] if k == "x2b+lat" or k.startswith(BASE)]
    lines = [f"cases: {len(rows)} ({', '.join(r['case'] for r in rows)})",
             "| method | all-bone IoU | mean per-bone IoU | Chamfer-L1 mm | HD95 mm | AP error mm (final) "
             "| AP error mm (placed, before CPD) | bones moved / case | mean shift mm | clamped / case |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        def mean(key, default=None):
            vals = [r[m].get(key, default) for r in rows]
            vals = [v for v in vals if v is not None]
            return float(np.mean(vals)) if vals else float("nan")

        lines.append(f"| {m} | {mean('iou_all_bone'):.4f} | {mean('iou_mean_per_bone'):.4f} | "
                     f"{mean('chamfer_l1_mm'):.3f} | {mean('hd95_mm'):.2f} | {mean('ap_mm'):.2f} | "
                     + ("- | - | - | - |" if m == "x2b+lat" else
                        f"{mean('placed_ap_mm'):.2f} | {mean('bones_moved'):.1f} | {mean('mean_abs_shift_mm'):.2f} | "
                        f"{mean('clamped'):.1f} |"))
    lat = [m for m in methods if m.startswith(BASE + "[")]
    if lat:
        lines.append("")
        lines.append(f"per-case all-bone IoU difference against {BASE} (no lateral fit):")
        for m in lat:
            d = [r[m]["iou_all_bone"] - r[BASE]["iou_all_bone"] for r in rows]
            lines.append(f"  {m}: mean {np.mean(d):+.4f}, min {np.min(d):+.4f}, max {np.max(d):+.4f}, "
                         f"better on {sum(x > 0 for x in d)}, worse on {sum(x < 0 for x in d)}, "
                         f"same on {sum(x == 0 for x in d)}")
        lines.append("")
        lines.append("mean per-bone IoU by bone group (cases where the bone is in the truth):")
        groups = sorted({b.group for b in anatomy.BONES})
        lines.append("| method | " + " | ".join(groups) + " |")
        lines.append("|---|" + "---|" * len(groups))
        for m in [BASE] + lat:
            cells = []
            for g in groups:
                vals = [v for r in rows for k, v in r[m]["iou_per_bone"].items() if anatomy.bone(k).group == g]
                cells.append(f"{np.mean(vals):.4f}" if vals else "-")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for key in ("true_boxes", "true_boxes_extent"):
        true = [r[key] for r in rows if key in r]
        if true:
            lines.append("")
            lines.append(f"the placement moved by the truth's lateral boxes (confidence 1, no cap"
                         f"{', with the extent' if key.endswith('extent') else ''}; {len(true)} cases): "
                         f"AP error mm (placed, before CPD) {np.mean([t['placed_ap_mm'] for t in true]):.2f} "
                         f"(x2br without the fit on these cases: "
                         f"{np.mean([r[BASE]['placed_ap_mm'] for r in rows if key in r]):.2f}), "
                         f"bones moved / case {np.mean([t['bones_moved'] for t in true]):.1f}, "
                         f"mean shift mm {np.mean([t['mean_abs_shift_mm'] for t in true]):.2f}")
    boxes = [r["lateral_boxes"] for r in rows]
    lines.append("")
    lines.append("lateral detector boxes per case (mean): " + ", ".join(
        f"{k} {np.mean([b[k] for b in boxes]):.1f}" for k in boxes[0]))
    return "\n".join(lines)


def main(argv=None) -> int:
    import warnings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder built with --lateral")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-cases", type=int, default=10)
    ap.add_argument("--first-case", type=int, default=0)
    ap.add_argument("--settings", nargs="*", default=["0.5:30"],
                    help="CONF:CAP_MM[:extent] of the lateral fit")
    ap.add_argument("--weights", default=None, help="two-view X2B weights (default: the shipped v6)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", required=True, help="JSON lines, one per case (appended; cases there are skipped)")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args(argv)
    rows_path = Path(args.rows)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()] \
        if rows_path.is_file() else []
    if not args.summary_only:
        import torch

        from X2BRLib.pipeline import DEFAULT_TWO_VIEW_WEIGHTS, ReconstructOptions, Reconstructor
        from X2BRLib.refine.refiner import Refiner

        torch.set_num_threads(args.threads)
        warnings.simplefilter("ignore")
        root = Path(args.data)
        manifest = json.loads((root / "dataset.json").read_text())
        if not manifest.get("lateral"):
            raise SystemExit(f"{root}: no lateral films (build it with --lateral)")
        voxel = float(manifest["gt_voxel_mm"])
        files = manifest["splits"][args.split][args.first_case:args.first_case + args.max_cases]
        reconstructor = Reconstructor(ReconstructOptions(device=args.device, check_films=False,
                                                         weights=args.weights or DEFAULT_TWO_VIEW_WEIGHTS))
        refiner = Refiner(device=reconstructor.device)
        have = {r["case"] for r in rows}
        settings = _settings(args.settings)
        for name in files:
            if name in have:
                continue
            t0 = time.perf_counter()
            row = run_case(root / args.split / name, reconstructor, refiner, settings, voxel)
            row["patient"] = manifest.get("case_patients", {}).get(args.split, {}).get(name, "unknown")
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            with rows_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({"case": name, "patient": row["patient"], "seconds": row["seconds"],
                              **{m: round(row[m]["iou_all_bone"], 4) for m in row
                                 if m == "x2b+lat" or m.startswith(BASE)}}), flush=True)
    if rows:
        print(summarise(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
