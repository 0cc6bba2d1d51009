"""Marked scoliosis: virtual patients whose spine is C or S shaped (issue 14, detector v3's gaps).

Detector v3 found 26 of 45 bones on a gallery adult with a severe S-shaped thoracic scoliosis
(nih_00000284: ribs and vertebrae missed; ``bench/README.md``, "Gallery recall: what detector
v3 misses"). The virtual patients' own curvature (``virtual.RANGES["scoliosis_mm"]``, one
lateral bend of up to 10 mm, 14 in the test band) is far from that.

A marked scoliosis is one or two lateral curves of the spine, each a ``cos^2`` bump of the
lateral deviation ``D(z)`` along the body axis: ``apex_mm`` (20-50 mm, sign: LPS x, negative
toward the patient's right) at vertebra ``apex_level`` (C7 0, T1 1, ..., T12 12, L1 13, beyond
by the source's own level spacing), falling to zero a half-length ``h`` above and below. The
Cobb angle of a curve (between its most tilted vertebrae, where the bump is steepest) is
``2 atan(pi A / 2h)``: ``h`` follows from the drawn ``apex_mm`` and ``cobb_deg`` (25-60 deg),
kept within ``HALF_LEVELS`` (C 4-7, S 4-5.5 levels of the source's spine), so the Cobb angle made
may differ from the one drawn (a large deviation on a short S curve: steeper; recorded per curve
by ``Spine.describe``). ``C``: one curve; ``S``: a second one of opposite sign right below the
first, ``ratio`` (0.6-0.9) of its deviation and length.

The warp (a backward map, in the virtual patient's frame relative to the anchor, right after the
mild curvature of ``AnatomySource.warp``), at a point whose axial offset from the displaced spine
axis is ``(a, b)`` (``r`` its length):

* lateral shift ``D(z)`` with weight ``LATERAL_FLOOR + (1 - LATERAL_FLOOR) exp(-r^2 / 2 s^2)``
  (``s`` = ``LATERAL_SIGMA_MM``): the spine moves by the whole deviation, the chest wall far from
  it by ``LATERAL_FLOOR`` of it (the hemithorax on the convex side narrows), the ribs in between
  toward their vertebra's side;
* vertebral tilt: ``z`` moves by ``a sin(theta)`` (``tan theta = D'(z)``) within
  ``TILT_SIGMA_MM`` of the axis: each vertebra and the ribs' posterior ends turn with the curve
  (beside the spine, the concave side is pressed together along z, the convex side spread);
* axial rotation toward the convexity: ``rotation_deg_per_mm * D(z)`` about the spine axis, the
  angle fading with ``r`` (``ROTATION_SIGMA_MM``): the vertebral body turns toward the convex
  side, the spinous process toward the concave side, and the rib cage with them.

The spine axis is the source's own: a quadratic in z through its vertebrae's centroids
(``AnatomySource.layout``; median of three neighbours first, so one mislabelled vertebra does
not bend it). Everything that follows the warp (label map, DRR, occupancy samples,
boxes) moves with it. Who gets it: ``x2br build-dataset --scoliosis P`` draws it for a share P of
train and val cases (off by default; the test split never, so test numbers stay comparable), from
the case's own stream ``[seed, split, index, 4]``: a case's other draws stay what they were.
Measured against detector v3: ``bench/bench_film_gaps.py --effects scoliosis``
(``bench/results/film_gaps_scoliosis_cpu.txt``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import streams

SCOLIOSIS_STREAM = streams.SCOLIOSIS  # the case stream [seed, split, index, 4] (streams.py)
SCOLIOSIS_RANGES = {
    "apex_mm": (20.0, 50.0),       # the main curve's apex deviation (side drawn)
    "cobb_deg": (25.0, 60.0),      # the main curve's Cobb angle, before HALF_LEVELS bounds its length
    "apex_level_C": (6.0, 10.0),   # C: a thoracic or thoracolumbar curve, apex T6-T10
    "apex_level_S": (5.0, 7.5),    # S: a thoracic curve, apex T5-T7.5, and a lumbar one below
    "ratio_S": (0.6, 0.9),         # the lower curve's deviation and length over the upper's
    "rotation_deg_per_mm": (0.3, 0.5),  # axial rotation per mm of deviation: 6-25 deg at the apex
}
S_SHARE = 0.5
HALF_LEVELS = {"C": (4.0, 7.0), "S": (4.0, 5.5)}  # a curve's half-length in levels of the source
# (S: shorter, so that the lower curve's apex lies at the lumbar spine, levels 11.4-17.4)
LATERAL_FLOOR = 0.3
LATERAL_SIGMA_MM = 80.0
TILT_SIGMA_MM = 30.0
ROTATION_SIGMA_MM = 100.0


def sample_scoliosis(rng: np.random.Generator) -> dict:
    """One marked scoliosis: {"shape", "apex_mm", "apex_level", "cobb_deg", "ratio" (S; C: 0),
    "rotation_deg_per_mm"} drawn from SCOLIOSIS_RANGES."""
    r = SCOLIOSIS_RANGES
    shape = "S" if rng.uniform() < S_SHARE else "C"
    return {"shape": shape,
            "apex_mm": float(rng.choice([-1.0, 1.0]) * rng.uniform(*r["apex_mm"])),
            "apex_level": float(rng.uniform(*r[f"apex_level_{shape}"])),
            "cobb_deg": float(rng.uniform(*r["cobb_deg"])),
            "ratio": float(rng.uniform(*r["ratio_S"])) if shape == "S" else 0.0,
            "rotation_deg_per_mm": float(rng.uniform(*r["rotation_deg_per_mm"]))}


def draw_scoliosis(seed: int, split_id: int, index: int, probability: float) -> dict | None:
    """The marked scoliosis of a case (None: none), deterministic per case."""
    return streams.draw_optional(seed, split_id, index, SCOLIOSIS_STREAM, probability, sample_scoliosis)


class Spine:
    """A source's spine from its vertebrae's centroids relative to the anchor (LPS mm): the z of
    each level, the mm per level and a smooth axis (x, y) along z."""

    def __init__(self, layout: dict, name: str = ""):
        from scipy.ndimage import median_filter

        from .. import anatomy
        from ..errors import InputError

        rows = sorted((b.order, layout[b.label]) for b in anatomy.group("vertebra") if b.label in layout)
        if len(rows) < 4:
            raise InputError(f"a marked scoliosis needs the spine: {len(rows)} catalog vertebrae in the CT "
                             f"{name}".rstrip())
        self.levels = np.array([o for o, _ in rows], float)
        xyz = np.array([c for _, c in rows], float)
        self.z = xyz[:, 2]
        # mm per level: the median step (a vertebra cut by the CT's field has its centroid off)
        self.spacing = float(np.median(-np.diff(self.z) / np.diff(self.levels)))
        # the axis: a quadratic in z through the vertebrae (median of three: one mislabelled is ignored)
        smooth = median_filter(xyz[:, :2], size=(3, 1), mode="nearest")
        self.fit = [np.polyfit(self.z, smooth[:, k], 2) for k in (0, 1)]

    def level_z(self, level: float) -> float:
        """z (relative to the anchor) of a vertebral level; beyond the CT's vertebrae by the spacing."""
        lv, z = self.levels, self.z
        if level < lv[0]:
            return float(z[0] + (lv[0] - level) * self.spacing)
        if level > lv[-1]:
            return float(z[-1] - (level - lv[-1]) * self.spacing)
        return float(np.interp(level, lv, z))

    def axis(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The spine axis (x, y) at heights z (constant beyond the end vertebrae)."""
        zc = z.clamp(float(self.z.min()), float(self.z.max()))
        return tuple(c[0] * zc * zc + c[1] * zc + c[2] for c in self.fit)

    def curves(self, scoliosis: dict) -> list[tuple[float, float, float]]:
        """(apex deviation mm, apex z, half-length mm) of each curve."""
        a = scoliosis["apex_mm"]
        lo, hi = (n * self.spacing for n in HALF_LEVELS[scoliosis["shape"]])
        h = float(np.clip(math.pi * abs(a) / (2 * math.tan(math.radians(scoliosis["cobb_deg"]) / 2)), lo, hi))
        z = self.level_z(scoliosis["apex_level"])
        out = [(a, z, h)]
        if scoliosis["shape"] == "S":
            k = scoliosis["ratio"]
            out.append((-k * a, z - h - k * h, k * h))
        return out

    def describe(self, scoliosis: dict) -> dict:
        """The scoliosis with what it makes of this spine: per curve the apex deviation and level,
        the half-length (mm), the Cobb angle and the apex's axial rotation (degrees)."""
        made = []
        for a, z, h in self.curves(scoliosis):
            level = self.levels[0] + (self.z[0] - z) / self.spacing if z > self.z[0] else \
                self.levels[-1] + (self.z[-1] - z) / self.spacing if z < self.z[-1] else \
                float(np.interp(-z, -self.z, self.levels))
            made.append({"apex_mm": round(a, 1), "apex_level": round(float(level), 1), "half_mm": round(h, 1),
                         "cobb_deg": round(math.degrees(2 * math.atan(math.pi * abs(a) / (2 * h))), 1),
                         "apex_rotation_deg": round(scoliosis["rotation_deg_per_mm"] * a, 1)})
        return {**scoliosis, "curves": made}


def spine_of(src) -> Spine:
    """The Spine of an AnatomySource, built once."""
    if getattr(src, "_spine", None) is None:
        src._spine = Spine(src.layout, src.name)
    return src._spine


def deviation(spine: Spine, scoliosis: dict, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The lateral deviation D(z) (mm) and its slope dD/dz at heights z."""
    d, slope = torch.zeros_like(z), torch.zeros_like(z)
    for a, z0, h in spine.curves(scoliosis):
        u = (z - z0) / h
        inside = u.abs() < 1
        d = d + torch.where(inside, a * torch.cos(0.5 * math.pi * u) ** 2, torch.zeros_like(z))
        slope = slope + torch.where(inside, -a * math.pi / (2 * h) * torch.sin(math.pi * u), torch.zeros_like(z))
    return d, slope


def unbend(p: torch.Tensor, spine: Spine, scoliosis: dict) -> torch.Tensor:
    """Backward map of a marked scoliosis: (N, 3) points relative to the anchor in the curved
    patient -> the same points in the straight one (see the module docstring)."""
    z = p[:, 2]
    d, slope = deviation(spine, scoliosis, z)
    xs, ys = spine.axis(z)
    a, b = p[:, 0] - xs - d, p[:, 1] - ys
    r2 = a * a + b * b
    phi = -math.radians(scoliosis["rotation_deg_per_mm"]) * d * torch.exp(-r2 / (2 * ROTATION_SIGMA_MM ** 2))
    c, s = torch.cos(phi), torch.sin(phi)
    w = LATERAL_FLOOR + (1 - LATERAL_FLOOR) * torch.exp(-r2 / (2 * LATERAL_SIGMA_MM ** 2))
    tilt = slope / torch.sqrt(1 + slope * slope) * a * torch.exp(-r2 / (2 * TILT_SIGMA_MM ** 2))
    return torch.stack([xs + a * c - b * s + d * (1 - w), ys + a * s + b * c, z + tilt], 1)
