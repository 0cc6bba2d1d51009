"""A 3D image with its place in the patient: the one volume type of X2BRLib.

Arrays are stored in (z, y, x) order as SimpleITK and NRRD readers give them;
the index (i, j, k) = (x, y, z) maps to LPS millimetres through
``ijk_to_lps()``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Volume:
    """array: (Z, Y, X) ndarray; origin_lps_mm: (3,) centre of voxel (0,0,0);
    spacing_mm: (3,) along i, j, k (x, y, z index axes); direction: (3, 3),
    columns are the i, j, k axes in LPS."""

    array: np.ndarray
    origin_lps_mm: np.ndarray
    spacing_mm: np.ndarray
    direction: np.ndarray

    def __post_init__(self):
        self.origin_lps_mm = np.asarray(self.origin_lps_mm, float).reshape(3)
        self.spacing_mm = np.asarray(self.spacing_mm, float).reshape(3)
        self.direction = np.asarray(self.direction, float).reshape(3, 3)
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3D (Z, Y, X), got shape {self.array.shape}")

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return x, y, z

    def ijk_to_lps(self) -> np.ndarray:
        """(4, 4) affine: homogeneous voxel index (i, j, k, 1) -> LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction * self.spacing_mm[None, :]
        m[:3, 3] = self.origin_lps_mm
        return m

    def lps_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_lps())

    def bounds_lps_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned LPS bounding box (lo, hi) of the voxel centres."""
        x, y, z = self.shape_xyz
        corners = np.array([[i, j, k, 1] for i in (0, x - 1) for j in (0, y - 1) for k in (0, z - 1)], float)
        p = corners @ self.ijk_to_lps().T
        return p[:, :3].min(0), p[:, :3].max(0)

    @classmethod
    def from_sitk(cls, image, dtype=None) -> "Volume":
        import SimpleITK as sitk

        arr = sitk.GetArrayFromImage(image)
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        return cls(arr, image.GetOrigin(), image.GetSpacing(), np.array(image.GetDirection()).reshape(3, 3))

    def to_sitk(self):
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(self.array)
        img.SetOrigin(tuple(self.origin_lps_mm))
        img.SetSpacing(tuple(self.spacing_mm))
        img.SetDirection(tuple(self.direction.ravel()))
        return img

    @classmethod
    def from_box_grid(cls, array_xyz: np.ndarray, origin_lps_mm, spacing_mm) -> "Volume":
        """Wrap an (X, Y, Z)-indexed array on an LPS-aligned grid (as geometry.box_grid gives)."""
        return cls(np.ascontiguousarray(np.transpose(array_xyz, (2, 1, 0))), origin_lps_mm, spacing_mm, np.eye(3))
