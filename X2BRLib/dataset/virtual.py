"""Virtual patients: documented, realistic variation of one labelled CT.

A virtual patient is a backward warp ``p_out (LPS mm, box frame) -> p_ct (LPS mm,
CT frame)`` plus intensity changes. Evaluating the warp on the reconstruction
grid gives the warped CT (for the DRR) and the ground-truth label volume;
evaluating it on arbitrary points gives exact occupancy labels for those points.
The same function serves both, so samples and ground truth always agree.

Variation, in the order the forward model applies it to the anatomy
(each parameter's range is in :data:`RANGES`):

1. per-bone jitter: each bone moves rigidly (translation, small rotation about
   its centroid);
2. breathing: every rib rotates about the left-right axis through its
   posterior (costovertebral) end, more for lower ribs ("pump handle");
3. spine curvature: lateral (scoliosis-like) and sagittal (kyphosis-like)
   bending that shifts each axial level; with ``marked_scoliosis`` (drawn only by
   ``build-dataset --scoliosis P``) a C or S shaped spine with tilted and rotated
   vertebrae whose rib cage follows (scoliosis.py);
4. smooth elastic deformation: a random displacement field on a coarse grid,
   interpolated trilinearly;
5. global size and aspect: scale along LR, AP, SI;
6. rotation about the body axis (plus small tilts), then placement: the
   anatomy's centre lands at the isocentre plus a small random shift.

Intensity: contrast agent removed (non-bone voxels above 150 HU set to blood) in a
contrast-enhanced CT; in a CT without contrast, unlabelled voxels above 150 HU are
bone outside the catalog (arm shafts, calcified cartilage) and change with the
bone density like the labelled bones. Then soft-tissue and lung density scaling,
bone density scaling. Film: source and
detector distances, PA or AP, detector noise, post-processing (gamma, CLAHE,
unsharp masking) in :mod:`X2BRLib.dataset.film`.

Held-out variation: the ``test`` split draws half of its cases' rotation,
curvature and scale from outer bands (``RANGES[...]["test_band"]``) that the
training split never sees, and all test seeds are disjoint from training seeds.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import anatomy
from ..io.ct import LabelledCT

# name: (train low, train high), test_band: extra magnitude band beyond the train range
RANGES = {
    "scale": {"train": (0.92, 1.08), "test_band": (1.08, 1.12)},   # global size factor
    "aspect": {"train": (0.94, 1.06)},                             # per-axis factor on top
    "rot_z_deg": {"train": (-8.0, 8.0), "test_band": (8.0, 11.0)},  # about the body axis
    "tilt_deg": {"train": (-3.0, 3.0)},                            # about LR and AP axes
    "scoliosis_mm": {"train": (-10.0, 10.0), "test_band": (10.0, 14.0)},
    "kyphosis_mm": {"train": (-8.0, 8.0)},
    "bone_shift_mm": {"train": (0.0, 2.0)},        # std of per-bone translation
    "bone_rot_deg": {"train": (0.0, 2.5)},         # std of per-bone rotation
    "breath_deg": {"train": (-4.0, 4.0)},          # rib rotation at rib 12; rib 1 gets 40%
    "elastic_mm": {"train": (0.0, 4.0)},           # std of the coarse displacement field
    "shift_mm": {"train": (-12.0, 12.0)},          # placement, LR and SI
    "shift_ap_mm": {"train": (-6.0, 6.0)},         # placement, AP (depth is ambiguous on a film)
    "soft_tissue": {"train": (0.85, 1.2)},
    "lung": {"train": (0.8, 1.25)},
    # bone attenuation relative to the CT's (which is measured at ~120 kVp): a chest film
    # at 70-125 kVp sees bone relatively more attenuating; nominal 2.0
    "bone_density": {"train": (1.5, 2.5)},
}


NOMINAL_BONE_DENSITY = 2.0


@dataclass
class VariationParams:
    """One virtual patient's anatomy parameters (all JSON-able)."""

    scale: float
    aspect: tuple
    rot_z_deg: float
    tilt_deg: tuple
    scoliosis_mm: float
    kyphosis_mm: float
    breath_deg: float
    bone_seed: int
    bone_shift_mm: float
    bone_rot_deg: float
    elastic_seed: int
    elastic_mm: float
    shift_mm: tuple
    soft_tissue: float
    lung: float
    bone_density: float
    toward: str = ""        # another patient whose bone layout this one moves toward (blend.py)
    toward_t: float = 0.0   # how far: 0 none, 1 that patient's layout
    marked_scoliosis: dict | None = None  # scoliosis.py: a C or S shaped spine; None: none

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["marked_scoliosis"] is None:  # absent when off: such a case's params are what version 6 wrote
            del d["marked_scoliosis"]
        return d


def _u(rng, key, held_out=False):
    lo, hi = RANGES[key]["train"]
    band = RANGES[key].get("test_band")
    if held_out and band is not None:
        mag = rng.uniform(*band)
        return float(mag if key == "scale" else mag * rng.choice([-1.0, 1.0]))
    return float(rng.uniform(lo, hi))


def sample_variation(rng: np.random.Generator, held_out: bool = False) -> VariationParams:
    """Draw a virtual patient. held_out: draw rotation, curvature and scale from the test bands."""
    return VariationParams(
        scale=_u(rng, "scale", held_out),
        aspect=tuple(_u(rng, "aspect") for _ in range(3)),
        rot_z_deg=_u(rng, "rot_z_deg", held_out),
        tilt_deg=(_u(rng, "tilt_deg"), _u(rng, "tilt_deg")),
        scoliosis_mm=_u(rng, "scoliosis_mm", held_out),
        kyphosis_mm=_u(rng, "kyphosis_mm"),
        breath_deg=_u(rng, "breath_deg"),
        bone_seed=int(rng.integers(2**31)),
        bone_shift_mm=_u(rng, "bone_shift_mm"),
        bone_rot_deg=_u(rng, "bone_rot_deg"),
        elastic_seed=int(rng.integers(2**31)),
        elastic_mm=_u(rng, "elastic_mm"),
        shift_mm=(_u(rng, "shift_mm"), _u(rng, "shift_ap_mm"), _u(rng, "shift_mm")),
        soft_tissue=_u(rng, "soft_tissue"),
        lung=_u(rng, "lung"),
        bone_density=_u(rng, "bone_density"),
    )


def identity_variation() -> VariationParams:
    return VariationParams(1.0, (1.0, 1.0, 1.0), 0.0, (0.0, 0.0), 0.0, 0.0, 0.0, 0, 0.0, 0.0, 0, 0.0,
                           (0.0, 0.0, 0.0), 1.0, 1.0, NOMINAL_BONE_DENSITY)


def _rot(axis: int, deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    i, j = [k for k in range(3) if k != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


class AnatomySource:
    """A labelled CT prepared for warping (tensors, bone centroids, influence map).

    Build once per process; ``warp(points, params)`` and ``sample(...)`` are cheap.
    """

    INFLUENCE_MM = 4.0  # resolution of the nearest-bone map used by per-bone motion

    def __init__(self, ct: LabelledCT, device="cpu"):
        from scipy import ndimage

        self.name = ct.name
        # contrast removal applies to enhanced CTs and to CTs of unknown kind (the behaviour before
        # CTs recorded it); a non-contrast CT keeps its dense unlabelled voxels as bone
        self.contrast = True if ct.contrast is None else bool(ct.contrast)
        self.device = torch.device(device)
        self.hu = torch.from_numpy(np.ascontiguousarray(ct.hu.array, np.float32))[None, None].to(self.device)
        self.labels = torch.from_numpy(np.ascontiguousarray(ct.labels.array))[None, None].to(self.device)
        self.lps_to_ijk = torch.tensor(ct.hu.lps_to_ijk(), dtype=torch.float32, device=self.device)
        self.ijk_to_lps = ct.hu.ijk_to_lps()
        self.shape_xyz = np.array(ct.hu.shape_xyz)
        lab = ct.labels.array
        idx = np.argwhere(lab > 0)  # (z, y, x)
        pts = np.c_[idx[:, ::-1], np.ones(len(idx))] @ self.ijk_to_lps.T
        self.anchor = (pts[:, :3].min(0) + pts[:, :3].max(0)) / 2  # centre of the bones' bounding box
        self.bone_labels = sorted(int(v) for v in np.unique(lab[lab > 0]))
        self.centroids, self.pivots = {}, {}
        lv = lab[idx[:, 0], idx[:, 1], idx[:, 2]]
        for b in self.bone_labels:
            p = pts[lv == b, :3]
            self.centroids[b] = p.mean(0)
            # rib pivot: posterior end (largest y in LPS)
            self.pivots[b] = p[np.argmax(p[:, 1])]
        # nearest-bone map on a coarse grid over the CT's bounding box
        lo, hi = ct.hu.bounds_lps_mm()
        self.inf_lo = lo
        step = self.INFLUENCE_MM
        shape = np.maximum(((hi - lo) / step).astype(int) + 1, 2)
        g = np.stack(np.meshgrid(*[lo[a] + step * np.arange(shape[a]) for a in range(3)], indexing="ij"), -1)
        ijk = np.c_[g.reshape(-1, 3), np.ones(g[..., 0].size)] @ ct.hu.lps_to_ijk().T
        ijk = np.rint(ijk[:, :3]).astype(int)
        ok = np.all((ijk >= 0) & (ijk < self.shape_xyz), 1)
        coarse = np.zeros(len(ijk), np.uint8)
        coarse[ok] = lab[ijk[ok, 2], ijk[ok, 1], ijk[ok, 0]]
        coarse = coarse.reshape(tuple(shape))
        dist, (ix, iy, iz) = ndimage.distance_transform_edt(coarse == 0, return_indices=True)
        self.inf_label = torch.from_numpy(coarse[ix, iy, iz].astype(np.int64)).to(self.device)
        self.inf_weight = torch.from_numpy(np.exp(-0.5 * (dist * step / 6.0) ** 2).astype(np.float32)).to(self.device)
        self.inf_shape = shape
        self.layout = {b: self.centroids[b] - self.anchor for b in self.bone_labels}
        self.others: dict = {}  # patient -> bone layout (blend.bone_layout), set by the builder

    # ------------------------------------------------------------------ warp
    def _bone_transforms(self, params: VariationParams):
        """Per-bone inverse rigid maps as (L+1, 3, 3) rotations and (L+1, 3) translations:
        p_before = R @ p_after + t (identity for background)."""
        rng = np.random.default_rng(params.bone_seed)
        R = np.tile(np.eye(3), (256, 1, 1))
        t = np.zeros((256, 3))
        for b in self.bone_labels:
            bone = anatomy.by_label().get(b)
            rot = _rot(0, rng.normal(0, params.bone_rot_deg)) @ _rot(1, rng.normal(0, params.bone_rot_deg)) \
                @ _rot(2, rng.normal(0, params.bone_rot_deg))
            shift = rng.normal(0, params.bone_shift_mm, 3)
            c = self.centroids[b]
            if bone is not None and bone.group == "rib":
                breath = params.breath_deg * (0.4 + 0.6 * (bone.order - 1) / 11.0)
                rot = rot @ _rot(0, breath)
                c = self.pivots[b]
            # forward: p' = rot (p - c) + c + shift; inverse: p = rot^T (p' - c - shift) + c
            R[b] = rot.T
            t[b] = c - rot.T @ (c + shift)
        return (torch.tensor(R, dtype=torch.float32, device=self.device),
                torch.tensor(t, dtype=torch.float32, device=self.device))

    def _elastic_field(self, params: VariationParams, n: int = 7):
        rng = np.random.default_rng(params.elastic_seed)
        f = rng.normal(0, params.elastic_mm, (3, n, n, n)).astype(np.float32)
        return torch.from_numpy(f)[None].to(self.device)  # (1, 3, n, n, n) over the CT box

    def warp(self, points_box_mm: torch.Tensor, params: VariationParams) -> torch.Tensor:
        """Backward warp. points_box_mm: (N, 3) LPS mm relative to the isocentre.
        Returns (N, 3) LPS mm points in the CT's frame."""
        p = points_box_mm.to(self.device, torch.float32) - torch.tensor(params.shift_mm, device=self.device,
                                                                           dtype=torch.float32)
        rot = _rot(2, params.rot_z_deg) @ _rot(0, params.tilt_deg[0]) @ _rot(1, params.tilt_deg[1])
        scale = params.scale * np.asarray(params.aspect)
        # forward q = rot @ (S (p_ct - anchor)); inverse p_ct = S^-1 rot^T q + anchor
        m = torch.tensor(np.diag(1.0 / scale) @ rot.T, dtype=torch.float32, device=self.device)
        p = p @ m.T
        # spine curvature: displacement depends only on z (relative to the anchor), so it inverts exactly
        zr = p[:, 2] / 150.0
        p = p.clone()
        p[:, 0] -= params.scoliosis_mm * torch.sin(math.pi * 0.5 * zr.clamp(-2, 2))
        p[:, 1] -= params.kyphosis_mm * (zr.clamp(-2, 2) ** 2 - 0.33)
        if params.marked_scoliosis:
            from .scoliosis import spine_of, unbend

            p = unbend(p, spine_of(self), params.marked_scoliosis)
        p = p + torch.tensor(self.anchor, dtype=torch.float32, device=self.device)
        # elastic field, defined over the CT's bounds
        if params.elastic_mm > 0:
            lo = torch.tensor(self.inf_lo, dtype=torch.float32, device=self.device)
            ext = torch.tensor((self.inf_shape - 1) * self.INFLUENCE_MM, dtype=torch.float32, device=self.device)
            g = ((p - lo) / ext * 2 - 1)[None, :, None, None]  # (x, y, z) order indexes (W, H, D)
            field = self._elastic_field(params).permute(0, 1, 4, 3, 2)  # (1,3,z,y,x)
            d = F.grid_sample(field, g, align_corners=True, padding_mode="border")[0, :, :, 0, 0].T
            p = p + d
        # per-bone rigid motion, weighted by the nearest bone's influence
        if params.bone_shift_mm > 0 or params.bone_rot_deg > 0 or params.breath_deg != 0:
            R, t = self._bone_transforms(params)
            lo = torch.tensor(self.inf_lo, dtype=torch.float32, device=self.device)
            ci = torch.round((p - lo) / self.INFLUENCE_MM).long()
            shape = torch.tensor(self.inf_shape, device=self.device)
            ci = torch.minimum(torch.maximum(ci, torch.zeros_like(ci)), shape - 1)
            lab = self.inf_label[ci[:, 0], ci[:, 1], ci[:, 2]]
            w = self.inf_weight[ci[:, 0], ci[:, 1], ci[:, 2]]
            moved = torch.einsum("nij,nj->ni", R[lab], p) + t[lab]
            p = p + w[:, None] * (moved - p)
        # part of the way toward another patient's bone layout (first in the forward model)
        if params.toward and params.toward_t:
            from .blend import toward_displacement

            if params.toward not in self.others:
                raise ValueError(f"no bone layout of patient {params.toward!r} to move toward")
            p = p - params.toward_t * toward_displacement(p, self.layout, self.others[params.toward], self.anchor)
        return p

    # ------------------------------------------------------------------ sampling
    def _grid(self, p_ct: torch.Tensor) -> torch.Tensor:
        ijk = p_ct @ self.lps_to_ijk[:3, :3].T + self.lps_to_ijk[:3, 3]
        size = torch.tensor(self.shape_xyz - 1, dtype=torch.float32, device=self.device)
        return (ijk / size * 2 - 1)[None, :, None, None]  # (1, N, 1, 1, 3) in (x, y, z) order

    def sample_labels(self, p_ct: torch.Tensor) -> torch.Tensor:
        """(N,) uint8 catalog labels at CT-frame points (nearest voxel; 0 outside the CT)."""
        out = F.grid_sample(self.labels.float(), self._grid(p_ct), mode="nearest", align_corners=True)
        return out.reshape(-1).to(torch.uint8)

    def sample_hu(self, p_ct: torch.Tensor, params: VariationParams, labels: torch.Tensor | None = None):
        """(N,) float32 HU after the virtual patient's intensity changes (trilinear; air outside)."""
        hu = F.grid_sample(self.hu + 1000.0, self._grid(p_ct), align_corners=True).reshape(-1) - 1000.0
        if labels is None:
            labels = self.sample_labels(p_ct)
        bone = labels > 0
        if self.contrast:
            # contrast agent out: enhanced vessels/organs become blood-like
            hu = torch.where(~bone & (hu > 150), torch.full_like(hu, 45.0), hu)
        else:
            # no contrast agent: what is dense and unlabelled is bone outside the catalog (arm shafts,
            # calcified cartilage); it stays bone, with the same density change as the labelled bones
            bone = bone | (hu > 150)
        soft = ~bone
        lung = soft & (hu < -400)
        tissue = soft & (hu >= -400)
        hu = torch.where(lung, (hu + 1000) * params.lung - 1000, hu)
        hu = torch.where(tissue, (hu + 1000) * params.soft_tissue - 1000, hu)
        hu = torch.where(bone, (hu + 1000) * params.bone_density - 1000, hu)
        return hu.clamp(-1000, 3000)
