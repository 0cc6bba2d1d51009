"""From warped atlas labels to labels of the target's own bone voxels.

The target's bone is found from HU on its own grid (hysteresis: voxels above
``BONE_LOW_HU`` connected to voxels above ``BONE_HIGH_HU``; small specks
dropped). Each bone voxel takes the label of the nearest warped atlas bone
voxel (a distance transform with indices on a ``WORK_MM`` grid) when that voxel
lies within ``MAX_DIST_MM``; farther bone (costal cartilage calcification, arm
shafts, pelvis, skull, the CT table) stays 0. Arrays are (z, y, x).
"""
from __future__ import annotations

import numpy as np

BONE_LOW_HU = 150.0
BONE_HIGH_HU = 250.0
MIN_PIECE_ML = 0.02
WORK_MM = 2.0
MAX_DIST_MM = 6.0


def bone_mask(hu: np.ndarray, spacing_xyz_mm) -> np.ndarray:
    """(Z, Y, X) bool bone of a non-contrast CT from its HU (same shape as hu)."""
    from scipy import ndimage
    from skimage.filters import apply_hysteresis_threshold

    mask = apply_hysteresis_threshold(hu, BONE_LOW_HU, BONE_HIGH_HU)
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    voxel_ml = float(np.prod(spacing_xyz_mm)) / 1000.0
    sizes = np.bincount(lab.ravel(), minlength=n + 1) * voxel_ml
    keep = sizes >= MIN_PIECE_ML
    keep[0] = False
    return keep[lab]


def reference_grid(image, spacing_mm: float = WORK_MM):
    """An empty uint8 SimpleITK grid covering ``image`` at ``spacing_mm`` isotropic, same direction."""
    import SimpleITK as sitk

    d = np.array(image.GetDirection()).reshape(3, 3)
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    size = [max(2, int(np.ceil(e / spacing_mm))) for e in extent]
    corner = np.array(image.GetOrigin()) - d @ (0.5 * np.array(image.GetSpacing()))
    ref = sitk.Image(size, sitk.sitkUInt8)
    ref.SetDirection(image.GetDirection())
    ref.SetSpacing([spacing_mm] * 3)
    ref.SetOrigin(tuple(corner + d @ np.full(3, spacing_mm / 2)))
    return ref


def nearest_label_map(warped: np.ndarray, spacing_mm: float):
    """For every voxel of a (Z, Y, X) label array: the nearest labelled voxel's label and its
    distance in mm. Returns (labels uint8, dist_mm float32)."""
    from scipy import ndimage

    if not warped.any():
        return np.zeros_like(warped), np.full(warped.shape, np.inf, np.float32)
    dist, idx = ndimage.distance_transform_edt(warped == 0, sampling=spacing_mm, return_indices=True)
    return warped[tuple(idx)], dist.astype(np.float32)


def index_map(src, dst) -> np.ndarray:
    """(4, 4) affine from src's voxel index (i, j, k, 1) to dst's continuous voxel index."""
    def ijk_to_lps(img):
        m = np.eye(4)
        m[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())[None, :]
        m[:3, 3] = img.GetOrigin()
        return m

    return np.linalg.inv(ijk_to_lps(dst)) @ ijk_to_lps(src)


def transfer(bone: np.ndarray, image, near_labels: np.ndarray, near_dist: np.ndarray, ref,
             max_dist_mm: float = MAX_DIST_MM) -> np.ndarray:
    """Labels of the target's bone voxels. bone: (Z, Y, X) bool on ``image``'s grid;
    near_labels / near_dist: nearest_label_map on ``ref``'s grid. Returns uint8 on image's grid."""
    out = np.zeros(bone.shape, np.uint8)
    zyx = np.argwhere(bone)
    if len(zyx) == 0:
        return out
    m = index_map(image, ref)
    ijk = zyx[:, ::-1].astype(np.float64) @ m[:3, :3].T + m[:3, 3]
    ijk = np.rint(ijk).astype(np.int64)
    shape_xyz = np.array(near_labels.shape[::-1])
    ok = np.all((ijk >= 0) & (ijk < shape_xyz), axis=1)
    lab = np.zeros(len(zyx), np.uint8)
    i, j, k = ijk[ok].T
    lab[ok] = np.where(near_dist[k, j, i] <= max_dist_mm, near_labels[k, j, i], 0)
    out[zyx[:, 0], zyx[:, 1], zyx[:, 2]] = lab
    return out
