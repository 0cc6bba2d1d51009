"""Cross-patient baselines and refinement templates on a leave-one-patient-out fold (issue 12).

Part 1, the mean-skeleton baseline (what ``x2br evaluate`` reports as ``mean_skeleton``): rules for
turning the training split's ground truth (several patients, virtual poses, all in the box frame
centred on the isocentre) into one skeleton, scored on the fold's test split (patients never in
training) with X2BRLib.metrics, as evaluate does:

- ``majority``: a voxel is bone where most training cases have bone (the rule before this bench);
- ``volume``: the bone-vote map thresholded at the level whose voxel count is nearest the mean
  bone voxel count of the training cases (``evaluate.mean_skeleton``);
- ``patient:<name>``: one training patient's skeleton at its mean pose (the ``volume`` rule over
  that patient's cases only); ``medoid``: the training patient whose skeleton agrees best (mean
  all-bone IoU) with the other training patients' (chosen without the test patient).

Part 2, the template of the refinement (``--templates``): ``template_only`` (boxes + template at the
nominal depth, no X2B, no CPD; refine.refiner) with templates built from different patients
(``scripts/make_template.py --prepared``), and ``per_film``: on each film the template whose
projected bone-box layout fits the film's boxes best (``template_layout_residual`` here). Boxes: the
detector's (``--boxes detector``) or the dataset's ground-truth boxes (``--boxes oracle``).

    python bench/bench_cohort_baselines.py --data FOLD [--max-cases 8] \
        [--templates name=path.npz ...] [--boxes oracle|detector|both] [--skip-skeletons]
FOLD: ``x2br build-dataset --prepared ... --test-patients P`` at 2 mm. Prints one table per part.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEYS = ("iou_all_bone", "iou_mean_per_bone", "chamfer_l1_mm", "hd95_mm")


def skeleton(counts, shape, n_cases: int, rule: str, volume: float | None = None) -> np.ndarray:
    """One label volume from vote counts: ``majority`` or ``volume`` (see the module docstring)."""
    from X2BRLib.x2b.evaluate import volume_threshold

    bone_votes = counts[1:].sum(axis=0, dtype=np.int32)
    label = (np.argmax(counts[1:], axis=0) + 1).astype(np.uint8)
    t = n_cases // 2 + 1 if rule == "majority" else volume_threshold(bone_votes, volume)
    return np.where(bone_votes >= t, label, 0).astype(np.uint8).reshape(shape)


def score(pred, root: Path, files, voxel: float, n_points: int = 30000):
    from X2BRLib import metrics
    from X2BRLib.geometry import ProjectionGeometry

    rows = []
    for i, name in enumerate(files):
        with np.load(root / "test" / name) as z:
            gt = z["gt_labels"]
            geom = ProjectionGeometry.from_json(str(z["geometry"]))
        shape, origin, spacing = geom.box_grid(voxel)
        p = pred(i, name) if callable(pred) else pred
        rows.append(metrics.evaluate_case(p, gt, spacing, origin, max(geom.box_size_mm), n_points=n_points,
                                          seed=i, per_bone_surface=False))
    return metrics.aggregate(rows)


def print_table(title: str, results: dict) -> None:
    print(f"\n{title}")
    print(f"  {'method':34s}" + "".join(f"{k:>19s}" for k in KEYS) + "   bone voxels")
    for m, (agg, extra) in results.items():
        print(f"  {m:34s}" + "".join(f"{agg['mean'][k]:11.4f} ±{agg['std'][k]:.3f}" for k in KEYS)
              + f"   {extra}", flush=True)


def skeleton_part(root: Path, manifest: dict, test_files, voxel: float) -> None:
    from X2BRLib.x2b.evaluate import case_patients, mean_skeleton, vote_counts

    train = manifest["splits"]["train"]
    of = case_patients(manifest, "train")
    t0 = time.perf_counter()
    counts, shape, vol = vote_counts(root, train)
    res = {}
    for rule in ("majority", "volume"):
        sk = skeleton(counts, shape, min(len(train), 255), rule, vol)
        res[rule] = (score(sk, root, test_files, voxel), f"{np.count_nonzero(sk)} (train mean {vol:.0f})")
    shipped = mean_skeleton(root, "train")
    res["evaluate.mean_skeleton"] = (score(shipped, root, test_files, voxel), f"{np.count_nonzero(shipped)}")
    del counts
    per = {}
    for p in sorted(set(of.values())):
        files = [f for f in train if of.get(f) == p]
        c, s, v = vote_counts(root, files)
        per[p] = skeleton(c, s, len(files), "volume", v)
        del c
        res[f"patient:{p}"] = (score(per[p], root, test_files, voxel), f"{np.count_nonzero(per[p])}")
    if len(per) > 1:
        from X2BRLib import metrics

        agree = {p: np.mean([metrics.iou_all_bone(per[p], per[q]) for q in per if q != p]) for p in per}
        med = max(agree, key=agree.get)
        print("patients' mean all-bone IoU with the other training patients: "
              + ", ".join(f"{p} {a:.3f}" for p, a in agree.items()) + f" -> medoid {med}")
        res[f"medoid ({med})"] = res[f"patient:{med}"]
    print_table(f"mean-skeleton baselines on {len(test_files)} test films of "
                f"{sorted(set(case_patients(manifest, 'test').values()))} ({time.perf_counter() - t0:.0f} s)", res)


def template_part(root: Path, test_files, voxel: float, templates: dict, boxes_mode: str, device: str) -> None:
    from X2BRLib.geometry import ProjectionGeometry
    from X2BRLib.pipeline import Reconstruction
    from X2BRLib.refine.refiner import RefineOptions, Refiner
    from X2BRLib.refine.template import SkeletonTemplate
    from X2BRLib.x2b.evaluate import _detections_from_boxes

    tpls = {n: SkeletonTemplate.load(p) for n, p in templates.items()}
    opt = RefineOptions(use_x2b=False)
    refiners = {n: Refiner(opt, device=device, template=t) for n, t in tpls.items()}
    det = next(iter(refiners.values())).detector if boxes_mode != "oracle" else None
    modes = ["oracle", "detector"] if boxes_mode == "both" else [boxes_mode]
    films = []
    for name in test_files:
        with np.load(root / "test" / name) as z:
            films.append((z["image"].astype(np.float32), ProjectionGeometry.from_json(str(z["geometry"])),
                          z["boxes"]))
    for mode in modes:
        t0 = time.perf_counter()
        cache, chosen = {}, []
        for i, (image, geom, boxes) in enumerate(films):
            dets = _detections_from_boxes(boxes) if mode == "oracle" else det.detect(image, conf=opt.detect_conf)
            shape, origin, spacing = geom.box_grid(voxel)
            rec = Reconstruction(np.zeros(shape, np.uint8), origin, spacing, geom, image, None)
            for n, r in refiners.items():
                cache[(i, n)] = r.refine(rec, dets).labels_xyz
            resid = {n: template_layout_residual(t, geom, dets) for n, t in tpls.items()}
            chosen.append(min(resid, key=resid.get))
        res = {f"template_only[{n}]": (score(lambda i, _n, n=n: cache[(i, n)], root, test_files, voxel), "")
               for n in tpls}
        picks = "chose " + ", ".join(f"{n} {chosen.count(n)}" for n in tpls if chosen.count(n))
        res["template_only[per_film]"] = (score(lambda i, _n: cache[(i, chosen[i])], root, test_files, voxel), picks)
        print_table(f"template_only, {mode} boxes, {len(films)} test films ({time.perf_counter() - t0:.0f} s)", res)


def template_layout_residual(template, geometry, detections) -> float:
    """How well a template's bone-box layout fits a film's boxes: the template at the film's
    isocentre, each bone's vertices projected to a 2D box, one least-squares scale ``s`` and
    shift on the box centres (weighted by box size, as refine.fit.fit_template's global step);
    the weighted RMS, in film pixels, of the centres' residual and the sizes' (detected -
    ``s`` x template), over the bones both have (inf with fewer than 3).
    detections: objects with ``label`` and ``box_px``."""
    from X2BRLib.refine.fit import _centre, _global_similarity, _size, projected_box

    V = np.asarray(template.vertices, np.float64) + np.asarray(geometry.isocenter_lps_mm)[None]
    labels = np.asarray(template.vertex_labels)
    dets = {int(d.label): d for d in detections or ()}
    both = [b for b in np.unique(labels) if int(b) in dets]
    if len(both) < 3:
        return float("inf")
    tpl = np.stack([projected_box(geometry, V[labels == b]) for b in both])
    det = np.stack([np.asarray(dets[int(b)].box_px, float) for b in both])
    w = np.array([np.sqrt(np.prod(_size(d))) for d in det])
    src, dst = np.stack([_centre(t) for t in tpl]), np.stack([_centre(d) for d in det])
    s, t = _global_similarity(src, dst, w)
    r_centre = dst - (s * src + t)
    r_size = np.stack([_size(d) for d in det]) - s * np.stack([_size(t_) for t_ in tpl])
    r2 = (r_centre ** 2).sum(1) + (r_size ** 2).sum(1)
    return float(np.sqrt((w * r2).sum() / w.sum()))


def main(argv=None) -> int:
    import warnings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--max-cases", type=int, default=None)
    ap.add_argument("--templates", nargs="*", default=[], help="name=path.npz of built templates")
    ap.add_argument("--boxes", choices=("oracle", "detector", "both"), default="both")
    ap.add_argument("--skip-skeletons", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    root = Path(args.data)
    manifest = json.loads((root / "dataset.json").read_text())
    test_files = manifest["splits"]["test"][:args.max_cases]
    voxel = float(manifest["gt_voxel_mm"])
    if not args.skip_skeletons:
        skeleton_part(root, manifest, test_files, voxel)
    if args.templates:
        template_part(root, test_files, voxel, dict(t.split("=", 1) for t in args.templates), args.boxes, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
