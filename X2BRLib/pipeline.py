"""The one entry point: ``reconstruct(radiograph, options) -> Reconstruction``.

The CLI (``x2br reconstruct``), the Slicer module (through that CLI, out of
process) and the tests all call this module; none holds algorithm code.

Frames: the reconstruction lives in LPS mm on ``geometry.box_grid(voxel_mm)``
of the network geometry (isocentre at the origin, source behind the patient
for PA), so meshes, label volume and geometry agree without conversion.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, anatomy
from .devices import resolve_device
from .errors import InputError
from .geometry import ProjectionGeometry
from .io.radiograph import Radiograph, read_radiograph, to_network_input
from .shipped import resource

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = resource("Models", "x2b")
ONE_VIEW_WEIGHTS = DEFAULT_WEIGHTS  # X2B v4: one patient, one view
# with a lateral film and no --weights: the shipped two-view model (its card: trained on five patients, one of
# them under CC BY-NC 4.0; the one-film default stays the model whose data carry no non-commercial term).
# X2B v7 (four patients without that term) was measured and not shipped: too much bone on real films
# (docs/training/x2b_v7_people/MODEL_CARD_v7.md).
DEFAULT_TWO_VIEW_WEIGHTS = resource("Models", "x2b_v6")

# X2BR (--refine) detects through the detector's test-time passes by default (docs/DECISIONS.md,
# "Test-time passes in X2BR"; bench/results/gallery_recall_v3_tta_polarity_cpu.txt, gallery_pieces_tta_cpu.txt)
TEST_TIME = True

# MISE settings per quality: start fine enough that ribs (8-12 mm) are not lost.
QUALITY = {
    "fast": {"start_voxel_mm": 6.0, "voxel_mm": 3.0},
    "default": {"start_voxel_mm": 4.0, "voxel_mm": 2.0},
    "high": {"start_voxel_mm": 4.0, "voxel_mm": 1.0},
}


@dataclass
class ReconstructOptions:
    quality: str = "default"
    device: str = "auto"        # auto | cpu | cuda | cuda:N
    weights: str | None = None  # folder / .pt / .json; the shipped model when None
    batch_points: int = 65536
    threshold: float = 0.5
    refine: bool = False        # X2BR: detection + template + geodesic CPD after X2B
    test_time: bool = TEST_TIME  # X2BR's detection through the detector's test-time passes (detect/test_time.py);
    #                             the film check, polarity and scale keep the plain pass
    detector_weights: str | None = None  # the shipped detector when None
    template: str | None = None          # skeleton template .npz; the shipped one when None
    pixel_spacing_mm: float | tuple | None = None  # the user's detector spacing: wins over file and estimate
    force: bool = False         # reconstruct even what the film check refuses (X2BRLib.filmcheck)
    check_films: bool = True    # load the detector up front for the film check and the scale estimate;
    #                             False for films of known geometry only (evaluate's reconstruct_image)
    lateral: str | Path | Radiograph | None = None  # the lateral film of the study (X2BRLib.pair); needs
    #                                                 two-view weights
    lateral_pixel_spacing_mm: float | tuple | None = None  # the user's for the lateral (else file, else the PA's)
    lateral_view: str | None = None  # 'LL' | 'RL': the user's; else from the file, else LL
    lateral_offset: str | float = "auto"  # the lateral's height: auto (the bones' estimate) | none | mm (pair.py)

    def __post_init__(self):
        if self.quality not in QUALITY:
            raise InputError(f"quality must be one of {', '.join(QUALITY)}, got {self.quality!r}")
        from .scale import spacing_pair

        if self.pixel_spacing_mm is not None:
            self.pixel_spacing_mm = spacing_pair(self.pixel_spacing_mm)
        if self.lateral_pixel_spacing_mm is not None:
            self.lateral_pixel_spacing_mm = spacing_pair(self.lateral_pixel_spacing_mm)
        if self.lateral_view is not None:
            from .geometry import LATERAL_VIEWS

            if str(self.lateral_view).upper() not in LATERAL_VIEWS:
                raise InputError(f"lateral_view must be LL or RL, got {self.lateral_view!r}")
            self.lateral_view = str(self.lateral_view).upper()
        from .pair import lateral_offset_arg

        self.lateral_offset = lateral_offset_arg(self.lateral_offset)
        if self.lateral is None and (self.lateral_pixel_spacing_mm is not None or self.lateral_view is not None):
            raise InputError("--lateral-pixel-spacing and --lateral-view need --lateral LAT_FILM (the lateral film)")


@dataclass
class Reconstruction:
    """labels_xyz: (X, Y, Z) uint8 catalog labels on the grid (origin_lps_mm: centre of
    voxel 0, spacing_mm); geometry: the network geometry; image: the film the network saw."""

    labels_xyz: np.ndarray
    origin_lps_mm: np.ndarray
    spacing_mm: np.ndarray
    geometry: ProjectionGeometry
    image: np.ndarray
    radiograph: Radiograph | None
    timings_s: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    meshes: dict | None = None  # {bone name: (verts, faces)} when refined; else from labels_xyz
    lateral: object | None = None  # X2BRLib.pair.LateralFilm: the lateral film read with the PA film

    def bone_volumes_ml(self) -> dict:
        voxel_ml = float(np.prod(self.spacing_mm)) / 1000.0
        counts = np.bincount(self.labels_xyz.ravel(), minlength=256)
        return {b.name: round(float(counts[b.label]) * voxel_ml, 3) for b in anatomy.BONES if counts[b.label]}

    def report(self) -> dict:
        """Flat-ish JSON report (documented keys in README: 'report.json')."""
        r = self.radiograph
        return {
            "x2br_version": __version__,
            "input": None if r is None else r.path,
            "input_meta": None if r is None else _without_identity(r.meta),
            "warnings": ([] if r is None else list(r.warnings))
            + ([] if self.lateral is None else [f"lateral film: {w}" for w in self.lateral.warnings]),
            "scale": None if r is None else r.meta.get("scale"),
            "film_check": None if r is None else r.meta.get("film_check"),
            "geometry": self.geometry.to_dict(),
            "grid": {"origin_lps_mm": [float(x) for x in self.origin_lps_mm],
                     "spacing_mm": [float(x) for x in self.spacing_mm],
                     "shape_xyz": list(self.labels_xyz.shape), "frame": "LPS"},
            "bones_found": len(self.bone_volumes_ml()),
            "bone_volumes_ml": self.bone_volumes_ml(),
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
            "stats": self.stats,
            "model": self.model,
            "views": [self.geometry.view] + ([self.lateral.geometry.view] if self.lateral is not None else []),
            "lateral": None if self.lateral is None else {
                k: (_without_identity(v) if k == "input_meta" else v) for k, v in self.lateral.record.items()
                if k != "pair"},
            "pair": None if self.lateral is None else self.lateral.record.get("pair"),
        }


def _without_identity(meta: dict) -> dict:
    """A film's meta for report.json: without the patient and study digests (X2BRLib.pair compares them)."""
    from .io.radiograph import IDENTITY_KEYS

    return {k: v for k, v in meta.items() if k not in IDENTITY_KEYS}


class Reconstructor:
    """A loaded X2B model (lifecycle: load once, reconstruct many films)."""

    def __init__(self, options: ReconstructOptions | None = None):
        import torch

        from .x2b.weights import load_model

        self.options = options or ReconstructOptions()
        self.device = resolve_device(self.options.device)
        t0 = time.perf_counter()
        weights = self.options.weights or (DEFAULT_TWO_VIEW_WEIGHTS if self.options.lateral is not None
                                           else DEFAULT_WEIGHTS)
        self.weights_path = weights
        self.model = load_model(weights, self.device)
        if self.options.lateral is not None:
            self.check_two_view_weights()  # before any film is read
        self.record = dict(getattr(self.model, "record", {}))
        self.image_size = tuple(self.record.get("image_size", (256, 256)))
        self.load_s = time.perf_counter() - t0
        self.amp = torch.bfloat16 if self.device.type == "cuda" else None
        self.refiner = None
        if self.options.refine:
            from .refine.refiner import RefineOptions, Refiner
            from .refine.template import SkeletonTemplate

            template = SkeletonTemplate.load(self.options.template) if self.options.template else None
            self.refiner = Refiner(RefineOptions(test_time=bool(self.options.test_time)), device=self.device,
                                   template=template, detector_weights=self.options.detector_weights)
            self.refiner.detector  # load now: missing weights fail before any film is read
        if self.options.check_films:
            self.detector  # the film check and the scale need it on every film read from a file
        self.load_s = time.perf_counter() - t0

    @property
    def detector(self):
        """The bone detector (the refiner's when refining): film check and scale estimate."""
        if self.refiner is not None:
            return self.refiner.detector
        if getattr(self, "_detector", None) is None:
            from .detect.detector import Detector

            self._detector = Detector(self.options.detector_weights, device=str(self.device))
        return self._detector

    def check_and_scale(self, radiograph: Radiograph, with_detections: bool = False):
        """Refuse what is not a chest film (unless options.force) and choose the pixel spacing
        (``X2BRLib.scale``: user > file (if plausible) > estimate > default). Returns the
        radiograph with that spacing; its meta holds 'film_check' and 'scale', its warnings
        what was assumed (also issued as :class:`RadiographWarning`). with_detections: return
        (radiograph, the detector's boxes on its network image) instead."""
        import warnings as _warnings

        from . import filmcheck
        from .io.radiograph import RadiographWarning

        before = len(radiograph.warnings)
        radiograph, dets = filmcheck.check_and_scale(radiograph, self.detector, self.options.pixel_spacing_mm,
                                                     self.options.force)
        for message in radiograph.warnings[before:]:
            _warnings.warn(f"{radiograph.path}: {message}" if radiograph.path else message,
                           RadiographWarning, stacklevel=3)
        return (radiograph, dets) if with_detections else radiograph

    def check_two_view_weights(self) -> None:
        """InputError unless the loaded X2B weights read a PA and a lateral film (config views == 2)."""
        if int(getattr(self.model, "config", {}).get("views", 1)) != 2:
            raise InputError("these weights read one film; a lateral film needs two-view weights: train them "
                             f"with `x2br train --views 2` on a dataset built with --lateral, or use the "
                             f"shipped two-view model ({DEFAULT_TWO_VIEW_WEIGHTS})", self.weights_path)

    def model_info(self) -> dict:
        from .detect.test_time import passes

        keys = ("name", "version", "encoder", "sha256", "code_commit", "image_size")
        info = {k: self.record[k] for k in keys if k in self.record}
        info["weights"] = str(self.weights_path)
        info["views"] = int(getattr(self.model, "config", {}).get("views", 1))
        if self.refiner is not None:  # test_time: the passes X2BR's detection ran (the film check's: plain)
            info["detector"] = {**self.refiner.detector.info, "test_time": list(
                passes(self.refiner.options.test_time))}
        return info

    def reconstruct_image(self, image: np.ndarray, geometry: ProjectionGeometry,
                          radiograph: Radiograph | None = None, voxel_mm: float | None = None,
                          progress=None, lateral: np.ndarray | None = None,
                          lateral_geometry: ProjectionGeometry | None = None) -> Reconstruction:
        """Reconstruct from a film already in network form (image size == geometry.size_px).

        voxel_mm: final grid spacing, overriding the quality's (evaluation on another GT grid);
        MISE then starts at twice that, at least 4 mm.
        progress: optional ``callback(fraction in [0, 1] of MISE, message)``, called after
        every batch of network queries (see :func:`X2BRLib.x2b.mise.extract_labels`).
        lateral, lateral_geometry: the lateral film of the same study, in network form too
        (size == lateral_geometry.size_px), and its camera (same isocentre and box as
        ``geometry``); needs two-view weights (InputError otherwise). Both films are encoded once.
        """
        from .x2b.mise import extract_labels
        from .x2b.model import make_decode_fn

        if lateral is not None:
            self.check_two_view_weights()
        if (lateral is None) != (lateral_geometry is None):
            raise InputError("a lateral film needs its geometry (and a lateral geometry its film)")
        if lateral is not None and tuple(np.shape(lateral)[::-1]) != tuple(lateral_geometry.size_px):
            raise InputError(f"the lateral film is {np.shape(lateral)[::-1]} px but its geometry says "
                             f"{tuple(lateral_geometry.size_px)}: give it in network form")
        q = dict(QUALITY[self.options.quality])
        if voxel_mm is not None:
            q = {"voxel_mm": float(voxel_mm), "start_voxel_mm": max(4.0, 2.0 * float(voxel_mm))}
        t0 = time.perf_counter()
        decode = make_decode_fn(self.model, image, geometry, self.device, self.amp, lateral=lateral,
                                lateral_geometry=lateral_geometry)
        t1 = time.perf_counter()
        labels, stats = extract_labels(decode, geometry, voxel_mm_final=q["voxel_mm"],
                                       start_voxel_mm=q["start_voxel_mm"], batch_points=self.options.batch_points,
                                       threshold=self.options.threshold, progress=progress)
        t2 = time.perf_counter()
        shape, origin, spacing = geometry.box_grid(q["voxel_mm"])
        timings = {"encode": t1 - t0, "mise_total": t2 - t1}
        timings.update({f"mise_{k}": v for k, v in stats.items() if k.endswith("_s") and isinstance(v, float)})
        stats = {k: v for k, v in stats.items() if not k.endswith("_s")}
        if lateral is not None:
            stats["views"] = [geometry.view, lateral_geometry.view]
        return Reconstruction(labels, origin, spacing, geometry, image, radiograph, timings, stats,
                              self.model_info())

    def reconstruct(self, radiograph: Radiograph | str | Path, progress=None) -> Reconstruction:
        """progress: optional ``callback(fraction in [0, 1], message)`` called between stages.
        With ``options.lateral``: the pair (X2BRLib.pair: read, checked, scaled, placed at this
        film's isocentre) and the two-view network; every refusal comes before any output."""
        from . import pair

        report = progress or (lambda fraction, message: None)
        t0 = time.perf_counter()
        if not isinstance(radiograph, Radiograph):
            radiograph = read_radiograph(radiograph, default_spacing_mm=None)
        pair.check_main_film(radiograph)
        t_read = time.perf_counter()
        radiograph, dets = self.check_and_scale(radiograph, with_detections=True)
        report(0.08, "scale: " + radiograph.meta["scale"]["status"])
        image, geom = to_network_input(radiograph, self.image_size)
        lateral, extra = None, {}
        if self.options.lateral is not None:
            lateral = pair.prepare_lateral(radiograph, dets, self.options.lateral, self.detector, self.image_size,
                                           view=self.options.lateral_view,
                                           pixel_spacing_mm=self.options.lateral_pixel_spacing_mm,
                                           force=self.options.force, offset=self.options.lateral_offset)
            extra = {"lateral": lateral.image, "lateral_geometry": lateral.geometry}
            report(0.09, f"lateral film read ({lateral.geometry.view}): " + lateral.record["spacing"]["from"]
                   + "; " + lateral.record["pair"]["placement"]["text"])
        t1 = time.perf_counter()
        report(0.1, "film read and normalised; extracting the bone surfaces (MISE)")
        mise_end = 0.55 if self.refiner is not None else 0.85
        rec = self.reconstruct_image(image, geom, radiograph, progress=lambda f, m: report(
            0.1 + (mise_end - 0.1) * f, m), **extra)
        rec.lateral = lateral
        if self.refiner is not None:
            report(0.55, "X2B bones extracted; refining (detection, template, CPD)")
            rec = self.refiner.refine(rec, progress=report)
        report(0.85, "bones extracted; writing outputs")
        rec.timings_s = {"read_and_normalise": t_read - t0, "check_and_scale": t1 - t_read, **rec.timings_s}
        return rec


def reconstruct(radiograph, options: ReconstructOptions | None = None) -> Reconstruction:
    """Read (if a path), normalise and reconstruct one radiograph with the shipped X2B model."""
    return Reconstructor(options).reconstruct(radiograph)


def write_outputs(rec: Reconstruction, outdir, overwrite: bool = False, meshes: bool = True) -> dict:
    """OUTDIR/bones.seg.nrrd, meshes/<bone>.stl (LPS mm), preview.png, report.json.

    Refuses to replace existing files unless overwrite; every file is written to a
    temporary name and renamed. With overwrite, the bone meshes of an earlier run that
    this one did not write (or all of them, with meshes=False) are removed, so meshes/
    always matches bones.seg.nrrd. Returns the paths and the writing time.
    """
    from .io import outputs

    out = Path(outdir)
    targets = [out / "bones.seg.nrrd", out / "preview.png", out / "report.json"]
    if not overwrite:
        clash = [str(p) for p in targets if p.exists()]
        if (out / "meshes").exists() and any((out / "meshes").iterdir()):
            clash.append(str(out / "meshes"))
        if clash:
            raise InputError(f"output exists: {', '.join(clash)}; pass --overwrite to replace", out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = {"segmentation": str(outputs.write_segmentation_nrrd(targets[0], rec.labels_xyz, rec.origin_lps_mm,
                                                                  rec.spacing_mm, overwrite=True))}
    mesh_paths = []
    if meshes:
        (out / "meshes").mkdir(exist_ok=True)
        meshes_by_bone = rec.meshes if rec.meshes is not None else outputs.labels_to_meshes(
            rec.labels_xyz, rec.origin_lps_mm, rec.spacing_mm)
        for name, (verts, faces) in meshes_by_bone.items():
            mesh_paths.append(str(outputs.write_stl(out / "meshes" / f"{name}.stl", verts, faces, overwrite=True)))
        paths["meshes"] = mesh_paths
    if overwrite:
        outputs.remove_stale_meshes(out / "meshes", keep=mesh_paths)
    t1 = time.perf_counter()
    from .io.preview_text import preview_title

    paths["preview"] = str(outputs.write_preview_png(targets[1], rec.image, rec.geometry, rec.labels_xyz,
                                                     rec.origin_lps_mm, rec.spacing_mm, overwrite=True,
                                                     title=preview_title(rec.report()),
                                                     lateral=None if rec.lateral is None else (
                                                         rec.lateral.image, rec.lateral.geometry)))
    t2 = time.perf_counter()
    rec.timings_s.update({"write_segmentation_and_meshes": t1 - t0, "write_preview": t2 - t1})
    report = rec.report()
    report["outputs"] = {k: v for k, v in paths.items() if k != "meshes"}
    report["outputs"]["meshes"] = len(paths.get("meshes", []))
    paths["report"] = str(outputs.write_report_json(targets[2], report, overwrite=True))
    return paths


__all__ = ["ReconstructOptions", "Reconstruction", "Reconstructor", "reconstruct", "write_outputs"]
