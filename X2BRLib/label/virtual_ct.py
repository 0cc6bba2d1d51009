"""Virtual patients as CT volumes with their true labels: where the labeller's accuracy is known.

A virtual patient (dataset/virtual.py) of a labelled CT, evaluated on an axis-aligned
grid around the isocentre: HU with the contrast agent removed exactly as the dataset
removes it (non-bone voxels above 150 HU become blood), and the true catalog labels
on the same grid. Used by bench/bench_label.py and the tests.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..dataset.virtual import AnatomySource, VariationParams, sample_variation


def strong_variation(seed: int) -> VariationParams:
    """A strongly deformed patient: the test bands of rotation, curvature and scale, a
    larger elastic field, and the CT's own intensities (no density scaling), so the
    labeller sees bone as a CT scanner shows it."""
    p = sample_variation(np.random.default_rng(seed), held_out=True)
    rng = np.random.default_rng(seed + 1000)
    return dataclasses.replace(p, elastic_mm=float(rng.uniform(5.0, 8.0)), bone_shift_mm=2.0,
                               bone_rot_deg=2.5, breath_deg=float(rng.choice([-5.0, 5.0])),
                               soft_tissue=1.0, lung=1.0, bone_density=1.0)


def virtual_ct(src: AnatomySource, params: VariationParams, spacing_xyz_mm=(1.2, 1.2, 2.5),
               extent_mm=(400.0, 320.0, 380.0)):
    """(hu SimpleITK int16 image, true labels (Z, Y, X) uint8) of one virtual patient on an
    LPS-aligned grid centred on the isocentre (the anatomy's centre)."""
    import SimpleITK as sitk
    import torch

    spacing = np.asarray(spacing_xyz_mm, float)
    shape = np.maximum((np.asarray(extent_mm) / spacing).astype(int), 8)
    origin = -(shape - 1) * spacing / 2
    hu = np.empty(shape[::-1], np.int16)
    lab = np.empty(shape[::-1], np.uint8)
    ys, xs = np.meshgrid(origin[1] + spacing[1] * np.arange(shape[1]),
                         origin[0] + spacing[0] * np.arange(shape[0]), indexing="ij")
    chunk = max(1, 2_000_000 // xs.size)  # axial slices per call: memory stays small
    with torch.no_grad():
        for k0 in range(0, shape[2], chunk):
            ks = np.arange(k0, min(k0 + chunk, shape[2]))
            z = np.repeat(origin[2] + spacing[2] * ks, xs.size)
            pts = torch.from_numpy(np.stack([np.tile(xs.ravel(), len(ks)), np.tile(ys.ravel(), len(ks)), z], 1))
            p_ct = src.warp(pts.float(), params)
            lk = src.sample_labels(p_ct)
            hk = src.sample_hu(p_ct, params, lk)
            lab[ks] = lk.reshape(len(ks), shape[1], shape[0]).cpu().numpy()
            hu[ks] = np.rint(hk.reshape(len(ks), shape[1], shape[0]).cpu().numpy()).astype(np.int16)
    img = sitk.GetImageFromArray(hu)
    img.SetOrigin(tuple(origin))
    img.SetSpacing(tuple(spacing))
    return img, lab


def dice_per_bone(pred: np.ndarray, truth: np.ndarray) -> dict[int, float]:
    """Dice of each label present in either map (labels > 0)."""
    n = 256
    both = np.bincount(np.where(pred == truth, truth, 0).ravel(), minlength=n)
    p = np.bincount(pred.ravel(), minlength=n)
    t = np.bincount(truth.ravel(), minlength=n)
    return {int(v): float(2 * both[v] / (p[v] + t[v])) for v in range(1, n) if p[v] + t[v]}
