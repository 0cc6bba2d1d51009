"""``x2br evaluate``: held-out metrics of X2B and of a baseline, computed one way
(X2BRLib.metrics) on the dataset's test split.

Baseline ``mean_skeleton``: the voxel-wise majority label of the training
split's ground truth (at most ``baseline_cases`` cases), i.e. the average
skeleton in the box frame, placed at the isocentre as every film is. It shows
what the network gains over knowing only where a chest usually is.

Report keys (stable): ``split``, ``n_cases``, ``voxel_mm``, ``model``,
``methods.<method>.mean.<metric>`` / ``.std.<metric>`` / ``.count.<metric>``
with metrics as in X2BRLib.metrics.evaluate_case (``iou_all_bone``,
``iou_mean_per_bone``, ``chamfer_l1_unit``, ``chamfer_l1_mm``, ``hd95_mm``,
``iou/<bone>`` ...), ``per_case`` (case file, method -> headline metrics),
``timings_s``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import metrics
from ..geometry import ProjectionGeometry

HEADLINE = ("iou_all_bone", "iou_mean_per_bone", "chamfer_l1_unit", "chamfer_l1_mm", "hd95_mm")


def mean_skeleton(data_root, split: str = "train", max_cases: int = 200) -> np.ndarray:
    """(X, Y, Z) uint8 majority-vote label volume over a split's ground truth."""
    root = Path(data_root)
    files = json.loads((root / "dataset.json").read_text())["splits"][split][:max_cases]
    if not files:
        raise ValueError(f"split {split!r} of {root} is empty")
    from ..anatomy import NUM_CLASSES

    counts, shape = None, None
    for name in files[:255]:  # uint8 counts
        with np.load(root / split / name) as z:
            gt = z["gt_labels"]
        if counts is None:
            shape = gt.shape
            counts = np.zeros((NUM_CLASSES, gt.size), np.uint8)
            flat = np.arange(gt.size)
        counts[np.minimum(gt.ravel(), NUM_CLASSES - 1), flat] += 1
    return np.argmax(counts, axis=0).astype(np.uint8).reshape(shape)


def evaluate(data_root, reconstructor, split: str = "test", max_cases: int | None = None,
             baseline_cases: int = 200, n_points: int = 30000, progress=None) -> dict:
    """Evaluate ``reconstructor`` (pipeline.Reconstructor; it reconstructs on the dataset's
    ground-truth grid) and the mean-skeleton baseline on ``split``."""
    root = Path(data_root)
    manifest = json.loads((root / "dataset.json").read_text())
    files = manifest["splits"].get(split, [])[:max_cases]
    if not files:
        raise ValueError(f"split {split!r} of {root} is empty")
    voxel = float(manifest["gt_voxel_mm"])
    t0 = time.perf_counter()
    baseline = mean_skeleton(root, "train", baseline_cases)
    t_base = time.perf_counter() - t0
    per_method = {"x2b": [], "mean_skeleton": []}
    per_case, recon_s = [], []
    for i, name in enumerate(files):
        with np.load(root / split / name) as z:
            image = z["image"].astype(np.float32)
            geom = ProjectionGeometry.from_json(str(z["geometry"]))
            gt = z["gt_labels"]
        shape, origin, spacing = geom.box_grid(voxel)
        t1 = time.perf_counter()
        rec = reconstructor.reconstruct_image(image, geom, voxel_mm=voxel)
        recon_s.append(time.perf_counter() - t1)
        if rec.labels_xyz.shape != gt.shape:
            raise ValueError(f"reconstruction grid {rec.labels_xyz.shape} differs from the ground truth's "
                             f"{gt.shape}: use a quality whose voxel is {voxel} mm")
        row = {"case": name}
        for method, pred in (("x2b", rec.labels_xyz), ("mean_skeleton", baseline)):
            m = metrics.evaluate_case(pred, gt, spacing, origin, max(geom.box_size_mm), n_points=n_points,
                                      seed=i, per_bone_surface=False)
            per_method[method].append(m)
            row[method] = {k: m[k] for k in HEADLINE}
        per_case.append(row)
        if progress:
            progress(i + 1, len(files), row)
    return metrics.json_safe({
        "split": split, "n_cases": len(files), "voxel_mm": voxel, "data_root": str(root),
        "model": reconstructor.model_info(),
        "methods": {k: metrics.aggregate(v) for k, v in per_method.items()},
        "per_case": per_case,
        "timings_s": {"baseline_build": t_base, "reconstruct_mean": float(np.mean(recon_s)),
                      "total": time.perf_counter() - t0},
    })
