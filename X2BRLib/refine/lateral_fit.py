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
"""
from __future__ import annotations

import numpy as np

from .fit import depth_of, point_at

MIN_CONFIDENCE = 0.5     # lateral boxes used (the film check's 0.25 lets through the detector's guesses)
MAX_SHIFT_MM = 30.0      # a larger disagreement is the detector's error more likely than X2B's


def lateral_ap_shifts(vertices, vertex_labels, lateral_geometry, detections, min_confidence: float = MIN_CONFIDENCE,
                      max_shift_mm: float = MAX_SHIFT_MM):
    """vertices: (N, 3) LPS mm of the placed template; vertex_labels: (N,) catalog labels;
    lateral_geometry: the lateral film's geometry (the frame of the boxes); detections: objects with
    ``label``, ``confidence``, ``box_px`` (u0, v0, u1, v1) on that film.

    Returns (vertices (N, 3) float64 moved, {label: {"shift_mm": s (along the lateral's u_dir,
    clamped), "wanted_mm": unclamped, "confidence"}}) for the bones moved."""
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
        now = point_at(lateral_geometry, (0.5 * float(uv[:, 0].min() + uv[:, 0].max()), row), depth)
        target = point_at(lateral_geometry, (0.5 * (d.box_px[0] + d.box_px[2]), row), depth)
        wanted = float((target - now) @ u_dir)
        shift = float(np.clip(wanted, -max_shift_mm, max_shift_mm))
        V[sel] += shift * u_dir
        moved[int(d.label)] = {"shift_mm": round(shift, 3), "wanted_mm": round(wanted, 3),
                               "confidence": round(float(d.confidence), 4)}
    return V, moved


__all__ = ["lateral_ap_shifts", "MIN_CONFIDENCE", "MAX_SHIFT_MM"]
