"""Patient-specific template: place the reference skeleton template on one film.

Input: the template (:mod:`X2BRLib.refine.template`, vertices in the box frame of a
nominal virtual patient, relative to its isocentre), the film's
:class:`~X2BRLib.geometry.ProjectionGeometry`, the detector's boxes (optional) and the
X2B label volume (optional). Output: the template's vertices moved bone by bone, and one
:class:`BoneFit` per bone saying what was used.

Steps (each bone is a rigid copy of the template bone, scaled; shape is left to CPD):

1. Put the template at the film's isocentre.
2. Global fit from the detections: one least-squares 2D similarity (scale ``s`` and
   shift) maps the template bones' projected box centres onto the detected box centres;
   it is applied in 3D as a scale ``s`` about the isocentre and an in-plane shift. Depth
   from X2B: the median, over bones X2B found, of (X2B centroid depth - template
   centroid depth) moves the whole template along the beam.
3. Per bone, about its centroid:
   a. depth: the X2B bone's centroid depth along the beam (when X2B has at least
      ``min_voxels`` of it), else the globally placed template's;
   b. size: the ratio of the detected box to the template bone's projected box, along the
      film's u and v axes (clamped to ``scale_limits``), applied along ``u_dir`` and
      ``v_dir``, their geometric mean along the beam;
   c. position: shift in the plane of constant depth so the projected box centre lands on
      the detected box centre (two passes, as scaling moves the projected box);
   without a detection, the X2B centroid gives the position and the size is kept; with
   neither, the bone keeps its globally fitted place.

Depth is what one film cannot give: it comes from X2B or, template-only, from the
nominal anatomy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import anatomy
from ..geometry import ProjectionGeometry


@dataclass
class BoneFit:
    label: int
    name: str
    used: str                 # "detection+x2b" | "detection" | "x2b" | "global"
    scale_uvn: tuple          # scale along u_dir, v_dir, beam
    shift_mm: tuple           # centroid displacement from the globally fitted template
    detection_confidence: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def depth_of(geometry: ProjectionGeometry, points) -> np.ndarray:
    """Depth (mm from the source along the detector normal) of (N, 3) LPS points."""
    return (np.asarray(points, float) - geometry.source[None]) @ geometry.normal


def point_at(geometry: ProjectionGeometry, uv_px, depth_mm: float) -> np.ndarray:
    """The point on the ray through pixel ``uv_px`` at ``depth_mm`` from the source."""
    _, dirs, _ = geometry.rays(np.asarray(uv_px, float).reshape(1, 2))
    d = dirs[0]
    return geometry.source + d * (depth_mm / float(d @ geometry.normal))


def projected_box(geometry: ProjectionGeometry, points) -> np.ndarray:
    uv, _ = geometry.project(points)
    return np.concatenate([uv.min(0), uv.max(0)])


def _centre(box) -> np.ndarray:
    box = np.asarray(box, float)
    return 0.5 * (box[:2] + box[2:])


def _size(box) -> np.ndarray:
    box = np.asarray(box, float)
    return np.maximum(box[2:] - box[:2], 1e-6)


def label_centroids(labels_xyz: np.ndarray, origin, spacing, min_voxels: int) -> dict[int, np.ndarray]:
    """{label: centroid (3,) LPS mm} of every label with at least ``min_voxels`` voxels."""
    idx = np.argwhere(labels_xyz > 0)
    if not len(idx):
        return {}
    lab = labels_xyz[tuple(idx.T)].astype(np.int64)
    counts = np.bincount(lab, minlength=256)
    sums = np.stack([np.bincount(lab, weights=idx[:, k], minlength=256) for k in range(3)], 1)
    out = {}
    for lb in np.nonzero(counts >= max(1, min_voxels))[0]:
        out[int(lb)] = np.asarray(origin, float) + sums[lb] / counts[lb] * np.asarray(spacing, float)
    return out


def _global_similarity(src_uv: np.ndarray, dst_uv: np.ndarray, weights: np.ndarray):
    """Least-squares scale s and shift t with dst ~= s * src + t (no rotation)."""
    w = weights / weights.sum()
    ms, md = w @ src_uv, w @ dst_uv
    a, b = src_uv - ms, dst_uv - md
    s = float((w * (a * b).sum(1)).sum() / max((w * (a * a).sum(1)).sum(), 1e-9))
    return s, md - s * ms


def fit_template(template, geometry: ProjectionGeometry, detections=None, x2b=None,
                 min_voxels: int = 20, scale_limits=(0.75, 1.33), global_scale_limits=(0.8, 1.25)):
    """Place ``template`` on the film. detections: iterable of objects with ``label`` and
    ``box_px`` (u0, v0, u1, v1) (``confidence`` optional); x2b: ``(labels_xyz, origin,
    spacing)`` of an X2B reconstruction, or None (template-only). Returns (vertices (N, 3)
    float32 LPS mm, [BoneFit]).
    """
    V = np.asarray(template.vertices, np.float64) + np.asarray(geometry.isocenter_lps_mm)[None]
    labels = np.asarray(template.vertex_labels)
    present = [int(b) for b in np.unique(labels) if b > 0]
    dets = {int(d.label): d for d in (detections or [])}
    x2b_c = label_centroids(*x2b, min_voxels=min_voxels) if x2b is not None else {}
    u_dir, v_dir, n = np.array(geometry.u_dir), np.array(geometry.v_dir), geometry.normal
    iso = np.asarray(geometry.isocenter_lps_mm, float)
    idx = {b: np.nonzero(labels == b)[0] for b in present}

    # 2. global similarity from the detections (in pixels, applied at the isocentre's depth)
    both = [b for b in present if b in dets]
    if len(both) >= 3:
        src = np.stack([_centre(projected_box(geometry, V[idx[b]])) for b in both])
        dst = np.stack([_centre(dets[b].box_px) for b in both])
        wts = np.array([np.sqrt(np.prod(_size(dets[b].box_px))) for b in both])
        s, _ = _global_similarity(src, dst, wts)
        s = float(np.clip(s, *global_scale_limits))
        V = iso + (V - iso) * s
        src = np.stack([_centre(projected_box(geometry, V[idx[b]])) for b in both])
        shift_px = np.average(dst - src, axis=0, weights=wts)
        mm_per_px = np.array(geometry.spacing_mm) / geometry.magnification
        V = V + shift_px[0] * mm_per_px[0] * u_dir + shift_px[1] * mm_per_px[1] * v_dir
    depth_shifts = [depth_of(geometry, x2b_c[b][None])[0] - depth_of(geometry, V[idx[b]].mean(0)[None])[0]
                    for b in present if b in x2b_c]
    if depth_shifts:
        V = V + float(np.median(depth_shifts)) * n

    # 3. per bone
    out = V.copy()
    fits = []
    for b in present:
        P = V[idx[b]]
        c0 = P.mean(0)
        det, xc = dets.get(b), x2b_c.get(b)
        scale = np.ones(3)
        if det is not None:
            depth = depth_of(geometry, (xc if xc is not None else c0)[None])[0]
            c = c0 + (depth - depth_of(geometry, c0[None])[0]) * n
            target = point_at(geometry, _centre(det.box_px), depth)
            for _ in range(2):
                Q = _place(P, c0, c, scale, u_dir, v_dir, n)
                ratio = np.clip(_size(det.box_px) / _size(projected_box(geometry, Q)) * scale[:2], *scale_limits)
                scale = np.array([ratio[0], ratio[1], float(np.sqrt(ratio[0] * ratio[1]))])
                Q = _place(P, c0, c, scale, u_dir, v_dir, n)
                c = c + target - point_at(geometry, _centre(projected_box(geometry, Q)), depth)
            Q = _place(P, c0, c, scale, u_dir, v_dir, n)
            used = "detection+x2b" if xc is not None else "detection"
        elif xc is not None:
            Q = P + (xc - c0)
            used = "x2b"
        else:
            Q = P
            used = "global"
        out[idx[b]] = Q
        fits.append(BoneFit(b, anatomy.bone(b).name, used, tuple(float(x) for x in scale),
                            tuple(float(x) for x in Q.mean(0) - c0),
                            None if det is None else float(getattr(det, "confidence", np.nan))))
    return out.astype(np.float32), fits


def _place(P, c0, c, scale, u_dir, v_dir, n):
    """Scale ``P`` about ``c0`` along (u_dir, v_dir, n) by ``scale``, then move ``c0`` to ``c``."""
    d = P - c0
    return (c + scale[0] * (d @ u_dir)[:, None] * u_dir + scale[1] * (d @ v_dir)[:, None] * v_dir
            + scale[2] * (d @ n)[:, None] * n)
