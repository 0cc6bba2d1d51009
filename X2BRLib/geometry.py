r"""Projection geometry: the ONE camera model of X2BR.

Every component that maps between 3D and the radiograph uses
:class:`ProjectionGeometry`: the DRR renderer (rays through the CT), the
dataset builder (2D boxes of each bone), the X2B network (projecting query
points onto the image to sample features), MISE (its grid lives in the
reconstruction box) and the Slicer module (placing the radiograph so the bones
overlay it).

Frames and units
----------------
* World frame: patient LPS (x -> patient Left, y -> Posterior, z -> Superior),
  millimetres. This is DICOM's and ITK's frame; Slicer shows RAS and the
  conversion happens once, in the Slicer scene code.
* Image frame: continuous pixel coordinates ``uv_px`` = (column, row); the
  centre of pixel (i, j) is at (i, j). Columns increase toward the patient's
  left and rows toward the feet: the conventional display of a chest film
  ("as if facing the patient"), for PA and AP alike.
* Detector plane: its centre ``detector_center_lps_mm``; unit vectors
  ``u_dir`` (columns) and ``v_dir`` (rows).

A PA film has the source posterior of the patient and the detector anterior;
an AP film the reverse. A lateral film (``LL``: the patient's left side against the
detector, beam right -> left; ``RL`` the reverse) is displayed as if seen from the
detector's side, rows toward the feet: on an LL film columns increase toward the
patient's back (the patient faces the viewer's left, DICOM PatientOrientation
``P\F``), on an RL film toward the front (``A\F``). The isocentre is the point the reconstruction box is
centred on (the middle of the patient's chest); its magnification is
``sdd / sod``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace

import numpy as np

# Reconstruction box (LR, AP, SI) in mm, centred on the isocentre, axis-aligned
# with LPS. Big enough for an adult thorax with shoulders at 1.15x scale.
DEFAULT_BOX_SIZE_MM = (384.0, 288.0, 384.0)

# Default geometry of a chest film: 180 cm source-to-image distance (PA),
# mid-chest 12 cm in front of the detector, a 43 x 43 cm detector. A lateral film:
# 180 cm, mid-chest about half a chest width (17 cm) from the detector.
DEFAULT_SDD_MM = {"PA": 1800.0, "AP": 1000.0, "LL": 1800.0, "RL": 1800.0}
DEFAULT_OBJECT_TO_DETECTOR_MM = 120.0
DEFAULT_LATERAL_OBJECT_TO_DETECTOR_MM = 170.0
DEFAULT_FIELD_MM = 430.0
FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEWS = ("LL", "RL")
VIEWS = FRONTAL_VIEWS + LATERAL_VIEWS
# beam direction (source -> detector, LPS) and column direction of each view
_BEAM = {"PA": (0.0, -1.0, 0.0), "AP": (0.0, 1.0, 0.0), "LL": (1.0, 0.0, 0.0), "RL": (-1.0, 0.0, 0.0)}
_COLUMNS = {"PA": (1.0, 0.0, 0.0), "AP": (1.0, 0.0, 0.0), "LL": (0.0, 1.0, 0.0), "RL": (0.0, -1.0, 0.0)}


@dataclass(frozen=True)
class ProjectionGeometry:
    """Cone-beam projection of a planar radiograph.

    source_lps_mm: (3,) float, the focal spot.
    detector_center_lps_mm: (3,) float, the centre of the pixel grid.
    u_dir, v_dir: (3,) unit vectors of increasing column and row, orthogonal.
    spacing_mm: (su, sv) detector pixel spacing (column, row) in mm.
    size_px: (width, height) in pixels.
    isocenter_lps_mm: (3,) float, centre of the reconstruction box.
    view: ``"PA"``, ``"AP"``, ``"LL"`` or ``"RL"`` (metadata; the vectors carry the geometry).
    box_size_mm: (3,) reconstruction box extent (LR, AP, SI) in mm.
    """

    source_lps_mm: tuple
    detector_center_lps_mm: tuple
    u_dir: tuple
    v_dir: tuple
    spacing_mm: tuple
    size_px: tuple
    isocenter_lps_mm: tuple = (0.0, 0.0, 0.0)
    view: str = "PA"
    box_size_mm: tuple = field(default=DEFAULT_BOX_SIZE_MM)

    def __post_init__(self):
        for name in ("source_lps_mm", "detector_center_lps_mm", "u_dir", "v_dir",
                     "isocenter_lps_mm", "box_size_mm"):
            v = tuple(float(x) for x in np.asarray(getattr(self, name), float).reshape(-1))
            if len(v) != 3 or not all(math.isfinite(x) for x in v):
                raise ValueError(f"ProjectionGeometry.{name} must be 3 finite numbers, got {v}")
            object.__setattr__(self, name, v)
        sp = tuple(float(x) for x in np.asarray(self.spacing_mm, float).reshape(-1))
        sz = tuple(int(x) for x in np.asarray(self.size_px).reshape(-1))
        if len(sp) != 2 or min(sp) <= 0 or not all(math.isfinite(x) for x in sp):
            raise ValueError(f"pixel spacing must be two positive numbers, got {sp}")
        if len(sz) != 2 or min(sz) < 1:
            raise ValueError(f"detector size must be two positive integers, got {sz}")
        object.__setattr__(self, "spacing_mm", sp)
        object.__setattr__(self, "size_px", sz)
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {self.view!r}")
        u, v = np.array(self.u_dir), np.array(self.v_dir)
        if abs(np.linalg.norm(u) - 1) > 1e-6 or abs(np.linalg.norm(v) - 1) > 1e-6 or abs(u @ v) > 1e-6:
            raise ValueError("u_dir and v_dir must be orthonormal")
        if abs(self.normal @ (self.detector - self.source)) < 1e-6:
            raise ValueError("the source lies in the detector plane")

    # ------------------------------------------------------------------ factories
    @classmethod
    def chest(cls, view: str = "PA", size_px=(256, 256), field_mm: float = DEFAULT_FIELD_MM,
              sdd_mm: float | None = None, object_to_detector_mm: float | None = None,
              isocenter_lps_mm=(0.0, 0.0, 0.0), spacing_mm=None,
              box_size_mm=DEFAULT_BOX_SIZE_MM) -> "ProjectionGeometry":
        """A chest film: principal ray through the isocentre, along the antero-posterior axis
        (PA, AP) or the left-right axis (LL, RL).

        size_px: (width, height). field_mm: detector width covered when spacing_mm is None
        (square pixels). sdd_mm: source-to-detector distance (default 1800; 1000 AP).
        object_to_detector_mm: isocentre-to-detector distance (default 120 frontal, 170 lateral).
        """
        view = view.upper()
        if view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
        if object_to_detector_mm is None:
            object_to_detector_mm = (DEFAULT_LATERAL_OBJECT_TO_DETECTOR_MM if view in LATERAL_VIEWS
                                     else DEFAULT_OBJECT_TO_DETECTOR_MM)
        sdd = float(sdd_mm if sdd_mm is not None else DEFAULT_SDD_MM[view])
        if not 0 < object_to_detector_mm < sdd:
            raise ValueError("object_to_detector_mm must lie between 0 and the SDD")
        w, h = int(size_px[0]), int(size_px[1])
        if w < 1 or h < 1:
            raise ValueError(f"detector size must be two positive integers, got {(w, h)}")
        if spacing_mm is None:
            spacing_mm = (field_mm / w, field_mm / w)
        iso = np.asarray(isocenter_lps_mm, float)
        # PA: beam travels posterior -> anterior (-y), source at +y (posterior); LL: right -> left (+x)
        beam = np.array(_BEAM[view])
        source = iso - beam * (sdd - object_to_detector_mm)
        detector = iso + beam * object_to_detector_mm
        return cls(source, detector, _COLUMNS[view], (0.0, 0.0, -1.0), spacing_mm, (w, h),
                   iso, view, box_size_mm)

    # ------------------------------------------------------------------ basic quantities
    @property
    def source(self) -> np.ndarray:
        return np.array(self.source_lps_mm)

    @property
    def detector(self) -> np.ndarray:
        return np.array(self.detector_center_lps_mm)

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the detector plane pointing away from the source."""
        n = np.cross(np.array(self.u_dir), np.array(self.v_dir))
        if n @ (np.array(self.detector_center_lps_mm) - np.array(self.source_lps_mm)) < 0:
            n = -n
        return n

    @property
    def sdd_mm(self) -> float:
        """Source-to-detector distance (perpendicular)."""
        return float(self.normal @ (self.detector - self.source))

    @property
    def sod_mm(self) -> float:
        """Source-to-isocentre distance along the detector normal."""
        return float(self.normal @ (np.array(self.isocenter_lps_mm) - self.source))

    @property
    def magnification(self) -> float:
        return self.sdd_mm / self.sod_mm

    @property
    def is_lateral(self) -> bool:
        return self.view in LATERAL_VIEWS

    @property
    def width(self) -> int:
        return self.size_px[0]

    @property
    def height(self) -> int:
        return self.size_px[1]

    # ------------------------------------------------------------------ projection
    def projection_matrix(self) -> np.ndarray:
        """(3, 4) float64 P with [u*w, v*w, w]^T = P @ [x, y, z, 1]^T (x in LPS mm, u, v in px).

        w is the depth of the point along the detector normal measured from the
        source, in mm. Batched projection of many geometries stacks these.
        """
        s, d, n = self.source, self.detector, self.normal
        u, v = np.array(self.u_dir), np.array(self.v_dir)
        su, sv = self.spacing_mm
        cu, cv = (self.width - 1) / 2.0, (self.height - 1) / 2.0
        f = self.sdd_mm
        # principal point offset: detector centre may not be the foot of the source
        foot = s + f * n
        du, dv = (foot - d) @ u / su + cu, (foot - d) @ v / sv + cv
        K = np.array([[f / su, 0, du], [0, f / sv, dv], [0, 0, 1.0]])
        R = np.stack([u, v, n])  # world -> camera axes
        t = -R @ s
        return K @ np.concatenate([R, t[:, None]], axis=1)

    def project(self, points_lps_mm) -> tuple[np.ndarray, np.ndarray]:
        """Project (N, 3) LPS mm points: returns (uv_px (N, 2), depth_mm (N,))."""
        return project_points(self.projection_matrix(), np.asarray(points_lps_mm, float))

    def pixel_to_lps(self, uv_px) -> np.ndarray:
        """(N, 2) pixel coordinates -> (N, 3) LPS mm points on the detector plane."""
        uv = np.asarray(uv_px, float).reshape(-1, 2)
        cu, cv = (self.width - 1) / 2.0, (self.height - 1) / 2.0
        su, sv = self.spacing_mm
        return (self.detector[None] + (uv[:, :1] - cu) * su * np.array(self.u_dir)[None]
                + (uv[:, 1:] - cv) * sv * np.array(self.v_dir)[None])

    def rays(self, uv_px=None):
        """Rays from the source to detector pixels.

        Returns (origins (N, 3), directions (N, 3) unit, lengths (N,) mm) in LPS mm;
        all pixel centres in row-major order when uv_px is None.
        """
        if uv_px is None:
            jj, ii = np.meshgrid(np.arange(self.height), np.arange(self.width), indexing="ij")
            uv_px = np.stack([ii.ravel(), jj.ravel()], 1)
        target = self.pixel_to_lps(uv_px)
        vec = target - self.source[None]
        length = np.linalg.norm(vec, axis=1)
        return np.repeat(self.source[None], len(vec), 0), vec / length[:, None], length

    # ------------------------------------------------------------------ reconstruction box
    def box_bounds_lps_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo (3,), hi (3,)) corners of the reconstruction box in LPS mm."""
        c, half = np.array(self.isocenter_lps_mm), np.array(self.box_size_mm) / 2
        return c - half, c + half

    def box_grid(self, voxel_mm: float):
        """Voxel-centre grid filling the reconstruction box.

        Returns (shape (nx, ny, nz), origin_lps_mm (3,) of voxel (0,0,0), spacing (3,)).
        The grid is axis-aligned with LPS; index order is (x, y, z).
        """
        lo, hi = self.box_bounds_lps_mm()
        shape = tuple(int(round(s / voxel_mm)) for s in self.box_size_mm)
        spacing = (hi - lo) / np.array(shape)
        return shape, lo + spacing / 2, spacing

    def to_unit_box(self, points_lps_mm) -> np.ndarray:
        """LPS mm -> the box's normalised coordinates, each axis in [-0.5, 0.5]
        scaled by the box's largest side (Occupancy Networks' unit cube)."""
        c = np.array(self.isocenter_lps_mm)
        return (np.asarray(points_lps_mm, float) - c) / max(self.box_size_mm)

    # ------------------------------------------------------------------ variants and I/O
    def resized(self, size_px) -> "ProjectionGeometry":
        """Same detector extent sampled with another pixel count (width, height)."""
        w, h = int(size_px[0]), int(size_px[1])
        su = self.spacing_mm[0] * self.width / w
        sv = self.spacing_mm[1] * self.height / h
        return replace(self, spacing_mm=(su, sv), size_px=(w, h))

    def with_isocenter(self, isocenter_lps_mm) -> "ProjectionGeometry":
        """Translate source, detector and box together (the patient moves, not the camera frame)."""
        shift = np.asarray(isocenter_lps_mm, float) - np.array(self.isocenter_lps_mm)
        return replace(self, source_lps_mm=self.source + shift,
                       detector_center_lps_mm=self.detector + shift,
                       isocenter_lps_mm=tuple(np.asarray(isocenter_lps_mm, float)))

    def to_dict(self) -> dict:
        return {
            "source_lps_mm": list(self.source_lps_mm),
            "detector_center_lps_mm": list(self.detector_center_lps_mm),
            "u_dir": list(self.u_dir), "v_dir": list(self.v_dir),
            "spacing_mm": list(self.spacing_mm), "size_px": list(self.size_px),
            "isocenter_lps_mm": list(self.isocenter_lps_mm), "view": self.view,
            "box_size_mm": list(self.box_size_mm),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ProjectionGeometry":
        return cls(**{k: d[k] for k in (
            "source_lps_mm", "detector_center_lps_mm", "u_dir", "v_dir", "spacing_mm",
            "size_px", "isocenter_lps_mm", "view", "box_size_mm") if k in d})

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "ProjectionGeometry":
        return cls.from_dict(json.loads(text))


def project_points(P, points):
    """Project points with one or a batch of projection matrices.

    P: (3, 4) or (B, 3, 4); points: (N, 3) or (B, N, 3), LPS mm. numpy or torch.
    Returns (uv_px (..., N, 2), depth_mm (..., N)). Works unchanged for numpy
    arrays and torch tensors (autograd and CUDA included).
    """
    R, t = P[..., :3], P[..., 3]
    if hasattr(points, "matmul") and not isinstance(points, np.ndarray):  # torch
        h = points @ R.transpose(-1, -2) + t.unsqueeze(-2)
    else:
        h = points @ np.swapaxes(R, -1, -2) + t[..., None, :]
    depth = h[..., 2]
    return h[..., :2] / depth[..., None], depth


def uv_to_grid_sample(uv_px, size_px):
    """Pixel coordinates -> torch ``grid_sample`` coordinates in [-1, 1]
    (align_corners=False). uv_px: (..., 2); size_px: (width, height)."""
    w, h = size_px
    scale = uv_px.new_tensor([2.0 / w, 2.0 / h]) if hasattr(uv_px, "new_tensor") else np.array([2.0 / w, 2.0 / h])
    return (uv_px + 0.5) * scale - 1.0
