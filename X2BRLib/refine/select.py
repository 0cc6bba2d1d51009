"""Which skeleton template fits a film: the bone-box layout residual.

``template_layout_residual(template, geometry, detections)``: put the template at the film's
isocentre, project each bone's vertices to its 2D box, fit one scale ``s`` and shift (least
squares on the box centres, weighted by box size, as :func:`X2BRLib.refine.fit.fit_template`'s
global step) and return the weighted RMS, in film pixels, of what that fit leaves: the box
centres' residual and the box sizes' (detected size - ``s`` x template size), over the bones
both have. Smaller: the template's layout and bone proportions are nearer the film's.
Used to measure choosing a template per film (bench/bench_cohort_baselines.py).
"""
from __future__ import annotations

import numpy as np

from .fit import _centre, _global_similarity, _size, projected_box


def template_layout_residual(template, geometry, detections) -> float:
    """Weighted RMS (px) of box centres and sizes after the best scale and shift; inf with
    fewer than 3 bones in common. detections: objects with ``label`` and ``box_px``."""
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
