"""Marked scoliosis: virtual patients whose spine is C or S shaped (issue 14, detector v3's gaps).

Detector v3 found 26 of 45 bones on a gallery adult with a severe S-shaped thoracic scoliosis
(nih_00000284: ribs and vertebrae missed; ``bench/README.md``, "Gallery recall: what detector
v3 misses"). The virtual patients' own curvature (``virtual.RANGES["scoliosis_mm"]``, one
lateral bend of up to 10 mm, 14 in the test band) is far from that.

A marked scoliosis is one or two lateral curves of the spine, each a ``cos^2`` bump of the
lateral deviation ``D(z)`` along the body axis: ``apex_mm`` (20-50 mm, sign: LPS x, negative
toward the patient's right) at vertebra ``apex_level`` (C7 0, T1 1, ..., T12 12, L1 13, beyond
by the source's own level spacing), falling to zero ``half_levels`` above and below. ``C``: one
curve; ``S``: a second one of opposite sign right below the first (``ratio`` 0.6-1 of its
deviation and of its length, so both curves' Cobb angles are alike). Cobb angle of a curve
(between its most tilted vertebrae, where the bump's slope is steepest): ``2 atan(pi A / 2h)``,
``h`` the half-length in mm; recorded per curve.

The warp (a backward map, in the virtual patient's frame relative to the anchor, right after the
mild curvature of ``AnatomySource.warp``), at a point whose axial offset from the displaced spine
axis is ``(a, b)`` (``r`` its length):

* lateral shift ``D(z)`` with weight ``LATERAL_FLOOR + (1 - LATERAL_FLOOR) exp(-r^2 / 2 s^2)``
  (``s`` = ``LATERAL_SIGMA_MM``): the spine moves by the whole deviation, the chest wall far from it
  by ``LATERAL_FLOOR`` of it (the hemithorax on the convex side narrows) and the ribs follow their vertebrae;
* vertebral tilt: ``z`` moves by ``a sin(theta)`` (``tan theta = D'(z)``) within
  ``TILT_SIGMA_MM`` of the axis: each vertebra and the ribs' posterior ends turn with the curve
  (the concave side's ribs crowd, the convex side's spread);
* axial rotation toward the convexity: ``rotation_deg_per_mm * D(z)`` about the spine axis, the
  angle fading with ``r`` (``ROTATION_SIGMA_MM``): the vertebral body turns toward the convex
  side, the spinous process toward the concave side, and the rib cage with them.

The spine axis is the source's own: its vertebrae's centroids (``AnatomySource.layout``),
interpolated along z. Everything that follows the warp (label map, DRR, occupancy samples,
boxes) moves with it. Who gets it: ``x2br build-dataset --scoliosis P`` draws it for a share P of
train and val cases (off by default; the test split never, so test numbers stay comparable), from
the case's own stream ``[seed, split, index, 4]``: a case's other draws stay what they were.
"""
from __future__ import annotations

import math

import numpy as np
import torch

SCOLIOSIS_STREAM = 4  # the case stream [seed, split, index, 4]; 1: blend, 2: lateral, 3: framing
SCOLIOSIS_RANGES = {
    "apex_mm": (20.0, 50.0),       # the main curve's apex deviation (side drawn)
    "apex_level_C": (6.0, 10.0),   # C: a thoracic or thoracolumbar curve, apex T6-T10
    "half_levels_C": (5.5, 8.0),
    "apex_level_S": (5.0, 7.5),    # S: a thoracic curve, apex T5-T7.5, and a lumbar one below
    "half_levels_S": (4.0, 5.5),
    "ratio_S": (0.6, 1.0),         # the lower curve's deviation and length over the upper's
    "rotation_deg_per_mm": (0.3, 0.5),  # axial rotation per mm of deviation: 6-25 deg at the apex
}
S_SHARE = 0.5
LATERAL_FLOOR = 0.3
LATERAL_SIGMA_MM = 80.0
TILT_SIGMA_MM = 30.0
ROTATION_SIGMA_MM = 100.0


def sample_scoliosis(rng: np.random.Generator) -> dict:
    """One marked scoliosis: {"shape", "curves": [{"apex_mm", "apex_level", "half_levels"}],
    "rotation_deg_per_mm"} drawn from SCOLIOSIS_RANGES."""
    r = SCOLIOSIS_RANGES
    shape = "S" if rng.uniform() < S_SHARE else "C"
    apex = float(rng.choice([-1.0, 1.0]) * rng.uniform(*r["apex_mm"]))
    level = float(rng.uniform(*r[f"apex_level_{shape}"]))
    half = float(rng.uniform(*r[f"half_levels_{shape}"]))
    curves = [{"apex_mm": apex, "apex_level": level, "half_levels": half}]
    if shape == "S":
        k = float(rng.uniform(*r["ratio_S"]))
        curves.append({"apex_mm": -k * apex, "apex_level": level + half + k * half, "half_levels": k * half})
    return {"shape": shape, "curves": curves, "rotation_deg_per_mm": float(rng.uniform(*r["rotation_deg_per_mm"]))}


def draw_scoliosis(seed: int, split_id: int, index: int, probability: float) -> dict | None:
    """The marked scoliosis of a case (None: none), deterministic per case."""
    if probability <= 0:
        return None
    rng = np.random.default_rng([seed, split_id, index, SCOLIOSIS_STREAM])
    return sample_scoliosis(rng) if rng.uniform() < probability else None


class Spine:
    """A source's spine: each catalog vertebra's centroid relative to the anchor (LPS mm)."""

    def __init__(self, layout: dict):
        from .. import anatomy

        rows = sorted((b.order, layout[b.label]) for b in anatomy.group("vertebra") if b.label in layout)
        if len(rows) < 4:
            raise ValueError(f"a marked scoliosis needs the spine: {len(rows)} catalog vertebrae in the CT")
        self.levels = np.array([o for o, _ in rows], float)
        self.xyz = np.array([c for _, c in rows], float)
        # mm per level (positive), from the first to the last vertebra present
        self.spacing = float((self.xyz[0, 2] - self.xyz[-1, 2]) / (self.levels[-1] - self.levels[0]))

    def level_z(self, level: float) -> float:
        """z (relative to the anchor) of a vertebral level; beyond the CT's vertebrae by the spacing."""
        lv, z = self.levels, self.xyz[:, 2]
        if level < lv[0]:
            return float(z[0] + (lv[0] - level) * self.spacing)
        if level > lv[-1]:
            return float(z[-1] - (level - lv[-1]) * self.spacing)
        return float(np.interp(level, lv, z))

    def axis(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The spine axis (x, y) at heights z (constant beyond the end vertebrae)."""
        order = np.argsort(self.xyz[:, 2])
        zs = torch.tensor(self.xyz[order, 2], dtype=z.dtype, device=z.device)
        out = []
        for col in (0, 1):
            vs = torch.tensor(self.xyz[order, col], dtype=z.dtype, device=z.device)
            zc = z.clamp(zs[0], zs[-1])
            i = torch.searchsorted(zs, zc).clamp(1, len(zs) - 1)
            t = (zc - zs[i - 1]) / (zs[i] - zs[i - 1])
            out.append(vs[i - 1] + t * (vs[i] - vs[i - 1]))
        return out[0], out[1]

    def curves(self, scoliosis: dict) -> list[tuple[float, float, float]]:
        """(apex deviation mm, apex z, half-length mm) of each curve."""
        return [(c["apex_mm"], self.level_z(c["apex_level"]), c["half_levels"] * self.spacing)
                for c in scoliosis["curves"]]

    def describe(self, scoliosis: dict) -> dict:
        """The scoliosis with each curve's Cobb angle and apex axial rotation (degrees) added."""
        out = {**scoliosis, "curves": [dict(c) for c in scoliosis["curves"]]}
        for c, (a, _, h) in zip(out["curves"], self.curves(scoliosis)):
            c["cobb_deg"] = round(math.degrees(2 * math.atan(math.pi * abs(a) / (2 * h))), 1)
            c["apex_rotation_deg"] = round(scoliosis["rotation_deg_per_mm"] * a, 1)
        return out


def spine_of(src) -> Spine:
    """The Spine of an AnatomySource, built once."""
    if getattr(src, "_spine", None) is None:
        src._spine = Spine(src.layout)
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
