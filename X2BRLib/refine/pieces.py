"""One piece per bone: what X2BR guarantees of its outputs, and the checks behind it.

The refinement's meshes are the template's surfaces moved vertex by vertex, so each keeps the
template's topology: one closed, consistently oriented piece per bone when the template has
that (:func:`check_template`, run on every template the refiner loads). Voxelising a deformed
surface can still break a bone apart on the grid: a part thinner than a voxel (a rib end, a
scapular blade, a whole skeleton shrunk by a wrong pixel spacing) falls between voxel centres,
a fold of the surface encloses a speck, and where two bones overlap the smaller one is painted
over the larger. :func:`keep_largest_piece` keeps each bone's largest 26-connected piece of the
label volume (the connectivity of :func:`X2BRLib.metrics.connected_components_per_bone`) and
gives every other voxel of that bone to the background, whatever the input.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .. import anatomy

STRUCT26 = np.ones((3, 3, 3), bool)


def keep_largest_piece(labels_xyz) -> tuple[np.ndarray, dict]:
    """Each bone's largest 26-connected piece of an (X, Y, Z) label volume.

    Returns (labels (X, Y, Z), same dtype: voxels of a bone outside its largest piece set to 0,
    {bone name: voxels removed} for the bones that lost any). Removing voxels of one bone never
    disconnects another, so one pass suffices. Ties between equally large pieces keep the first
    in scan order (deterministic)."""
    labels = np.array(labels_xyz, copy=True)
    if labels.ndim != 3:
        raise ValueError(f"label volume must be 3D, got shape {labels.shape}")
    objs = ndimage.find_objects(labels, max_label=max(255, int(labels.max(initial=0))))
    removed = {}
    for b in anatomy.BONES:
        sl = objs[b.label - 1] if b.label <= len(objs) else None
        if sl is None:
            continue
        mask = labels[sl] == b.label
        pieces, n = ndimage.label(mask, structure=STRUCT26)
        if n <= 1:
            continue
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
        drop = mask & (pieces != 1 + int(np.argmax(sizes)))
        labels[sl][drop] = 0
        removed[b.name] = int(drop.sum())
    return labels, removed


def is_one_closed_piece(n_vertices: int, faces) -> bool:
    """A triangle mesh (faces (F, 3) int into n_vertices) is one closed, consistently oriented,
    vertex-manifold piece: every directed edge once and its reverse once (each edge in two
    faces, wound oppositely), the faces around every vertex one fan, one connected component.
    Vectorised (the template's 45 bones in milliseconds); agrees with
    ``template.is_closed_manifold`` and ``mesh_components(...) == 1`` (tested)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(f) == 0 or f.min() < 0 or f.max() >= n_vertices:
        return False
    n_f, n = len(f), int(n_vertices)
    # directed edge e = j * F + i runs from corner j of face i to corner j + 1
    src = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    dst = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    if np.any(src == dst):
        return False
    key = src * n + dst
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    if np.any(sorted_key[1:] == sorted_key[:-1]):
        return False                                   # an edge used twice in one direction
    twin_pos = np.searchsorted(sorted_key, dst * n + src)
    twin_pos = np.minimum(twin_pos, len(key) - 1)
    if not np.array_equal(sorted_key[twin_pos], dst * n + src):
        return False                                   # a border edge, or one wound the same way twice
    twin = order[twin_pos]
    # corner e (its outgoing edge e) -> the next corner around its vertex: the twin of its incoming edge
    corner = np.arange(3 * n_f)
    incoming = ((corner // n_f + 2) % 3) * n_f + corner % n_f
    ring = coo_matrix((np.ones(3 * n_f), (corner, twin[incoming])), shape=(3 * n_f, 3 * n_f))
    used = np.unique(f)
    if connected_components(ring, directed=False)[0] != len(used):
        return False                                   # some vertex has more than one fan
    graph = coo_matrix((np.ones(3 * n_f), (src, dst)), shape=(n, n))
    lab = connected_components(graph, directed=False)[1]
    return len(np.unique(lab[used])) == 1


def check_template(template) -> list[str]:
    """Names of the template's bones that are not one closed, consistently oriented piece
    (empty for a good template)."""
    bad = []
    for lab in template.labels_present():
        v, f = template.bone(lab)
        if not is_one_closed_piece(len(v), f):
            bad.append(anatomy.bone(lab).name)
    return bad


__all__ = ["STRUCT26", "check_template", "is_one_closed_piece", "keep_largest_piece"]
