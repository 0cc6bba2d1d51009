"""Deformable registration of the labelled atlas CT onto a target chest CT.

Both CTs become the same contrast-robust picture on a coarse grid (``COARSE_MM``):
Hounsfield units clipped to [-1000, 200] (air, lung, fat, soft tissue; no contrast
agent, no bone) plus a bone term, 800 x the fraction of each coarse voxel that is
bone (the atlas: its bone labels; the target: its HU bone mask). Registration
(SimpleITK, Mattes mutual information, fixed seeds and thread count: deterministic):

1. initial transform from the lungs' bounding boxes (centre and per-axis scale);
2. affine, three resolutions (16, 8, 4 mm);
3. demons (symmetric forces, displacement field smoothed with a 6 mm Gaussian), two
   resolutions (8, 4 mm). A B-spline stage (Mattes MI, ~45 mm control grid) is the
   alternative (``deformable="bspline"``): no more accurate on virtual patients, several
   times slower (bench/README.md).

(grid spacings and iterations: ``RegistrationOptions``; the atlas carries the options it
was prepared with.)

The result maps target points (LPS mm) to atlas points (LPS mm), which is what
resampling the atlas labels onto the target grid needs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .chest import COARSE_MM, ChestInfo, coarse, crop_z

BONE_WEIGHT_HU = 800.0
THREADS = 2           # fixed: the result does not depend on the machine's core count
SEED = 12


@dataclass(frozen=True)
class RegistrationOptions:
    """coarse_mm: registration grid spacing; iterations per stage; bspline_grid_mm: control
    point spacing of the B-spline."""

    coarse_mm: float = COARSE_MM
    affine_iterations: int = 100
    deformable: str = "demons"         # "demons" | "bspline" | "none"
    bspline_iterations: int = 40
    bspline_grid_mm: float = 45.0
    demons_iterations: int = 100
    demons_levels: int = 2
    demons_sigma_mm: float = 6.0       # Gaussian smoothing of the demons displacement field


DEFAULT = RegistrationOptions()
FAST = RegistrationOptions(coarse_mm=6.0, affine_iterations=50, demons_iterations=50)  # small tests only


@dataclass
class Registration:
    """transform: SimpleITK transform, target LPS mm -> atlas LPS mm; timings_s; metric values."""

    transform: object
    timings_s: dict
    metric: dict


def feature_image(hu_img, bone_mask_img, z_range_mm, coarse_mm: float = COARSE_MM):
    """The coarse registration picture of one CT: float32 SimpleITK image.

    hu_img: HU (contrast removed for the atlas); bone_mask_img: uint8 0/1 on the same grid;
    z_range_mm: (inferior, superior) LPS z to keep.
    """
    import SimpleITK as sitk

    hu, _ = crop_z(hu_img, z_range_mm)
    bone, _ = crop_z(bone_mask_img, z_range_mm)
    c_hu = coarse(hu, coarse_mm)
    frac = coarse(sitk.Cast(bone, sitk.sitkFloat32), coarse_mm, default=0.0)
    a = np.clip(sitk.GetArrayFromImage(c_hu), -1000.0, 200.0)
    a += BONE_WEIGHT_HU * np.clip(2.0 * sitk.GetArrayFromImage(frac), 0.0, 1.0)
    out = sitk.GetImageFromArray(a.astype(np.float32))
    out.CopyInformation(c_hu)
    return out


def initial_transform(target: ChestInfo, atlas: ChestInfo):
    """Affine target -> atlas from the lungs' boxes: centres matched, each axis scaled."""
    import SimpleITK as sitk

    (tlo, thi), (alo, ahi) = [np.array(b, float) for b in target.lung_box_lps_mm], \
        [np.array(b, float) for b in atlas.lung_box_lps_mm]
    scale = np.clip((ahi - alo) / np.maximum(thi - tlo, 1.0), 0.6, 1.6)
    tc, ac = (tlo + thi) / 2, (alo + ahi) / 2
    t = sitk.AffineTransform(3)
    t.SetCenter(tuple(tc))
    t.SetMatrix(tuple(np.diag(scale).ravel()))
    t.SetTranslation(tuple(ac - tc))
    return t


def _method(levels, sigmas, sampling):
    import SimpleITK as sitk

    r = sitk.ImageRegistrationMethod()
    r.SetNumberOfThreads(THREADS)
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=48)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(sampling, SEED)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetShrinkFactorsPerLevel(levels)
    r.SetSmoothingSigmasPerLevel(sigmas)
    r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return r


def register(fixed, moving, target: ChestInfo, atlas: ChestInfo, options: RegistrationOptions = DEFAULT,
             bspline: bool = True) -> Registration:
    """fixed: target feature image; moving: atlas feature image (both from feature_image)."""
    import SimpleITK as sitk

    times, metric = {}, {}
    t0 = time.perf_counter()
    init = initial_transform(target, atlas)
    r = _method([4, 2, 1], [2.0, 1.0, 0.0], sampling=0.1)
    r.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3,
                                               numberOfIterations=options.affine_iterations,
                                               relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetInitialTransform(init, inPlace=False)
    affine = r.Execute(fixed, moving)
    metric["affine"] = float(r.GetMetricValue())
    times["affine"] = time.perf_counter() - t0
    if not bspline or options.deformable == "none":
        return Registration(affine, times, metric)
    if options.deformable == "demons":
        return _demons(fixed, moving, affine, options, times, metric)

    t0 = time.perf_counter()
    extent = np.array(fixed.GetSize()) * np.array(fixed.GetSpacing())
    mesh = [max(2, int(round(e / options.bspline_grid_mm))) for e in extent]
    bsp = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    r = _method([2, 1], [1.0, 0.0], sampling=0.05)
    n = options.bspline_iterations
    r.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=n,
                           maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=2 * n,
                           costFunctionConvergenceFactor=1e7)
    r.SetMovingInitialTransform(affine)
    r.SetInitialTransform(bsp, inPlace=True)
    r.Execute(fixed, moving)
    metric["bspline"] = float(r.GetMetricValue())
    times["bspline"] = time.perf_counter() - t0
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(affine)
    composite.AddTransform(bsp)
    return Registration(composite, times, metric)


def _demons(fixed, moving, affine, options: RegistrationOptions, times: dict, metric: dict) -> Registration:
    """Symmetric-forces demons between the fixed image and the affinely resampled moving one:
    ``demons_levels`` resolutions (coarsest first, each twice the next's spacing), the field of
    one level starting the next."""
    import SimpleITK as sitk

    t0 = time.perf_counter()
    moved = sitk.Resample(moving, fixed, affine, sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    field = None
    for level in reversed(range(options.demons_levels)):
        f = 2 ** level
        fx, mv = fixed, moved
        if f > 1:
            sigma = 0.5 * f * options.coarse_mm
            fx, mv = (sitk.Shrink(sitk.SmoothingRecursiveGaussian(im, sigma), [f] * 3) for im in (fixed, moved))
        d = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        d.SetNumberOfThreads(THREADS)
        d.SetNumberOfIterations(options.demons_iterations)
        d.SetStandardDeviations(options.demons_sigma_mm / (f * options.coarse_mm))  # in voxels
        if field is None:
            field = d.Execute(fx, mv)
        else:
            init = sitk.Resample(field, fx, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = d.Execute(fx, mv, init)
    metric["demons"] = float(d.GetMetric())
    times["demons"] = time.perf_counter() - t0
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(affine)
    composite.AddTransform(sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64)))
    return Registration(composite, times, metric)


def warp_labels(atlas_labels, transform, reference):
    """Atlas labels (uint8 SimpleITK image) resampled (nearest) onto the reference grid."""
    import SimpleITK as sitk

    return sitk.Resample(atlas_labels, reference, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)

