"""X2BR refinement: detections + skeleton template + X2B surfaces -> anatomically
consistent bones.

``Refiner.refine(rec)`` (rec: an X2B :class:`~X2BRLib.pipeline.Reconstruction`):

1. detect the bones on the film the network saw (:mod:`X2BRLib.detect`), unless
   detections are given; with ``RefineOptions.test_time`` through the detector's test-time
   passes (:mod:`X2BRLib.detect.test_time`), recorded under ``stats['refine']['test_time']``;
2. place the reference template bone by bone (:func:`X2BRLib.refine.fit.fit_template`:
   boxes give position and size in the film plane, X2B gives depth); with a pair's lateral
   film, the detector's confident boxes on it move each bone front to back
   (:func:`X2BRLib.refine.lateral_fit.lateral_ap_shifts`);
3. deform the placed template (source: it keeps its mesh topology) onto the X2B bone
   surfaces (target: marching-cubes vertices of each X2B bone) with label-aware
   geodesic CPD (:func:`X2BRLib.refine.cpd.deformable_cpd`: template rib n is pulled only
   toward X2B rib n; GBCPD++: ``downsample`` points registered, the displacement
   interpolated to every vertex through the geodesic kernel);
4. voxelise the deformed meshes onto the reconstruction grid and keep each bone's largest
   26-connected piece (:mod:`X2BRLib.refine.pieces`).

A bone that was neither detected nor reconstructed by X2B is left out (listed under
``stats['refine']['bones_left_out']``): the template never invents a bone the film
gave no evidence of.

The result is a Reconstruction with the same grid (so the same writers, metrics and
Slicer loading apply) whose ``meshes`` are the deformed template surfaces. Guaranteed for any
input: every mesh is one closed, consistently oriented piece (the template's topology, checked
when the refiner loads it) and every bone of ``labels_xyz`` is one 26-connected piece (voxels
outside a bone's largest piece go to the background; counts under
``stats['refine']['voxels_outside_largest_piece']``). ``template_only`` skips X2B (depth from
the nominal anatomy) and CPD.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from scipy import ndimage

from .. import anatomy
from ..meshing import surface_mesh
from .lateral_fit import MATCH_EXTENT as LATERAL_MATCH_EXTENT
from .lateral_fit import MAX_SHIFT_MM as LATERAL_MAX_SHIFT_MM, MIN_CONFIDENCE as LATERAL_MIN_CONFIDENCE
from .lateral_fit import lateral_ap_shifts
from .pieces import check_template, keep_largest_piece


@dataclass
class RefineOptions:
    """Defaults chosen on 6 validation-split virtual patients (never the test split) with the
    dataset's boxes: all-bone IoU of X2BR 0.345 (w 0.1, beta 20, lam 2) -> 0.405 (w 0) ->
    0.415 (w 0, beta 40, lam 1); beta 80 or 6000 registered points change it by < 0.005
    (docs/DECISIONS.md, "Refinement settings"; read off the tuning runs' printed output, no
    committed record)."""
    beta_mm: float = 40.0        # geodesic kernel width on the template surface
    lam: float = 1.0             # CPD smoothness (pycpd's alpha)
    w: float = 0.0               # outlier weight (0: every X2B surface point is explained by its bone)
    max_iter: int = 40
    tol: float = 1e-3            # stop when sigma^2 changes less (mm^2)
    downsample: int = 3000       # template points registered (GBCPD++)
    max_target_points: int = 30000
    min_voxels: int = 20         # smallest X2B bone used for fitting / as a target
    detect_conf: float = 0.25
    test_time: bool = False      # the detector's test-time passes (detect/test_time.py); reconstruct's own
    #                              default is ReconstructOptions.test_time (pipeline.py)
    use_x2b: bool = True         # False: template-only (boxes + nominal depth, no CPD)
    register: bool = True        # False: placed template without CPD
    use_lateral: bool = True     # a pair's lateral film: confident boxes on it set each bone's AP place
    lateral_conf: float = LATERAL_MIN_CONFIDENCE  # refine/lateral_fit.py (bench/results/lateral_fit_cpu.txt)
    lateral_max_shift_mm: float = LATERAL_MAX_SHIFT_MM
    lateral_extent: bool = LATERAL_MATCH_EXTENT  # also scale each bone front to back to its lateral box

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, items) -> "RefineOptions":
        """A copy with ``KEY=VALUE`` strings applied (``x2br evaluate --refine-option lam=0.5``);
        InputError naming the item when the key is unknown or the value does not parse."""
        from ..errors import InputError

        types = {f.name: f.type for f in fields(self)}
        changes = {}
        for item in items or ():
            key, sep, text = str(item).partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in types:
                raise InputError(f"refine option {item!r}: expected KEY=VALUE with KEY one of "
                                 + ", ".join(types))
            kind = str(types[key])
            try:
                if kind == "bool":
                    if text.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(text)
                    value = text.strip().lower() in ("true", "1", "yes")
                else:
                    value = {"int": int, "float": float}[kind](text)
            except (ValueError, KeyError):
                raise InputError(f"refine option {item!r}: {text!r} is not a valid {kind}") from None
            changes[key] = value
        return replace(self, **changes)


def label_surfaces(labels_xyz, origin, spacing, min_voxels: int = 20, max_points: int | None = None,
                   seed: int = 0):
    """Marching-cubes vertices of every bone in a label volume: (points (N, 3) LPS mm,
    labels (N,)). At most ``max_points`` in all (random subset, proportional per bone)."""
    origin, spacing = np.asarray(origin, float), np.asarray(spacing, float)
    objs = ndimage.find_objects(labels_xyz, max_label=255)
    pts, labs = [], []
    for b in anatomy.BONES:
        sl = objs[b.label - 1]
        if sl is None:
            continue
        crop = labels_xyz[sl] == b.label
        if np.count_nonzero(crop) < min_voxels:
            continue
        lo = np.array([s.start for s in sl])
        v, _ = surface_mesh(crop, spacing, origin + lo * spacing)
        pts.append(v)
        labs.append(np.full(len(v), b.label, np.int64))
    if not pts:
        return np.zeros((0, 3)), np.zeros(0, np.int64)
    P, L = np.concatenate(pts), np.concatenate(labs)
    if max_points is not None and len(P) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(P), max_points, replace=False))
        P, L = P[keep], L[keep]
    return P, L


class Refiner:
    """Loaded template and detector (lifecycle: load once, refine many films)."""

    def __init__(self, options: RefineOptions | None = None, device="cpu", template=None, detector=None,
                 detector_weights=None):
        from .template import SkeletonTemplate

        self.options = options or RefineOptions()
        self.device = device
        t0 = time.perf_counter()
        self.template = template if template is not None else SkeletonTemplate.load()
        bad = check_template(self.template)
        if bad:
            from ..errors import WeightsError

            raise WeightsError("skeleton template: these bones are not one closed, consistently oriented "
                               f"surface: {', '.join(bad)}; rebuild it with `x2br build-template`")
        self._detector = detector
        self._detector_weights = detector_weights
        self.load_s = time.perf_counter() - t0

    @property
    def detector(self):
        if self._detector is None:
            from ..detect.detector import Detector

            self._detector = Detector(self._detector_weights, device=str(self.device))
        return self._detector

    def detect(self, image, options: RefineOptions | None = None):
        """The bones on one network image at ``detect_conf``, through the test-time passes when
        ``test_time`` (options: this call's, else the refiner's)."""
        opt = options or self.options
        return self.detector.detect(image, conf=opt.detect_conf, test_time=bool(opt.test_time))

    def refine(self, rec, detections=None, progress=None, options: RefineOptions | None = None):
        """Refine an X2B Reconstruction; returns a new Reconstruction (same grid) with
        ``meshes`` set and refinement details under ``stats['refine']``. options: this call's
        settings instead of the refiner's (e.g. template-only in evaluation)."""
        import torch

        from .cpd import deformable_cpd
        from .fit import fit_template
        from .template import voxelise

        opt = options or self.options
        report = progress or (lambda f, m: None)
        timings = {}
        t0 = time.perf_counter()
        test_time = None
        if detections is None:
            detections = self.detect(rec.image, opt)
            test_time = dict(self.detector.last_passes) if opt.test_time else None
        t1 = time.perf_counter()
        timings["detect"] = t1 - t0
        report(0.6, f"{len(detections)} bones detected; placing the template")
        x2b = (rec.labels_xyz, rec.origin_lps_mm, rec.spacing_mm) if opt.use_x2b else None
        V, fits = fit_template(self.template, rec.geometry, detections, x2b, min_voxels=opt.min_voxels)
        lateral_info = None
        if getattr(rec, "lateral", None) is not None and opt.use_lateral:
            imgsz = self.detector.imgsz
            # the pair check ran the detector on the lateral at the detector's size (pair.prepare_lateral):
            # the same boxes when the network image has that size, else detect on the network image
            conf = min(opt.detect_conf, opt.lateral_conf)
            if rec.lateral.image.shape == (imgsz, imgsz):
                lat_dets = [d for d in rec.lateral.detections if d.confidence >= conf]
            else:
                lat_dets = self.detector.detect(rec.lateral.image, conf=conf)
            V, moved = lateral_ap_shifts(V, self.template.vertex_labels, rec.lateral.geometry, lat_dets,
                                         opt.lateral_conf, opt.lateral_max_shift_mm, opt.lateral_extent)
            V = V.astype(np.float32)
            lateral_info = {"n_detections": len(lat_dets), "bones_moved": len(moved),
                            "moves": {anatomy.bone(b).name: m for b, m in moved.items()},
                            "detections": [d.to_dict() if hasattr(d, "to_dict") else dict(d) for d in lat_dets]}
        # a bone neither detected nor reconstructed is left out, not invented from the template
        dropped = [f.name for f in fits if f.used == "global"]
        tmpl = _subset(self.template.copy_with_vertices(V), [f.label for f in fits if f.used != "global"])
        t2 = time.perf_counter()
        timings["fit"] = t2 - t1
        cpd_info = None
        if opt.use_x2b and opt.register:
            X, LX = label_surfaces(rec.labels_xyz, rec.origin_lps_mm, rec.spacing_mm, opt.min_voxels,
                                   opt.max_target_points)
            if len(X) and len(tmpl.vertices):
                report(0.65, f"registering the template onto {len(X)} X2B surface points (geodesic CPD)")
                res = deformable_cpd(tmpl.vertices, X, kernel="geodesic", beta=opt.beta_mm, lam=opt.lam, w=opt.w,
                                     max_iter=opt.max_iter, tol=opt.tol,
                                     source_labels=tmpl.vertex_labels.astype(np.int64),
                                     target_labels=LX, edges=tmpl.edges(), downsample=opt.downsample,
                                     device=torch.device(self.device),
                                     callback=lambda iteration, sigma2, **_: report(
                                         0.65 + 0.15 * min(iteration, opt.max_iter) / opt.max_iter,
                                         f"CPD iteration {iteration} of at most {opt.max_iter}, "
                                         f"sigma^2 {sigma2:.3g} mm^2"))
                tmpl = tmpl.copy_with_vertices(res.points.detach().cpu().numpy())
                cpd_info = {"iterations": res.iterations, "sigma2_mm2": float(res.sigma2),
                            "target_points": int(len(X)), "registered_points": int(len(res.indices))}
        t3 = time.perf_counter()
        timings["register"] = t3 - t2
        report(0.8, "voxelising the refined bones")
        labels, specks = keep_largest_piece(voxelise(tmpl, rec.labels_xyz.shape, rec.origin_lps_mm,
                                                     rec.spacing_mm))
        timings["voxelise"] = time.perf_counter() - t3
        meshes = {anatomy.bone(b).name: tmpl.bone(b) for b in tmpl.labels_present()}
        stats = dict(rec.stats)
        stats["refine"] = {
            "method": "x2br" if (opt.use_x2b and opt.register) else ("template_placed_on_x2b" if opt.use_x2b
                                                                    else "template_only"),
            "options": opt.to_dict(), "n_detections": len(detections), "test_time": test_time,
            "detections": [d.to_dict() if hasattr(d, "to_dict") else dict(d) for d in detections],
            "fits": [f.to_dict() for f in fits], "cpd": cpd_info, "bones_left_out": dropped, "lateral": lateral_info,
            "voxels_outside_largest_piece": specks,
            "template": {k: v for k, v in getattr(self.template, "meta", {}).items()
                         if k in ("name", "version", "sha256", "source", "licence", "n_vertices")},
        }
        all_t = dict(rec.timings_s)
        all_t.update({f"refine_{k}": v for k, v in timings.items()})
        return replace(rec, labels_xyz=labels, timings_s=all_t, stats=stats, meshes=meshes)


def _subset(template, labels):
    """The template restricted to ``labels`` (vertices re-indexed)."""
    from .template import SkeletonTemplate

    keep = np.isin(template.vertex_labels, np.asarray(list(labels), np.int64))
    remap = np.full(len(keep), -1, np.int64)
    remap[keep] = np.arange(int(keep.sum()))
    faces = template.faces[keep[template.faces[:, 0]]]
    return SkeletonTemplate(template.vertices[keep], remap[faces], template.vertex_labels[keep], dict(template.meta))


__all__ = ["RefineOptions", "Refiner", "label_surfaces"]
