"""Virtual patients drawn part of the way from one person toward another (issue 12, item 5).

Five people are few. Between two labelled CTs A and B the catalog gives ~45 corresponding
points: each bone's centroid, relative to the centre of the bones' box. A smooth field
moves A's anatomy (bones and the tissue around them alike) a fraction ``t`` of the way
to B's bone layout: displacement ``t * d(x)`` with ``d`` the Gaussian-weighted mean
(``SIGMA_MM``) of the bones' offsets ``(c_B - anchor_B) - (c_A - anchor_A)``. A keeps
its bone shapes and densities; it takes B's proportions: width and depth of the rib
cage, height of the spine, shoulder position. The backward warp subtracts the field at
the CT-frame point (exact for a constant field, first-order otherwise; the field varies
slowly at ``SIGMA_MM``), like the elastic field.

Not measured: whether it helps on the unseen-patient folds (a GPU run that has not been
made). Off unless ``BuildConfig.blend`` > 0; only train and val cases are blended, and only
toward the split's own patients, so a held-out patient never enters through a blend.
"""
from __future__ import annotations

import numpy as np
import torch

SIGMA_MM = 60.0
T_RANGE = (0.25, 1.0)


def bone_layout(labels: np.ndarray, ijk_to_lps: np.ndarray) -> dict:
    """{label: (3,) centroid LPS mm relative to the centre of the bones' box} of a (Z, Y, X)
    catalog label array (the same anchor as virtual.AnatomySource)."""
    idx = np.argwhere(labels > 0)
    pts = (np.c_[idx[:, ::-1], np.ones(len(idx))] @ ijk_to_lps.T)[:, :3]
    anchor = (pts.min(0) + pts.max(0)) / 2
    lv = labels[tuple(idx.T)]
    return {int(b): pts[lv == b].mean(0) - anchor for b in np.unique(lv)}


def layout_of_prepared(path) -> dict:
    with np.load(path) as z:
        m = np.eye(4)
        m[:3, :3] = np.asarray(z["direction"]).reshape(3, 3) * np.asarray(z["spacing"])[None, :]
        m[:3, 3] = z["origin"]
        return bone_layout(z["labels"], m)


def toward_displacement(p_ct: torch.Tensor, own: dict, other: dict, anchor) -> torch.Tensor:
    """(N, 3) displacement d at CT-frame points p_ct (N, 3) toward ``other``'s layout (module doc).
    own / other: bone layouts (bone_layout); anchor: (3,) the CT's bones' box centre."""
    common = sorted(set(own) & set(other))
    dev = p_ct.device
    ctrl = torch.tensor(np.array([own[b] for b in common]) + np.asarray(anchor), dtype=torch.float32, device=dev)
    disp = torch.tensor(np.array([other[b] - own[b] for b in common]), dtype=torch.float32, device=dev)
    out = torch.empty_like(p_ct)
    for s in range(0, len(p_ct), 1 << 20):  # bounded memory: (chunk, bones) weights
        w = torch.exp(-0.5 * torch.cdist(p_ct[s:s + (1 << 20)], ctrl).square() / SIGMA_MM ** 2) + 1e-12
        out[s:s + (1 << 20)] = (w @ disp) / w.sum(1, keepdim=True)
    return out


def draw_toward(rng: np.random.Generator, patient: str, pool, probability: float):
    """(toward, t): another patient of ``pool`` and a fraction, with ``probability``; else ("", 0)."""
    others = [p for p in sorted(pool) if p != patient]
    if probability <= 0 or not others or rng.uniform() >= probability:
        return "", 0.0
    return str(others[int(rng.integers(len(others)))]), float(rng.uniform(*T_RANGE))
