"""Label volumes to triangle surfaces: marching cubes of one bone's mask and the closed-surface check.
Meshing, not measuring: the outputs, the refinement and the metrics all take their surfaces from here."""
from __future__ import annotations

import numpy as np


def surface_mesh(mask, spacing_mm=(1.0, 1.0, 1.0), origin_mm=(0.0, 0.0, 0.0)):
    """Marching-cubes surface (level 0.5) of a binary (X, Y, Z) mask.

    Returns (verts (V, 3) float64 LPS mm, faces (F, 3) int); empty arrays for an
    empty mask. The mask is cropped to its bounding box and zero-padded, so the
    mesh is closed even where the object touches the volume border.
    """
    from skimage.measure import marching_cubes

    mask = np.asarray(mask, bool)
    spacing = np.asarray(spacing_mm, float).reshape(3)
    origin = np.asarray(origin_mm, float).reshape(3)
    if not mask.any():
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    lo = [int(np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != i))).min()) for i in range(3)]
    hi = [int(np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != i))).max()) + 1 for i in range(3)]
    crop = np.pad(mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(crop, level=0.5, spacing=tuple(spacing))
    verts = verts.astype(np.float64) + origin + (np.asarray(lo) - 1) * spacing
    return verts, faces.astype(np.int64)


def is_watertight(faces) -> bool:
    """True when every undirected edge of the (F, 3) triangle list is shared by exactly
    two triangles (closed 2-manifold edge condition; orientation is not checked)."""
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(faces) == 0:
        return False
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool(np.all(counts == 2))
