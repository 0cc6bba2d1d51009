"""The lateral film's say in placing the template (issue 15): each bone's antero-posterior place.

On a lateral film the columns run along the antero-posterior axis (``u_dir`` of the lateral
:class:`~X2BRLib.geometry.ProjectionGeometry`: toward the back on an LL film, the front on an RL
film). A confident detector box of a bone on the lateral therefore says where the bone is front to
back, which the frontal film cannot. After :func:`X2BRLib.refine.fit.fit_template` has placed
each bone (position and size in the frontal film's plane, depth from X2B), this moves every bone
with a confident lateral box along the lateral's column direction ONLY, so that the centre of its
projected box lands on the detected box centre's column (at the bone's own depth along the
lateral beam, i.e. with that depth's magnification), by at most ``max_shift_mm``. Bones without a confident box
keep their place: with no confident box at all (detector v1, trained on frontal films, found
little on laterals; v2 learned them) the result is the frontal-only placement, unchanged.

With ``match_extent`` the box also gives the bone's front-to-back extent: first the bone is scaled
along ``u_dir`` about its centroid so that its projected box is as wide as the detected one
(clamped to ``EXTENT_SCALE_LIMITS``), then moved as above. Without it the template keeps the
front-to-back size :func:`~X2BRLib.refine.fit.fit_template` guessed (the geometric mean of its
in-plane scales), and matching the centres of boxes of differently sized curved bones (ribs) moves
their centroids away from the truth's even with the truth's boxes (``bench/bench_lateral_fit.py``).
"""
from __future__ import annotations

import numpy as np

from .fit import depth_of, point_at

MIN_CONFIDENCE = 0.5     # lateral boxes used (the film check's 0.25 lets through the detector's guesses)
MAX_SHIFT_MM = 30.0      # a larger disagreement is the detector's error more likely than X2B's
MATCH_EXTENT = False     # scale each bone front to back to its lateral box before moving it
# measured on 10 simulated pairs of seen patients (bench/results/lateral_fit_cpu.txt): X2BR all-bone IoU
# 0.308 without the fit, 0.316 with it, 0.320 with MATCH_EXTENT (better on 7 of 10: not clearly);
# confidence 0.3 / 0.7 and a 15 mm cap changed it by at most 0.004 (5 cases)
EXTENT_SCALE_LIMITS = (0.75, 1.33)  # as fit_template's per-bone size limits


def lateral_ap_shifts(vertices, vertex_labels, lateral_geometry, detections, min_confidence: float = MIN_CONFIDENCE,
                      max_shift_mm: float = MAX_SHIFT_MM, match_extent: bool | None = None):
    """vertices: (N, 3) LPS mm of the placed template; vertex_labels: (N,) catalog labels;
    lateral_geometry: the lateral film's geometry (the frame of the boxes); detections: objects with
    ``label``, ``confidence``, ``box_px`` (u0, v0, u1, v1) on that film; match_extent: see the module
    docstring (None: :data:`MATCH_EXTENT`).

    Returns (vertices (N, 3) float64 moved, {label: {"shift_mm": s (along the lateral's u_dir,
    clamped), "wanted_mm": unclamped, "confidence", "extent_scale": front-to-back scale (1.0
    without match_extent)}}) for the bones moved."""
    match_extent = MATCH_EXTENT if match_extent is None else bool(match_extent)
    V = np.array(vertices, np.float64, copy=True)
    labels = np.asarray(vertex_labels)
    u_dir = np.array(lateral_geometry.u_dir)
    moved = {}
    for d in detections:
        if d.confidence < min_confidence:
            continue
        sel = labels == int(d.label)
        if not sel.any():
            continue
        depth = float(depth_of(lateral_geometry, V[sel].mean(0)[None])[0])
        uv, _ = lateral_geometry.project(V[sel])
        row = 0.5 * float(uv[:, 1].min() + uv[:, 1].max())
        k = 1.0
        if match_extent:
            width = float(uv[:, 0].max() - uv[:, 0].min())
            if width > 0:
                k = float(np.clip((d.box_px[2] - d.box_px[0]) / width, *EXTENT_SCALE_LIMITS))
                c = V[sel].mean(0)
                V[sel] += (k - 1.0) * ((V[sel] - c) @ u_dir)[:, None] * u_dir[None]
                uv, _ = lateral_geometry.project(V[sel])
        now = point_at(lateral_geometry, (0.5 * float(uv[:, 0].min() + uv[:, 0].max()), row), depth)
        target = point_at(lateral_geometry, (0.5 * (d.box_px[0] + d.box_px[2]), row), depth)
        wanted = float((target - now) @ u_dir)
        shift = float(np.clip(wanted, -max_shift_mm, max_shift_mm))
        V[sel] += shift * u_dir
        moved[int(d.label)] = {"shift_mm": round(shift, 3), "wanted_mm": round(wanted, 3),
                               "confidence": round(float(d.confidence), 4), "extent_scale": round(k, 4)}
    return V, moved


__all__ = ["lateral_ap_shifts", "MIN_CONFIDENCE", "MAX_SHIFT_MM", "MATCH_EXTENT", "EXTENT_SCALE_LIMITS"]
