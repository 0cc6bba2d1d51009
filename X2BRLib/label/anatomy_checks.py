"""Checks and repairs of a per-bone label map against the anatomy every chest has.

- one piece per bone: the largest piece stays; a stray piece touching another bone
  joins the bone it touches most, an isolated one joins the nearest bone within
  ``STRAY_RADIUS_MM`` (which may be its own: a bone split by thick slices stays split
  and is reported);
- sides: a voxel of a left bone more than ``SIDE_MARGIN_MM`` right of the midline (the
  spine) becomes its right twin, and the reverse (LPS: +x is the patient's left);
- order: ribs 1-12 of each side by the height of their head (head to feet),
  vertebrae C7-L1 by the height of their centre; when the order is broken the
  present bones are renumbered in height order;
- humerus: only the proximal end (within ``HUMERUS_MAX_MM`` of the scapula);
- vertebrae: nothing farther than ``VERTEBRA_HALF_WIDTH_MM`` left or right of the
  vertebra's centre (beyond are rib necks).

Every function takes a (Z, Y, X) uint8 catalog label array and ``ijk_to_lps``, the
(4, 4) voxel-index-to-LPS-mm affine of its grid, and returns new arrays (inputs are
not modified).
"""
from __future__ import annotations

import numpy as np

from .. import anatomy

SIDE_MARGIN_MM = 10.0
STRAY_RADIUS_MM = 10.0
HUMERUS_MAX_MM = 60.0
VERTEBRA_HALF_WIDTH_MM = 45.0  # thoracic transverse processes reach ~35-40 mm from the centre
_TWIN = {b.label: anatomy.bone(b.name.replace("left", "right") if b.laterality == "left"
                               else b.name.replace("right", "left")).label
         for b in anatomy.BONES if b.laterality}


def _points_mm(zyx: np.ndarray, ijk_to_lps: np.ndarray) -> np.ndarray:
    return zyx[:, ::-1].astype(np.float64) @ ijk_to_lps[:3, :3].T + ijk_to_lps[:3, 3]


def _spacing(ijk_to_lps) -> np.ndarray:
    return np.linalg.norm(ijk_to_lps[:3, :3], axis=0)[::-1]  # (z, y, x) order


def boxes(labels: np.ndarray) -> dict:
    """{label: tuple of slices} of each label's bounding box (one pass over the array)."""
    from scipy import ndimage

    return {i + 1: b for i, b in enumerate(ndimage.find_objects(labels)) if b is not None}


def bone_voxels(labels: np.ndarray, label: int, box_of: dict | None = None) -> np.ndarray:
    """(N, 3) (z, y, x) indices of one label's voxels."""
    box = (box_of if box_of is not None else boxes(labels)).get(label)
    if box is None:
        return np.zeros((0, 3), int)
    return np.argwhere(labels[box] == label) + [s.start for s in box]


def pieces(labels: np.ndarray, label: int, box_of: dict | None = None):
    """Connected pieces (26-neighbourhood) of one label: (piece map, sizes, slices of the bone's box)."""
    from scipy import ndimage

    box = (box_of if box_of is not None else boxes(labels)).get(label)
    if box is None:
        return None, np.zeros(0, int), None
    lab, n = ndimage.label(labels[box] == label, structure=np.ones((3, 3, 3)))
    return lab, np.bincount(lab.ravel(), minlength=n + 1)[1:], box


def merge_stray_pieces(labels: np.ndarray, ijk_to_lps) -> np.ndarray:
    """Each bone keeps its largest piece; the others join the bone they touch or the nearest one."""
    from scipy import ndimage

    out = labels.copy()
    sp = _spacing(ijk_to_lps)
    r = np.ceil(STRAY_RADIUS_MM / sp).astype(int)
    box_of = boxes(out)
    for b in anatomy.BONES:
        lab, sizes, box = pieces(out, b.label, box_of)
        if lab is None or len(sizes) < 2:
            continue
        main = 1 + int(np.argmax(sizes))
        for p in range(1, len(sizes) + 1):
            if p == main:
                continue
            zyx = np.argwhere(lab == p) + [s.start for s in box]
            lo = np.maximum(zyx.min(0) - r, 0)
            hi = np.minimum(zyx.max(0) + r + 1, out.shape)
            sub = out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            piece = np.zeros(sub.shape, bool)
            piece[tuple((zyx - lo).T)] = True
            ring = ndimage.binary_dilation(piece, structure=np.ones((3, 3, 3))) & ~piece
            touch = sub[ring]
            touch = touch[(touch > 0) & (touch != b.label)]
            if len(touch):
                new = int(np.bincount(touch).argmax())
            else:
                others = np.where(piece, 0, sub)
                if not others.any():
                    continue
                dist, idx = ndimage.distance_transform_edt(others == 0, sampling=sp, return_indices=True)
                near = others[tuple(i[piece] for i in idx)][dist[piece] <= STRAY_RADIUS_MM]
                if len(near) == 0:
                    continue
                new = int(np.bincount(near).argmax())
            sub[piece] = new
            if new in box_of:  # the bone that took the piece may reach beyond its box now
                box_of[new] = tuple(slice(min(a.start, lo[i]), max(a.stop, hi[i]))
                                    for i, a in enumerate(box_of[new]))
    return out


def midline_x_mm(labels: np.ndarray, ijk_to_lps) -> float:
    """LPS x of the spine (median of the vertebra voxels), or of all bone without vertebrae."""
    box_of = boxes(labels)
    zyx = np.concatenate([bone_voxels(labels, b.label, box_of) for b in anatomy.group("vertebra")])
    if len(zyx) < 50:
        zyx = np.argwhere(labels > 0)
    if len(zyx) == 0:
        return 0.0
    return float(np.median(_points_mm(zyx[:: max(1, len(zyx) // 200000)], ijk_to_lps)[:, 0]))


def fix_sides(labels: np.ndarray, ijk_to_lps) -> tuple[np.ndarray, dict]:
    """Voxels of a sided bone well across the midline become its twin. Returns (labels, moved
    voxels per bone name)."""
    out = labels.copy()
    mid = midline_x_mm(labels, ijk_to_lps)
    moved = {}
    box_of = boxes(labels)
    for b in anatomy.BONES:
        if not b.laterality:
            continue
        zyx = bone_voxels(labels, b.label, box_of)
        if len(zyx) == 0:
            continue
        x = _points_mm(zyx, ijk_to_lps)[:, 0] - mid
        wrong = x < -SIDE_MARGIN_MM if b.laterality == "left" else x > SIDE_MARGIN_MM
        if wrong.any():
            out[tuple(zyx[wrong].T)] = _TWIN[b.label]
            moved[b.name] = int(wrong.sum())
    return out, moved


def _height_key(pts: np.ndarray, group: str, mid_x: float) -> float:
    """Rib: mean z of its head (of its back half, the 20% of voxels nearest the midline, where
    it meets its vertebra; unlike the most posterior voxels, this stays put when the patient is
    turned); else mean z."""
    if group == "rib":
        back = pts[pts[:, 1] >= np.median(pts[:, 1])]
        d = np.abs(back[:, 0] - mid_x)
        return float(back[d <= np.quantile(d, 0.2), 2].mean())
    return float(pts[:, 2].mean())


def order_series(labels: np.ndarray, ijk_to_lps) -> dict:
    """Heights of each series' bones: {series: [(label, height mm, voxels), ...] in catalog
    order}. Series: ribs left, ribs right, vertebrae."""
    series = {"rib_left": [b for b in anatomy.group("rib") if b.laterality == "left"],
              "rib_right": [b for b in anatomy.group("rib") if b.laterality == "right"],
              "vertebra": anatomy.group("vertebra")}
    out = {}
    box_of = boxes(labels)
    mid = midline_x_mm(labels, ijk_to_lps)
    for key, bones in series.items():
        rows = []
        for b in bones:
            zyx = bone_voxels(labels, b.label, box_of)
            if len(zyx) >= 10:
                rows.append((b.label, _height_key(_points_mm(zyx[:: max(1, len(zyx) // 20000)], ijk_to_lps),
                                                  b.group, mid), len(zyx)))
        out[key] = rows
    return out


ORDER_TOLERANCE_MM = 5.0  # neighbours inverted by less than this are noise, not a swap
ORDER_MIN_SHARE = 0.3   # bones smaller than this share of their series' median take no part in reordering


def fix_order(labels: np.ndarray, ijk_to_lps) -> tuple[np.ndarray, list[str]]:
    """Renumber a series whose heights are not strictly head to feet. A bone much smaller than
    its series' median (a fragment: its height says little) is left out of the renumbering.
    Returns (labels, the names of the series renumbered)."""
    out = labels.copy()
    fixed = []
    for key, rows in order_series(labels, ijk_to_lps).items():
        if not rows:
            continue
        median = float(np.median([n for _, _, n in rows]))
        rows = [(lab, h) for lab, h, n in rows if n >= ORDER_MIN_SHARE * median]
        heights = [h for _, h in rows]
        if all(a > b - ORDER_TOLERANCE_MM for a, b in zip(heights, heights[1:])):
            continue
        present = [lab for lab, _ in rows]
        by_height = [lab for lab, _ in sorted(rows, key=lambda r: -r[1])]
        box_of = boxes(labels)
        for old, new in zip(by_height, present):
            if old != new:
                out[tuple(bone_voxels(labels, old, box_of).T)] = new
        fixed.append(key)
    return out, fixed


def trim_humeri(labels: np.ndarray, ijk_to_lps) -> np.ndarray:
    """Humerus voxels farther than HUMERUS_MAX_MM from the same side's scapula become 0
    (the catalog holds the proximal humerus only); all of it when the scapula is absent."""
    from scipy.spatial import cKDTree

    out = labels.copy()
    box_of = boxes(labels)
    for side in ("left", "right"):
        hum, sca = anatomy.bone(f"humerus_{side}").label, anatomy.bone(f"scapula_{side}").label
        h = bone_voxels(labels, hum, box_of)
        if len(h) == 0:
            continue
        s = bone_voxels(labels, sca, box_of)
        if len(s) == 0:
            out[tuple(h.T)] = 0
            continue
        tree = cKDTree(_points_mm(s[:: max(1, len(s) // 20000)], ijk_to_lps))
        d, _ = tree.query(_points_mm(h, ijk_to_lps), distance_upper_bound=HUMERUS_MAX_MM)
        far = ~np.isfinite(d)
        out[tuple(h[far].T)] = 0
    return out


def trim_vertebrae(labels: np.ndarray, ijk_to_lps) -> tuple[np.ndarray, dict]:
    """Vertebra voxels farther than VERTEBRA_HALF_WIDTH_MM left or right of their vertebra's
    centre (median x) are rib necks the atlas's vertebra reached: the touching bones (ribs) grow
    into them, through them only; what no bone reaches becomes 0. Returns (labels, voxels
    moved per vertebra)."""
    from scipy import ndimage

    out = labels.copy()
    box_of = boxes(labels)
    vert = np.zeros(256, bool)
    vert[[b.label for b in anatomy.group("vertebra")]] = True
    sp = _spacing(ijk_to_lps)
    r = np.ceil(STRAY_RADIUS_MM / sp).astype(int)
    moved = {}
    for b in anatomy.group("vertebra"):
        zyx = bone_voxels(labels, b.label, box_of)
        if len(zyx) == 0:
            continue
        x = _points_mm(zyx, ijk_to_lps)[:, 0]
        far = np.abs(x - np.median(x)) > VERTEBRA_HALF_WIDTH_MM
        if not far.any():
            continue
        f = zyx[far]
        lo, hi = np.maximum(f.min(0) - r, 0), np.minimum(f.max(0) + r + 1, labels.shape)
        sub = out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        todo = np.zeros(sub.shape, bool)
        todo[tuple((f - lo).T)] = True
        sub[todo] = 0
        # grow the neighbouring bones (ribs) into the trimmed voxels, through them only
        cur = np.where(vert[sub], 0, sub)
        for _ in range(int(np.ceil(2 * VERTEBRA_HALF_WIDTH_MM / sp.min()))):
            grown = ndimage.grey_dilation(cur, size=(3, 3, 3))
            new = todo & (grown > 0)
            if not new.any():
                break
            cur[new] = grown[new]
            todo &= ~new
        sub[...] = np.where(vert[sub], sub, cur)
        moved[b.name] = int(far.sum())
    return out, moved


def repair(labels: np.ndarray, ijk_to_lps) -> tuple[np.ndarray, dict]:
    """All repairs in order: sides, humeri, stray pieces, vertebrae (after the stray pieces: rib
    pieces touching a vertebra join it), order. Returns (labels, what changed)."""
    out, moved = fix_sides(labels, ijk_to_lps)
    out = trim_humeri(out, ijk_to_lps)
    out = merge_stray_pieces(out, ijk_to_lps)
    out, trimmed = trim_vertebrae(out, ijk_to_lps)
    out, renumbered = fix_order(out, ijk_to_lps)
    return out, {"vertebra_trimmed_voxels": trimmed, "side_moved_voxels": moved, "renumbered": renumbered}
