"""Evaluation metrics: computed ONE way for every method (X2B network, baselines, refinement).

All functions are pure (no I/O, no global state) and deterministic given ``seed``.

Inputs
------
* Label volumes: (X, Y, Z) integer arrays (uint8) on the same voxel grid, values
  are catalog labels (:mod:`X2BRLib.anatomy`), 0 = background.
* ``spacing_mm``: (3,) voxel size along the X, Y, Z index axes; ``origin_mm``:
  (3,) LPS mm of the CENTRE of voxel (0, 0, 0), as ``ProjectionGeometry.box_grid``
  gives. The grid is assumed axis-aligned with LPS.
* ``box_scale_mm``: the reconstruction box's largest side (``unit_box_scale_mm``),
  the same scale ``ProjectionGeometry.to_unit_box`` divides by.

Surfaces and distances
----------------------
Surfaces are marching-cubes meshes (level 0.5) of the zero-padded binary mask,
so they run half-way between inside and outside voxel centres. ``n_points``
points are sampled on the triangles, area-weighted, with ``numpy`` generator
``seed`` (the same seed for prediction and ground truth, so identical inputs
give exactly 0). Chamfer-L1 follows Occupancy Networks (Mescheder et al. 2019):
``0.5 * (mean_a min_b |a-b| + mean_b min_a |b-a|)`` with Euclidean
(unsquared) distances; "L1" names the mean of unsquared distances. ONet
normalises shapes to the unit cube; X2BR normalises by the reconstruction
box's largest side (one fixed scale for every patient, not a per-shape
bounding box), so ``*_unit = *_mm / box_scale_mm``. With point-to-point
distances there is a sampling floor of roughly a fraction of the mean point
spacing ``sqrt(area / n_points)``; compare methods at the same ``n_points``.

Keys of :func:`evaluate_case` (flat dict; floats, NaN where undefined)
-------------------------------------------------------------------------
``iou_all_bone``            IoU of foreground (label > 0) masks.
``iou_mean_per_bone``       mean of ``iou/<name>`` over bones present in GT
                            (a bone missing in the prediction counts as 0).
``iou/<name>``              per catalog bone (every bone, stable); 0 when only one
                            side has it, NaN when absent in both.
``chamfer_l1_mm``           Chamfer-L1 of all-bone surfaces, mm.
``chamfer_l1_unit``         the same divided by ``box_scale_mm``.
``hd95_mm``                 95th-percentile symmetric Hausdorff of all-bone surfaces, mm.
``chamfer_l1_mm/<name>``, ``hd95_mm/<name>``  (``per_bone_surface`` only) per catalog
                            bone; NaN unless the bone is in both GT and prediction.
``chamfer_l1_mm_mean_per_bone``, ``hd95_mm_mean_per_bone``  (``per_bone_surface``
                            only) nanmean of the per-bone values (bones in both).
``n_bones_gt``              number of bones present in GT.
``missing_bones``           bones present in GT with an empty prediction.
``extra_bones``             bones present in the prediction but not in GT.
All-bone distances are NaN when either foreground is empty.

:func:`aggregate` returns ``{"n_cases", "mean": {key: nanmean}, "std": {key:
nanstd (ddof=0)}, "count": {key: cases with a finite value}}``; it accepts
``None`` for NaN so case dicts can go through strict JSON (:func:`json_safe`).
"""
from __future__ import annotations

import math

import numpy as np

from scipy import ndimage
from scipy.spatial import cKDTree

from .anatomy import BONES
from .meshing import is_watertight, surface_mesh  # re-exported: metrics.surface_mesh stays valid
from .errors import InputError

_STRUCT26 = np.ones((3, 3, 3), bool)


# ---------------------------------------------------------------------------- overlap
def _check_pair(pred, gt):
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise InputError(f"label volumes must be 3D and on the same grid, got {pred.shape} and {gt.shape}")
    return pred, gt


def _label_counts(pred, gt, nbins=256):
    """(pred count, gt count, intersection count) per label value, each (nbins,)."""
    p, g = pred.ravel(), gt.ravel()
    if p.dtype.kind not in "ui" or g.dtype.kind not in "ui" or p.min(initial=0) < 0 or g.min(initial=0) < 0:
        raise InputError(f"label volumes must hold non-negative integers, got {pred.dtype} and {gt.dtype}")
    nbins = max(nbins, int(p.max(initial=0)) + 1, int(g.max(initial=0)) + 1)
    inter = np.bincount(g[p == g], minlength=nbins)
    return np.bincount(p, minlength=nbins), np.bincount(g, minlength=nbins), inter


def iou_per_bone(pred_labels, gt_labels, labels=None) -> dict[int, float]:
    """IoU per label value. pred_labels, gt_labels: (X, Y, Z) integer label volumes on
    the same grid. labels: label values to report (all catalog bones when None).
    Returns {label: IoU}; NaN for a label absent from both volumes."""
    return _ious(*_label_counts(*_check_pair(pred_labels, gt_labels)), labels)


def _ious(cp, cg, ci, labels=None) -> dict[int, float]:
    labels = [b.label for b in BONES] if labels is None else [int(x) for x in labels]
    out = {}
    for lab in labels:
        union = cp[lab] + cg[lab] - ci[lab] if 0 <= lab < len(cp) else 0
        out[lab] = float(ci[lab] / union) if union > 0 else math.nan
    return out


def iou_all_bone(pred_labels, gt_labels) -> float:
    """IoU of the foreground (any bone, label > 0) masks; NaN when both are empty."""
    pred, gt = _check_pair(pred_labels, gt_labels)
    p, g = pred > 0, gt > 0
    union = np.count_nonzero(p | g)
    return float(np.count_nonzero(p & g) / union) if union else math.nan


# ---------------------------------------------------------------------------- surfaces
def sample_mesh(verts, faces, n=30000, seed=0) -> np.ndarray:
    """n points (n, 3) sampled uniformly by area on a triangle mesh (deterministic by seed)."""
    verts, faces = np.asarray(verts, float), np.asarray(faces, np.int64)
    if len(faces) == 0 or n <= 0:
        return np.zeros((0, 3))
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if not area.sum() > 0:
        return np.zeros((0, 3))
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(faces), size=int(n), p=area / area.sum())
    r1, r2 = rng.random(int(n)), rng.random(int(n))
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    return np.einsum("nk,nkd->nd", w, tri[idx])


def surface_points(mask, spacing_mm, origin_mm, n=30000, seed=0) -> np.ndarray:
    """(n, 3) points in LPS mm on the boundary of a binary (X, Y, Z) mask; (0, 3) if empty."""
    return sample_mesh(*surface_mesh(mask, spacing_mm, origin_mm), n=n, seed=seed)


# ---------------------------------------------------------------------------- distances
def surface_distances(points_a, points_b):
    """Directed nearest-neighbour distances: (d_ab (Na,), d_ba (Nb,)), Euclidean."""
    a = np.asarray(points_a, float).reshape(-1, 3)
    b = np.asarray(points_b, float).reshape(-1, 3)
    if len(a) == 0 or len(b) == 0:
        return None
    d_ab = cKDTree(b).query(a, k=1, workers=-1)[0]
    d_ba = cKDTree(a).query(b, k=1, workers=-1)[0]
    return d_ab, d_ba


def _chamfer(d):
    return math.nan if d is None else float(0.5 * (d[0].mean() + d[1].mean()))


def _hd95(d):
    return math.nan if d is None else float(max(np.percentile(d[0], 95), np.percentile(d[1], 95)))


def chamfer_l1(points_a, points_b) -> float:
    """ONet Chamfer-L1 between (N, 3) point sets, in their units; NaN if either is empty."""
    return _chamfer(surface_distances(points_a, points_b))


def hausdorff95(points_a, points_b) -> float:
    """Max of the two directed 95th-percentile distances, in the points' units; NaN if empty."""
    return _hd95(surface_distances(points_a, points_b))


def unit_box_scale_mm(geometry) -> float:
    """The largest side of a ProjectionGeometry's reconstruction box (the unit-box scale)."""
    return float(max(geometry.box_size_mm))


# ---------------------------------------------------------------------------- one case
def _nanmean(values) -> float:
    v = np.asarray([x for x in values if x is not None], float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan


def iou_summary(pred_labels, gt_labels) -> dict:
    """{"iou_all_bone", "iou_mean_per_bone"} of two label volumes on the same grid: the two
    headline overlap numbers, as :func:`evaluate_case` reports them (per-bone mean over the
    bones present in the ground truth)."""
    pred, gt = _check_pair(pred_labels, gt_labels)
    cp, cg, ci = _label_counts(pred, gt)
    return _iou_summary(pred, gt, cg, _ious(cp, cg, ci))


def _iou_summary(pred, gt, cg, ious) -> dict:
    return {"iou_all_bone": iou_all_bone(pred, gt),
            "iou_mean_per_bone": _nanmean([ious[b.label] for b in BONES if cg[b.label] > 0])}


def evaluate_case(pred_labels, gt_labels, spacing_mm, origin_mm, box_scale_mm,
                  n_points=30000, seed=0, per_bone_surface=True) -> dict:
    """All metrics of one case; the keys are documented in the module docstring.

    pred_labels, gt_labels: (X, Y, Z) integer label volumes on the same grid.
    spacing_mm, origin_mm: (3,) grid geometry (see module docstring).
    box_scale_mm: reconstruction box's largest side in mm (> 0).
    n_points: surface samples per surface (all-bone and each bone). seed: sampling seed.
    Cost: two KD-tree queries of n_points per surface pair (about 40 pairs with
    per-bone surfaces); per_bone_surface=False is much faster for training-time checks.
    """
    pred, gt = _check_pair(pred_labels, gt_labels)
    if not box_scale_mm > 0:
        raise InputError(f"box_scale_mm must be positive, got {box_scale_mm}")
    spacing = np.asarray(spacing_mm, float).reshape(3)
    origin = np.asarray(origin_mm, float).reshape(3)
    cp, cg, ci = _label_counts(pred, gt)
    ious = _ious(cp, cg, ci)
    in_gt = [b for b in BONES if cg[b.label] > 0]
    out: dict = _iou_summary(pred, gt, cg, ious)
    out.update({f"iou/{b.name}": ious[b.label] for b in BONES})

    d = surface_distances(surface_points(pred > 0, spacing, origin, n_points, seed),
                          surface_points(gt > 0, spacing, origin, n_points, seed))
    out["chamfer_l1_mm"] = _chamfer(d)
    out["chamfer_l1_unit"] = out["chamfer_l1_mm"] / float(box_scale_mm)
    out["hd95_mm"] = _hd95(d)

    if per_bone_surface:
        nb = max(len(cp), 256)
        sl_p = ndimage.find_objects(pred, max_label=nb)
        sl_g = ndimage.find_objects(gt, max_label=nb)
        for b in BONES:
            d = None
            sp, sg = sl_p[b.label - 1], sl_g[b.label - 1]
            if sp is not None and sg is not None:
                pts = []
                for vol, sl in ((pred, sp), (gt, sg)):
                    start = np.array([s.start for s in sl])
                    pts.append(surface_points(vol[sl] == b.label, spacing, origin + start * spacing,
                                              n_points, seed + b.label))
                d = surface_distances(*pts)
            out[f"chamfer_l1_mm/{b.name}"] = _chamfer(d)
            out[f"hd95_mm/{b.name}"] = _hd95(d)
        out["chamfer_l1_mm_mean_per_bone"] = _nanmean([out[f"chamfer_l1_mm/{b.name}"] for b in BONES])
        out["hd95_mm_mean_per_bone"] = _nanmean([out[f"hd95_mm/{b.name}"] for b in BONES])

    out["n_bones_gt"] = len(in_gt)
    out["missing_bones"] = sum(1 for b in in_gt if cp[b.label] == 0)
    out["extra_bones"] = sum(1 for b in BONES if cp[b.label] > 0 and cg[b.label] == 0)
    return out


# ---------------------------------------------------------------------------- many cases
def aggregate(cases) -> dict:
    """Summary over case dicts (from evaluate_case): {"n_cases", "mean", "std", "count"}.

    mean/std: nanmean / nanstd (ddof=0) per key over the cases that have it; None
    counts as NaN; non-numeric values are skipped. count: finite values per key.
    """
    cases = list(cases)
    keys: dict[str, None] = {}
    for c in cases:
        keys.update({k: None for k, v in c.items()
                     if v is None or (isinstance(v, (int, float, np.number)) and not isinstance(v, bool))})
    mean, std, count = {}, {}, {}
    for k in keys:
        v = np.asarray([math.nan if c.get(k) is None else float(c[k]) for c in cases], float)
        v = v[np.isfinite(v)]
        count[k] = int(len(v))
        mean[k] = float(v.mean()) if len(v) else math.nan
        std[k] = float(v.std()) if len(v) else math.nan
    return {"n_cases": len(cases), "mean": mean, "std": std, "count": count}


def json_safe(obj):
    """Copy of a (nested) metrics dict with NaN / inf replaced by None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# ---------------------------------------------------------------------------- consistency
def connected_components_per_bone(labels) -> dict[str, int]:
    """Number of 26-connected components of every catalog bone in an (X, Y, Z) label
    volume: {bone name: count}, 0 for an absent bone. A well-formed bone has 1."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"label volume must be 3D, got shape {labels.shape}")
    slices = ndimage.find_objects(labels, max_label=max(256, int(labels.max(initial=0))))
    out = {}
    for b in BONES:
        sl = slices[b.label - 1]
        out[b.name] = 0 if sl is None else int(ndimage.label(labels[sl] == b.label, structure=_STRUCT26)[1])
    return out


RIB_BIN_DEG = 6.0             # azimuth bin of a rib's centre-line (about 10-14 mm of arc)
BODY_OVERLAP_FRACTION = 0.2   # vertebral-body z-overlap above which a pair counts as overlapping


def _bone_points(labels, slices, label, spacing, origin):
    sl = slices[label - 1]
    if sl is None:
        return np.zeros((0, 3))
    idx = np.argwhere(labels[sl] == label) + [s.start for s in sl]
    return origin + idx * spacing


def rib_centreline(points_lps_mm, axis_xy, side: str, bin_deg: float = RIB_BIN_DEG):
    """Centre-line of one rib: centroids of its voxel centres binned by azimuth about a
    vertical axis through ``axis_xy`` (LPS mm, the rib cage's centre in the axial plane).

    points_lps_mm: (N, 3) the rib's voxel centres. side: ``left`` | ``right`` (right ribs
    are mirrored so both run from the spine, about +90 deg, down to the front, about -80).
    Returns (centres (K, 3) ordered from the spine to the front, n_gaps: empty bins between
    the first and last occupied ones).
    """
    p = np.asarray(points_lps_mm, float)
    if len(p) == 0:
        return np.zeros((0, 3)), 0
    dx = p[:, 0] - axis_xy[0]
    theta = np.degrees(np.arctan2(p[:, 1] - axis_xy[1], dx if side == "left" else -dx))
    # cut the circle at the widest empty gap so a rib never straddles the cut
    s = np.sort(theta)
    gaps = np.diff(np.r_[s, s[0] + 360.0])
    start = s[(int(np.argmax(gaps)) + 1) % len(s)]
    theta = (theta - start) % 360.0
    k = np.floor(theta / bin_deg).astype(int)
    n = int(k.max()) + 1
    count = np.bincount(k, minlength=n)
    sums = np.stack([np.bincount(k, p[:, a], minlength=n) for a in range(3)], 1)
    occupied = count > 0
    centres = sums[occupied] / count[occupied, None]
    # azimuth grows from the front round to the spine: reverse to run from the spine
    return centres[::-1], int(np.count_nonzero(~occupied))


def turning_deg_per_cm(centres) -> float:
    """Total absolute turning angle of a polyline (K, 3) in degrees per cm of its length;
    NaN with fewer than 3 points."""
    c = np.asarray(centres, float)
    if len(c) < 3:
        return math.nan
    seg = np.diff(c, axis=0)
    length = np.linalg.norm(seg, axis=1)
    u = seg / np.maximum(length, 1e-9)[:, None]
    cos = np.clip(np.einsum("ij,ij->i", u[:-1], u[1:]), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).sum() / (length.sum() / 10.0))


def consistency_metrics(labels_xyz, spacing_mm, origin_lps_mm) -> dict:
    """Anatomical consistency of ONE label volume (no ground truth needed).

    labels_xyz: (X, Y, Z) integer catalog labels on an LPS-aligned grid; spacing_mm (3,);
    origin_lps_mm (3,) centre of voxel (0, 0, 0). Returns a flat dict (NaN where undefined):

    ``n_bones_present``                 catalog bones with at least one voxel.
    ``frac_bones_single_component``     among present bones, the fraction that is one
                                        26-connected component.
    ``mean_components_per_bone``        mean 26-connected components over present bones.
    ``frac_bones_watertight``           fraction of present bones whose marching-cubes
                                        surface (mask cropped and zero-padded by one voxel,
                                        so a bone touching the grid edge is capped) passes
                                        :func:`is_watertight`. A sanity check of the surface
                                        extraction: ~1 for any mask.
    ``n_ribs_present``                  ribs with voxels.
    ``rib_turning_deg_per_cm_mean``     mean over ribs of the rib centre-line's total absolute
                                        turning angle per cm (:func:`rib_centreline`: centroids
                                        of the rib's voxels in 6 deg azimuth bins about a
                                        vertical axis through the rib cage's centre; lower is
                                        smoother; ground truth of the public CT, nominal
                                        patient: 8.9 at 2 mm, 9.5 at 3 mm voxels; the sharply
                                        curved first ribs score 16-46). ``rib_turning_deg_per_cm_max``: the worst rib.
    ``frac_ribs_unbroken``              fraction of present ribs that are one 26-connected
                                        component AND whose centre-line has no empty azimuth bin.
    ``n_vertebrae_missing``             vertebrae C7..L1 with no voxel (out of 14).
    ``frac_vertebra_pairs_ordered``     over consecutive present vertebrae (catalog order, so a
                                        missing one does not hide a swap), the fraction whose
                                        centroids descend strictly in z (LPS +z superior).
    ``frac_vertebra_pairs_overlapping`` over the same pairs, the fraction whose vertebral BODIES
                                        overlap in z: body = the vertebra's most anterior 30% of
                                        voxels (y below its 30th percentile); its z-extent =
                                        20th-80th percentile of their z; overlapping when the
                                        common z-extent exceeds ``BODY_OVERLAP_FRACTION`` (0.2)
                                        of the shorter extent (ground truth: at most 0.0, the
                                        tilted C7-T3 bodies being the closest).
    """
    labels = np.asarray(labels_xyz)
    if labels.ndim != 3:
        raise InputError(f"label volume must be 3D, got shape {labels.shape}")
    spacing = np.asarray(spacing_mm, float).reshape(3)
    origin = np.asarray(origin_lps_mm, float).reshape(3)
    slices = ndimage.find_objects(labels, max_label=max(256, int(labels.max(initial=0))))
    cc = connected_components_per_bone(labels)
    present = [b for b in BONES if cc[b.name] > 0]
    out: dict = {"n_bones_present": len(present)}
    out["frac_bones_single_component"] = _frac([cc[b.name] == 1 for b in present])
    out["mean_components_per_bone"] = _nanmean([cc[b.name] for b in present])
    tight = []
    for b in present:
        sl = slices[b.label - 1]
        tight.append(is_watertight(surface_mesh(labels[sl] == b.label, spacing)[1]))
    out["frac_bones_watertight"] = _frac(tight)

    # ribs
    ribs = [b for b in present if b.group == "rib"]
    pts = {b.label: _bone_points(labels, slices, b.label, spacing, origin) for b in ribs}
    turning, unbroken = [], []
    if ribs:
        allp = np.concatenate(list(pts.values()))
        axis_xy = 0.5 * (allp[:, :2].min(0) + allp[:, :2].max(0))
        for b in ribs:
            centres, gaps = rib_centreline(pts[b.label], axis_xy, b.laterality)
            turning.append(turning_deg_per_cm(centres))
            unbroken.append(cc[b.name] == 1 and gaps == 0)
    out["n_ribs_present"] = len(ribs)
    out["rib_turning_deg_per_cm_mean"] = _nanmean(turning)
    finite = [t for t in turning if np.isfinite(t)]
    out["rib_turning_deg_per_cm_max"] = float(max(finite)) if finite else math.nan
    out["frac_ribs_unbroken"] = _frac(unbroken)

    # vertebrae
    verts = sorted((b for b in BONES if b.group == "vertebra"), key=lambda b: b.order)
    there = [b for b in verts if cc[b.name] > 0]
    out["n_vertebrae_missing"] = len(verts) - len(there)
    info = []
    for b in there:
        p = _bone_points(labels, slices, b.label, spacing, origin)
        body = p[p[:, 1] <= np.percentile(p[:, 1], 30)]
        info.append((p[:, 2].mean(), np.percentile(body[:, 2], 20), np.percentile(body[:, 2], 80)))
    ordered, overlapping = [], []
    for (z0, lo0, hi0), (z1, lo1, hi1) in zip(info[:-1], info[1:]):
        ordered.append(z0 > z1)
        common = min(hi0, hi1) - max(lo0, lo1)
        overlapping.append(common > BODY_OVERLAP_FRACTION * max(min(hi0 - lo0, hi1 - lo1), 1e-9))
    out["frac_vertebra_pairs_ordered"] = _frac(ordered)
    out["frac_vertebra_pairs_overlapping"] = _frac(overlapping)
    return out


def _frac(flags) -> float:
    flags = list(flags)
    return float(np.mean(flags)) if flags else math.nan


__all__ = ["iou_per_bone", "iou_all_bone", "surface_mesh", "sample_mesh", "surface_points",
           "surface_distances", "chamfer_l1", "hausdorff95", "unit_box_scale_mm", "evaluate_case",
           "aggregate", "json_safe", "connected_components_per_bone", "is_watertight",
           "consistency_metrics", "rib_centreline", "turning_deg_per_cm"]
