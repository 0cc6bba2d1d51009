"""Per-bone checks of a label map: the JSON of ``label-bones --qa`` and its warnings.

Report keys (flat per bone, under ``bones``): label, name, present, voxels, volume_ml,
pieces, order_ok, side_ok, volume_vs_atlas (this bone's volume over the atlas's),
warnings. Top level: ok (no warning), ribs_left, ribs_right, vertebrae (counts),
missing (names), chest (lungs and crop), repairs (what anatomy_checks changed),
warnings (one line each, naming the bones).
"""
from __future__ import annotations

import numpy as np

from .. import anatomy
from .anatomy_checks import ORDER_TOLERANCE_MM, SIDE_MARGIN_MM, midline_x_mm, order_series

VOLUME_RATIO_RANGE = (0.3, 3.0)   # vs the atlas's same bone: outside means a merge or a loss


def check(labels: np.ndarray, ijk_to_lps: np.ndarray, atlas_volumes_ml: dict | None = None, chest=None,
          repairs: dict | None = None) -> tuple[dict, list[str]]:
    """labels: (Z, Y, X) uint8 catalog labels; ijk_to_lps: (4, 4) of their grid.
    Returns (report dict, warning lines)."""
    from scipy import ndimage

    voxel_ml = abs(float(np.linalg.det(ijk_to_lps[:3, :3]))) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=256)
    boxes = ndimage.find_objects(labels)
    mid = midline_x_mm(labels, ijk_to_lps)
    heights = order_series(labels, ijk_to_lps)
    order_ok = {}
    for rows in heights.values():
        for i, (lab, h, _) in enumerate(rows):
            above = rows[i - 1][1] if i > 0 else np.inf
            below = rows[i + 1][1] if i + 1 < len(rows) else -np.inf
            order_ok[lab] = bool(above > h - ORDER_TOLERANCE_MM and h > below - ORDER_TOLERANCE_MM)
    bones = []
    for b in anatomy.BONES:
        n = int(counts[b.label])
        row = {"label": b.label, "name": b.name, "present": n > 0, "voxels": n,
               "volume_ml": round(n * voxel_ml, 2), "pieces": 0, "order_ok": None, "side_ok": None,
               "volume_vs_atlas": None, "warnings": []}
        if n:
            box = boxes[b.label - 1]
            sub = labels[box] == b.label
            row["pieces"] = int(ndimage.label(sub, structure=np.ones((3, 3, 3)))[1])
            if b.label in order_ok:
                row["order_ok"] = order_ok[b.label]
            if b.laterality:
                zyx = np.argwhere(sub)[::max(1, n // 20000)] + [s.start for s in box]
                x = float(np.mean(zyx[:, ::-1] @ ijk_to_lps[:3, :3].T[:, 0] + ijk_to_lps[0, 3])) - mid
                row["side_ok"] = bool(x > SIDE_MARGIN_MM if b.laterality == "left" else x < -SIDE_MARGIN_MM)
            if atlas_volumes_ml and atlas_volumes_ml.get(b.label):
                row["volume_vs_atlas"] = round(n * voxel_ml / atlas_volumes_ml[b.label], 2)
        for key, msg in (("pieces", "in several pieces"), ("order_ok", "out of head-to-feet order"),
                         ("side_ok", "on the wrong side")):
            if (key == "pieces" and row[key] > 1) or row[key] is False:
                row["warnings"].append(msg)
        r = row["volume_vs_atlas"]
        if r is not None and not VOLUME_RATIO_RANGE[0] <= r <= VOLUME_RATIO_RANGE[1]:
            row["warnings"].append(f"volume {r}x the atlas's")
        bones.append(row)

    warnings = []
    missing = [r["name"] for r in bones if not r["present"]]
    if missing:
        warnings.append(f"bones not labelled (outside the field of view, or not found): {', '.join(missing)}")
    for key, text in (("in several pieces", "bones in several pieces"),
                      ("out of head-to-feet order", "bones out of head-to-feet order"),
                      ("on the wrong side", "bones on the wrong side")):
        names = [r["name"] for r in bones if key in r["warnings"]]
        if names:
            warnings.append(f"{text}: {', '.join(names)}")
    odd = [f"{r['name']} ({r['volume_vs_atlas']}x)" for r in bones
           if any(w.startswith("volume") for w in r["warnings"])]
    if odd:
        warnings.append(f"bone volume far from the atlas's (merged or lost bone?): {', '.join(odd)}")
    if repairs and repairs.get("renumbered"):
        warnings.append(f"renumbered to restore head-to-feet order: {', '.join(repairs['renumbered'])}")

    by_group = lambda g, side=None: sum(r["present"] for r, b in zip(bones, anatomy.BONES)  # noqa: E731
                                        if b.group == g and (side is None or b.laterality == side))
    report = {"ok": not warnings, "ribs_left": by_group("rib", "left"), "ribs_right": by_group("rib", "right"),
              "vertebrae": by_group("vertebra"), "missing": missing, "warnings": warnings,
              "chest": chest.to_dict() if chest is not None else None, "repairs": repairs or {},
              "bones": bones}
    return report, warnings
