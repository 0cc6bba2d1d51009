"""``x2br evaluate``: held-out metrics of X2B and of a baseline, computed one way
(X2BRLib.metrics) on the dataset's test split.

Baseline ``mean_skeleton``: the average skeleton of the training split's ground
truth (at most ``baseline_cases`` cases) in the box frame, placed at the isocentre
as every film is: the voxels most cases call bone, as many as the cases' mean bone
volume (the bone-vote map thresholded at the level whose voxel count is nearest it),
each taking the bone label most cases give it. It shows what the network gains over
knowing only where a chest usually is. A majority vote (the rule before) keeps almost
nothing across patients (ribs of different people do not overlap): all-bone IoU 0.0175 and
0.0065, Chamfer 42.3 and 42.9 mm on the v5 folds; on two small folds this rule scores 0.0778 and
0.1367, Chamfer 15.3 and 14.8 mm, above one training patient's skeleton (the medoid: 0.0614
and 0.1010): bench/bench_cohort_baselines.py, docs/DECISIONS.md ("Cross-patient baseline").

Report keys (stable): ``split``, ``n_cases``, ``voxel_mm``, ``model``,
``methods.<method>.mean.<metric>`` / ``.std.<metric>`` / ``.count.<metric>``
with metrics as in X2BRLib.metrics.evaluate_case (``iou_all_bone``,
``iou_mean_per_bone``, ``chamfer_l1_unit``, ``chamfer_l1_mm``, ``hd95_mm``,
``iou/<bone>`` ...), ``per_case`` (case file, method -> headline metrics), ``timings_s``; with refinement
also methods ``x2br`` and ``template_only``, ``consistency.<method or ground_truth>.mean.<key>``
(keys of metrics.consistency_metrics) and ``refine`` (options, whether boxes were oracle).
Per source patient: ``per_patient.<patient>.<method>`` (the same summaries as ``methods``
over that patient's cases; every ``per_case`` row names its ``patient``), and
``baseline_patients`` (the train split's patients the mean skeleton was made from).
Several weights on the same films: each further reconstructor ``NAME`` adds method
``x2b_NAME``.
Two views (a dataset built with ``--lateral``): ``views`` names what each model is given,
"pa" (the PA film alone: the method names above) and "pa+lat" (the PA film with the
case's lateral: the same names + ``+lat``, for two-view weights only; one-view weights
are evaluated on the PA film alone), on the same cases; ``lateral_offset_mm`` D shifts
the lateral's geometry the network is given by D mm along SI (the films stay as they
were rendered: the cost of a wrong same-height assumption). Report keys ``views`` and
``lateral_offset_mm``. ``place_lateral`` "auto" places the lateral's camera as ``x2br reconstruct
--lateral-offset auto`` does (X2BRLib.pair: the detector on both films, ``vertical_scale``,
``lateral_placement``, ``place_lateral``) before the network sees it; report key
``place_lateral`` and, per case, ``placement`` (what was applied).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import metrics
from ..dataset.lateral import rendering_geometry
from ..geometry import ProjectionGeometry

HEADLINE = ("iou_all_bone", "iou_mean_per_bone", "chamfer_l1_unit", "chamfer_l1_mm", "hd95_mm")
VIEWS = ("pa", "pa+lat")


def _two_view(reconstructor) -> bool:
    return reconstructor.model.config.get("views", 1) == 2


def volume_threshold(bone_votes: np.ndarray, volume: float) -> int:
    """The vote level t >= 1 whose map ``bone_votes >= t`` has the voxel count nearest ``volume``."""
    hist = np.bincount(np.asarray(bone_votes).ravel(), minlength=2)
    at_least = np.cumsum(hist[::-1])[::-1]  # at_least[t]: voxels with >= t votes
    return int(np.argmin(np.abs(at_least[1:] - float(volume)))) + 1


def vote_counts(root, files, split: str = "train"):
    """Per-voxel label votes over the ground truth of ``files`` (at most 255: uint8 counts) of a
    split: (counts (NUM_CLASSES, V) uint8, grid shape, mean bone voxel count per case)."""
    from ..anatomy import NUM_CLASSES

    counts, shape, volumes = None, None, []
    for name in list(files)[:255]:
        with np.load(Path(root) / split / name) as z:
            gt = z["gt_labels"]
        if counts is None:
            shape = gt.shape
            counts = np.zeros((NUM_CLASSES, gt.size), np.uint8)
            flat = np.arange(gt.size)
        counts[np.minimum(gt.ravel(), NUM_CLASSES - 1), flat] += 1
        volumes.append(int(np.count_nonzero(gt)))
    return counts, shape, float(np.mean(volumes))


def mean_skeleton(data_root, split: str = "train", max_cases: int = 200) -> np.ndarray:
    """(X, Y, Z) uint8 average skeleton over a split's ground truth: the bone-vote map (how many
    cases have any bone at a voxel) thresholded at the level whose voxel count is nearest the
    cases' mean bone voxel count, each voxel then labelled by its most frequent bone."""
    root = Path(data_root)
    files = json.loads((root / "dataset.json").read_text())["splits"][split][:max_cases]
    if not files:
        raise ValueError(f"split {split!r} of {root} is empty")
    counts, shape, volume = vote_counts(root, files, split)
    # a majority of cases (the rule before) keeps almost nothing across people: thin, variable bones
    # (ribs) of different people do not overlap. Keeping the mean volume keeps the most agreed voxels.
    bone_votes = counts[1:].sum(axis=0, dtype=np.int32)
    label = (np.argmax(counts[1:], axis=0) + 1).astype(np.uint8)
    keep = bone_votes >= volume_threshold(bone_votes, volume)
    return np.where(keep, label, 0).astype(np.uint8).reshape(shape)


def _detections_from_boxes(boxes):
    """The dataset's ground-truth boxes as detections (oracle ablation)."""
    from ..detect.detector import Detection
    from ..anatomy import bone

    return [Detection(int(r[0]), bone(int(r[0])).name, 1.0, tuple(float(x) for x in r[1:5])) for r in boxes]


def case_patients(manifest: dict, split: str) -> dict:
    """case file -> source patient of a split (manifests from before patients were recorded:
    the one source's name, or "unknown")."""
    if "case_patients" in manifest:
        return dict(manifest["case_patients"].get(split, {}))
    name = str((manifest.get("sources") or [{}])[0].get("name", "unknown"))
    return {n: name for n in manifest["splits"].get(split, [])}


def evaluate(data_root, reconstructor, split: str = "test", max_cases: int | None = None,
             baseline_cases: int = 200, n_points: int = 30000, progress=None, refiner=None,
             baseline: bool = True, oracle_boxes: bool = False, consistency: bool = False,
             first_case: int = 0, others: dict | None = None, views=None,
             lateral_offset_mm: float = 0.0, place_lateral: str = "none", detector=None) -> dict:
    """Evaluate ``reconstructor`` (pipeline.Reconstructor; it reconstructs on the dataset's
    ground-truth grid) and the mean-skeleton baseline on ``split``.

    refiner (refine.refiner.Refiner): also evaluate ``x2br`` (X2B + detection + template +
    geodesic CPD) and ``template_only`` (detection + template at the nominal depth); with
    oracle_boxes the dataset's ground-truth boxes replace the detector. first_case, max_cases:
    the slice of the split to evaluate (long CPU runs in parts). consistency (implied
    by a refiner): anatomical consistency metrics (metrics.consistency_metrics) of every
    method and of the ground truth, under ``consistency.<method>``. others: {name:
    reconstructor} evaluated on the same films as methods ``x2b_<name>``. views: subset of
    ("pa", "pa+lat") (None: both when the dataset has laterals, else "pa"); lateral_offset_mm,
    place_lateral ("none" | "auto"; auto needs ``detector``, a detect.detector.Detector): see the module doc.
    """
    from dataclasses import replace as _replace

    root = Path(data_root)
    manifest = json.loads((root / "dataset.json").read_text())
    files = manifest["splits"].get(split, [])[first_case:]
    files = files[:max_cases] if max_cases is not None else files
    if not files:
        raise ValueError(f"split {split!r} of {root} has no cases from {first_case} on")
    voxel = float(manifest["gt_voxel_mm"])
    patient_of = case_patients(manifest, split)
    others = dict(others or {})
    has_lat = bool(manifest.get("lateral", False))
    views = tuple(views) if views else (VIEWS if has_lat else ("pa",))
    if not views or set(views) - set(VIEWS):
        raise ValueError(f"views must be among {', '.join(VIEWS)}, got {', '.join(views) or 'none'}")
    if "pa+lat" in views and not has_lat:
        raise ValueError("the dataset has no lateral films (build it with --lateral); evaluate --views pa")
    if place_lateral not in ("none", "auto") or (place_lateral == "auto" and detector is None):
        raise ValueError(f"place_lateral must be none or auto (auto with a detector), got {place_lateral!r}")
    models = {"x2b": reconstructor, **{f"x2b_{n}": o for n, o in others.items()}}
    runs = [(m, v) for m, r in models.items() for v in VIEWS if v in views and (v == "pa" or _two_view(r))]
    if not any(m == "x2b" for m, _ in runs):
        raise ValueError("the weights read one film: they have nothing to show with --views pa+lat alone")
    name_of = {(m, v): m + ("+lat" if v == "pa+lat" else "") for m, v in runs}
    t0 = time.perf_counter()
    base = mean_skeleton(root, "train", baseline_cases) if baseline else None
    t_base = time.perf_counter() - t0
    consistency = consistency or refiner is not None
    methods = list(name_of.values()) + \
        (["x2br", "template_only"] if refiner is not None else []) + (["mean_skeleton"] if baseline else [])
    per_method = {m: [] for m in methods}
    per_cons = {m: [] for m in methods + ["ground_truth"]} if consistency else {}
    per_case, times = [], {m: [] for m in methods}
    for i, name in enumerate(files):
        with np.load(root / split / name) as z:
            image = z["image"].astype(np.float32)
            geom = ProjectionGeometry.from_json(str(z["geometry"]))
            gt = z["gt_labels"]
            boxes = z["boxes"]
            lateral = {}
            if "pa+lat" in views:
                lateral = dict(lateral=z["image_lat"].astype(np.float32), lateral_geometry=rendering_geometry(
                    ProjectionGeometry.from_json(str(z["geometry_lat"])), offset_si_mm=-lateral_offset_mm))
        placement = None
        if lateral and place_lateral == "auto":
            lateral["lateral_geometry"], placement = _placed(detector, image, geom, lateral)
        shape, origin, spacing = geom.box_grid(voxel)
        preds, rec = {}, None
        for (model_name, view), method in name_of.items():
            t1 = time.perf_counter()
            r = models[model_name].reconstruct_image(image, geom, voxel_mm=voxel,
                                                     **(lateral if view == "pa+lat" else {}))
            times[method].append(time.perf_counter() - t1)
            if r.labels_xyz.shape != gt.shape:
                raise ValueError(f"reconstruction grid {r.labels_xyz.shape} differs from the ground truth's "
                                 f"{gt.shape}: use a quality whose voxel is {voxel} mm")
            preds[method] = r.labels_xyz
            rec = rec or r  # the main model's first view: what the refinement starts from
        if refiner is not None:
            t2 = time.perf_counter()
            dets = _detections_from_boxes(boxes) if oracle_boxes else refiner.detect(image)
            t_det = time.perf_counter() - t2
            t3 = time.perf_counter()
            preds["x2br"] = refiner.refine(rec, dets).labels_xyz
            times["x2br"].append(times[methods[0]][-1] + t_det + time.perf_counter() - t3)
            t4 = time.perf_counter()
            preds["template_only"] = refiner.refine(
                rec, dets, options=_replace(refiner.options, use_x2b=False)).labels_xyz
            times["template_only"].append(t_det + time.perf_counter() - t4)
        if base is not None:
            preds["mean_skeleton"] = base
        row = {"case": name, "patient": patient_of.get(name, "unknown"),
               **({"placement": placement} if placement is not None else {})}
        for method in methods:
            m = metrics.evaluate_case(preds[method], gt, spacing, origin, max(geom.box_size_mm), n_points=n_points,
                                      seed=first_case + i, per_bone_surface=False)
            per_method[method].append(m)
            row[method] = {k: m[k] for k in HEADLINE}
        if consistency:
            for method, lab in list(preds.items()) + [("ground_truth", gt)]:
                c = metrics.consistency_metrics(lab, spacing, origin)
                per_cons[method].append(c)
                if method in row:
                    row[method]["consistency"] = c
        per_case.append(row)
        if progress:
            progress(i + 1, len(files), row)
    patients = [row["patient"] for row in per_case]
    out = {
        "split": split, "n_cases": len(files), "voxel_mm": voxel, "data_root": str(root),
        "views": list(views), "lateral_offset_mm": float(lateral_offset_mm), "place_lateral": place_lateral,
        "model": reconstructor.model_info(),
        **({"models": {f"x2b_{n}": o.model_info() for n, o in others.items()}} if others else {}),
        "methods": {k: metrics.aggregate(v) for k, v in per_method.items()},
        "per_patient": {p: {k: metrics.aggregate([m for m, q in zip(v, patients) if q == p])
                            for k, v in per_method.items()} for p in sorted(set(patients))},
        "baseline_patients": sorted(set(case_patients(manifest, "train").values())) if baseline else [],
        "per_case": per_case,
        "timings_s": {"baseline_build": t_base, "reconstruct_mean": float(np.mean(times[methods[0]])),
                      **{f"{m}_mean": float(np.mean(v)) for m, v in times.items() if v},
                      "total": time.perf_counter() - t0},
    }
    if consistency:
        out["consistency"] = {k: metrics.aggregate(v) for k, v in per_cons.items()}
    if refiner is not None:
        out["refine"] = {"options": refiner.options.to_dict(), "oracle_boxes": bool(oracle_boxes)}
    return metrics.json_safe(out)


def _placed(detector, image, geom, lateral: dict):
    """The lateral's geometry placed from the bones found on both films (X2BRLib.pair, as the pair path
    does) and the record: (geometry, {applied, offset_si_mm, magnification, n_fit, residual_mm, why})."""
    from .. import pair

    scale = pair.vertical_scale(detector.detect(image, conf=pair.SCALE_CONFIDENCE), geom,
                                detector.detect(lateral["lateral"], conf=pair.SCALE_CONFIDENCE),
                                lateral["lateral_geometry"])
    placement = pair.lateral_placement(scale, "auto")
    record = {k: placement[k] for k in ("applied", "offset_si_mm", "magnification", "why")}
    record.update(n_fit=scale.get("n_fit"), residual_mm=scale.get("residual_mm"))
    return pair.place_lateral(lateral["lateral_geometry"], placement), record


def _merge_aggregates(parts: list[dict]) -> dict:
    """Pool metrics.aggregate summaries of disjoint case sets: exact means and (ddof 0) stds
    from each part's count, mean and std per key."""
    keys = {k for p in parts for k in p["count"]}
    mean, std, count = {}, {}, {}
    for k in sorted(keys):
        n = np.array([p["count"].get(k, 0) for p in parts], float)
        m = np.array([p["mean"].get(k) if p["count"].get(k, 0) else 0.0 for p in parts], float)
        s = np.array([p["std"].get(k) if p["count"].get(k, 0) else 0.0 for p in parts], float)
        total = n.sum()
        count[k] = int(total)
        if total:
            mu = float((n * m).sum() / total)
            mean[k], std[k] = mu, float(np.sqrt(max((n * (s * s + m * m)).sum() / total - mu * mu, 0.0)))
        else:
            mean[k] = std[k] = float("nan")
    return {"n_cases": int(sum(p["n_cases"] for p in parts)), "mean": mean, "std": std, "count": count}


def merge_reports(reports: list[dict]) -> dict:
    """One report from evaluations of disjoint parts of one split (``--first-case``/``--max-cases``):
    per-case rows concatenated, every summary pooled exactly."""
    if not reports:
        raise ValueError("nothing to merge")
    first = reports[0]
    for r in reports[1:]:
        if ((r["split"], r["voxel_mm"], set(r["methods"]), r.get("lateral_offset_mm", 0.0),
             r.get("place_lateral", "none"))
                != (first["split"], first["voxel_mm"], set(first["methods"]), first.get("lateral_offset_mm", 0.0),
                    first.get("place_lateral", "none"))):
            raise ValueError("reports differ in split, voxel size, methods, lateral offset or placement; "
                             "they cannot be merged")
    cases = [row["case"] for r in reports for row in r["per_case"]]
    if len(set(cases)) != len(cases):
        raise ValueError("reports share cases; merge only disjoint parts")
    out = dict(first)
    out["n_cases"] = len(cases)
    out["per_case"] = [row for r in reports for row in r["per_case"]]
    out["methods"] = {m: _merge_aggregates([r["methods"][m] for r in reports]) for m in first["methods"]}
    if all("per_patient" in r for r in reports):
        patients = sorted({p for r in reports for p in r["per_patient"]})
        out["per_patient"] = {p: {m: _merge_aggregates([r["per_patient"][p][m] for r in reports
                                                         if p in r["per_patient"]]) for m in first["methods"]}
                              for p in patients}
    if "consistency" in first:
        out["consistency"] = {m: _merge_aggregates([r["consistency"][m] for r in reports])
                              for m in first["consistency"]}
    out["timings_s"] = {k: float(np.mean([r["timings_s"][k] for r in reports if k in r["timings_s"]]))
                        for k in first["timings_s"]}
    out["merged_from"] = len(reports)
    return metrics.json_safe(out)
