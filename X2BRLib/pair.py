"""A user's pair: a frontal (PA or AP) film and a lateral film of one study (issue 15).

``prepare_lateral`` turns the lateral input (a path or a :class:`Radiograph`) into what the
network reads beside the frontal film: the film in network form and its
:class:`~X2BRLib.geometry.ProjectionGeometry` (``ProjectionGeometry.chest(LL | RL)`` with the
frontal film's isocentre and box: the central rays of both exposures are assumed to meet at one
isocentre at the same height; the network is trained to tolerate what that gets wrong), then
placed at the height the bones found on both films give (:func:`lateral_placement`,
``--lateral-offset auto``, the default; ``none`` keeps the same height, a number of mm is the user's).

What it reads from the lateral, in order:

* view: the user's ``--lateral-view`` (LL / RL), else DICOM ViewPosition (LL, RL; LATERAL / LAT
  take the side from PatientOrientation ``P\\F`` = LL, ``A\\F`` = RL), else LL; a film whose
  columns run the other way than its view is displayed is flipped (``X2BRLib.io.radiograph``);
  a film without tags is checked from the image (:func:`mirror_evidence`): flipped (and said) when
  the detector's vertebrae and sternum show it stored mirrored and no view was given; else one warning line when
  its back looks to be on the wrong side;
* pixel spacing: the user's ``--lateral-pixel-spacing``, else the file's, else the frontal film's
  chosen spacing (the same detector is assumed: a warning says so);
* distances: DistanceSourceToDetector / DistanceSourceToPatient when present, else the lateral
  defaults of :mod:`X2BRLib.geometry`.

Bad input raises :class:`~X2BRLib.errors.InputError` (one line, nothing written): two frontal films
(the lateral's ViewPosition is PA / AP, or the bone detector sees a frontal film:
:func:`X2BRLib.filmcheck.view_evidence`), films of different patients or studies (PatientID,
StudyInstanceUID), films whose scales disagree (:func:`vertical_scale`: the same bones more than
25 % further apart, top to bottom, on one film than on the other).
"""
from __future__ import annotations

import warnings as _warnings
from dataclasses import dataclass, field, replace

import numpy as np

from . import anatomy
from .errors import InputError
from .geometry import LATERAL_VIEWS, ProjectionGeometry
from .io.radiograph import Radiograph, RadiographWarning, read_radiograph, to_network_input

# chest heights (the same bones' vertical spread) differing by more: refused. The same bones of one patient
# (vertebrae do not change length between views; heights are taken through each film's geometry) differ
# only by the distances' error and the boxes' noise: at most 8.6 % on 15 simulated pairs with a 0.96-1.04
# magnification error (bench/results/pair_offset_cpu.txt), at most 10.9 % on the 5 real pairs that pass the
# other checks (detectors v2 and v3, bench/results/pair_views_cpu.txt, pair_views_v2_cpu.txt). rp_p92's two
# web images most likely differ in pixel size: 21 % with v3 (37 bones), 31 % with v2 (25 bones, some
# boxes tens of mm from v3's); the earlier 25 % refused it only with v2's misplaced boxes.
MAX_SCALE_DISAGREEMENT = 0.15
# bones found on both films to compare scales: detector v1, trained on frontal films, misplaced
# the few it found on real laterals (3 and 4 bones refused 2 of the gallery's 6 real pairs,
# bench/results/pair_views_v1_cpu.txt); 6 or more agreed where found (one pair, 12 bones).
# Detector v2 finds 28-35 on both films of 5 pairs (bench/results/pair_views_cpu.txt).
MIN_COMMON_BONES = 6
MIN_VERTICAL_SPREAD_MM = 30.0   # their spread on the frontal film (mm at the isocentre)
SCALE_CONFIDENCE = 0.25
OUTLIER_FLOOR_MM = 5.0  # vertical_scale keeps bones within this of its first line whatever their spread
# the between-exposure offset (lateral_placement): 'auto' applies the bones' estimate when their fit is
# tight and the offset plausible; measured in bench/bench_pair_offset.py (bench/results/pair_offset_cpu.txt)
LATERAL_OFFSET_MODES = ("auto", "none")
MAX_PLACEMENT_RESIDUAL_MM = 6.0
MAX_AUTO_OFFSET_MM = 40.0
MAX_USER_OFFSET_MM = 100.0
PLACE_MAGNIFICATION = False  # the ratio's error is about the magnification error it would correct
# mirror check from the image alone: rows 16-39 % of the network image (upper chest: spine,
# scapulae and posterior ribs behind, the clear retrosternal space in front), the outer quarters
# of the body; a difference of mean brightness beyond this decides (bench/bench_pair_views.py)
MIRROR_ROWS = (0.16, 0.39)
MIRROR_MIN_CONTRAST = 0.1


@dataclass
class LateralFilm:
    """radiograph: as read, with the spacing used; image (h, w) float32 and geometry: network
    form (``to_network_input``; same isocentre and box as the frontal film); record: report.json's
    "lateral" entry; detections: the detector's boxes on ``image``."""

    radiograph: Radiograph
    image: np.ndarray
    geometry: ProjectionGeometry
    record: dict = field(default_factory=dict)
    detections: list = field(default_factory=list)

    @property
    def warnings(self) -> list:
        return list(self.radiograph.warnings)


def read_lateral(source, view: str | None = None) -> Radiograph:
    """Read the lateral input (a path, or a Radiograph as is) without assuming a spacing.
    view: 'LL' / 'RL' (the user's), else from the file, else LL."""
    if view is not None and str(view).upper() not in LATERAL_VIEWS:
        raise InputError(f"--lateral-view must be LL or RL, got {view!r}")
    if isinstance(source, Radiograph):
        return source
    return read_radiograph(source, default_spacing_mm=None, view=view, default_view="LL")


def check_main_film(radiograph: Radiograph) -> None:
    """The film given as THE film must be frontal: a lateral there is refused."""
    if radiograph.geometry.is_lateral:
        said = radiograph.meta.get("view_position") or radiograph.geometry.view
        raise InputError(f"the film is a lateral film ({radiograph.meta.get('view_source', 'view')} {said}): "
                         "give the PA or AP film as the film and the lateral with --lateral", radiograph.path)


def check_views(frontal: Radiograph, lateral: Radiograph) -> None:
    """Tags only: two frontal films, a lateral as the main film."""
    check_main_film(frontal)
    if not lateral.geometry.is_lateral:
        said = lateral.meta.get("view_position") or lateral.geometry.view
        raise InputError(f"two frontal films: the --lateral film is a frontal film (ViewPosition {said}); "
                         "give the lateral (LL or RL) film of the study", lateral.path)


def check_identity(frontal: Radiograph, lateral: Radiograph) -> dict:
    """Refuse films of different patients or studies when both files say who and which study.
    Returns {"same_patient": bool | None, "same_study": bool | None} (None: not both files say)."""
    out = {}
    for key, word, tag in (("patient_id_sha256", "patients", "PatientID"),
                           ("study_uid_sha256", "studies", "StudyInstanceUID")):
        a, b = frontal.meta.get(key), lateral.meta.get(key)
        same = None if a is None or b is None else a == b
        out["same_" + ("patient" if word == "patients" else "study")] = same
        if same is False:
            raise InputError(f"the two films are of different {word} (their {tag} differ): a PA and a "
                             "lateral film of one examination are needed", lateral.path)
    return out


def mirror_evidence(image: np.ndarray, view: str, detections=()) -> dict:
    """Which side of a lateral film (network form, (h, w) in [0, 1]) is the patient's back, and
    does it agree with ``view`` (LL: back on the right, columns toward the back; RL: on the left)?

    The detector first: confident vertebrae (at least two) and the sternum give the back side
    directly. Else the image: mean brightness of the outer quarters of the body in the upper
    chest (MIRROR_ROWS), the back being the brighter (spine, scapulae, posterior ribs), decided
    only beyond MIRROR_MIN_CONTRAST. Returns {"back_side": 'left' | 'right' | None, "from":
    'detector' | 'image' | None, "contrast", "looks_mirrored": bool}.
    """
    expected = "right" if view == "LL" else "left"
    ok = [d for d in detections if d.confidence >= SCALE_CONFIDENCE]
    spine = [0.5 * (d.box_px[0] + d.box_px[2]) for d in ok if anatomy.bone(d.label).group == "vertebra"]
    sternum = [0.5 * (d.box_px[0] + d.box_px[2]) for d in ok if anatomy.bone(d.label).group == "sternum"]
    if len(spine) >= 2 and sternum:
        side = "right" if np.mean(spine) > np.mean(sternum) else "left"
        return {"back_side": side, "from": "detector", "contrast": None, "looks_mirrored": side != expected}
    img = np.asarray(image, np.float32)
    h, w = img.shape
    band = img[int(MIRROR_ROWS[0] * h):int(MIRROR_ROWS[1] * h)]
    cols = np.nonzero((band > 0.15).mean(0) > 0.6)[0]
    if len(cols) < 0.2 * w:
        return {"back_side": None, "from": None, "contrast": None, "looks_mirrored": False}
    body = band[:, cols.min():cols.max() + 1]
    edge, quarter = max(1, body.shape[1] // 20), max(1, body.shape[1] // 4)
    contrast = float(body[:, -edge - quarter:-edge].mean() - body[:, edge:edge + quarter].mean())  # right - left
    side = None if abs(contrast) < MIRROR_MIN_CONTRAST else ("right" if contrast > 0 else "left")
    return {"back_side": side, "from": None if side is None else "image", "contrast": round(contrast, 4),
            "looks_mirrored": side is not None and side != expected}


def _bone_heights_mm(detections, geometry: ProjectionGeometry) -> dict:
    """{label: height of the box centre in mm below the isocentre, where its ray crosses the plane
    through the isocentre parallel to the detector} (confident boxes only). Through the geometry,
    so a camera placed higher or lower (:func:`place_lateral`) moves every height with it; for a
    film whose principal ray meets the isocentre: (row - centre row) x row spacing / magnification."""
    ok = [d for d in detections if d.confidence >= SCALE_CONFIDENCE]
    if not ok:
        return {}
    uv = np.array([[0.5 * (d.box_px[0] + d.box_px[2]), 0.5 * (d.box_px[1] + d.box_px[3])] for d in ok])
    s, n, iso = geometry.source, geometry.normal, np.array(geometry.isocenter_lps_mm)
    p = geometry.pixel_to_lps(uv)
    t = (n @ (iso - s)) / ((p - s) @ n)
    z = s[2] + t * (p[:, 2] - s[2])
    return {int(d.label): float(iso[2] - zi) for d, zi in zip(ok, z)}


def vertical_scale(frontal_dets, frontal_geometry, lateral_dets, lateral_geometry) -> dict:
    """Do the two films agree in scale and height? The same bones sit at the same heights in both
    views: fit lateral height = ratio x frontal height + offset over the bones found on both (box
    centre heights below the isocentre, mm, through each film's geometry: those of the images the
    detections were made on), least squares, then once more without the bones that disagree
    (residual beyond MAX(3 x 1.4826 x median |residual|, OUTLIER_FLOOR_MM): a box on the wrong bone).

    Returns {"checked": bool, "n_bones" (found on both), "n_fit" (kept), "ratio" (the lateral's
    chest height / the frontal's), "offset_mm" (the lateral's heights minus the frontal's at the
    isocentre: a same-height error or a patient who moved), "residual_mm" (median |residual| of the
    kept bones), "why" (when not checked)}."""
    a = _bone_heights_mm(frontal_dets, frontal_geometry)
    b = _bone_heights_mm(lateral_dets, lateral_geometry)
    common = sorted(set(a) & set(b))
    x = np.array([a[k] for k in common], float)
    y = np.array([b[k] for k in common], float)
    if len(common) < MIN_COMMON_BONES or x.std() * 2 < MIN_VERTICAL_SPREAD_MM:
        return {"checked": False, "n_bones": len(common), "n_fit": 0, "ratio": None, "offset_mm": None,
                "residual_mm": None,
                "why": f"fewer than {MIN_COMMON_BONES} bones found on both films, spread over at least "
                       f"{MIN_VERTICAL_SPREAD_MM:.0f} mm (found on both: {len(common)})"}
    ratio, offset = _line(x, y)
    res = np.abs(y - ratio * x - offset)
    keep = res <= max(3 * 1.4826 * float(np.median(res)), OUTLIER_FLOOR_MM)
    if keep.sum() >= MIN_COMMON_BONES and x[keep].std() * 2 >= MIN_VERTICAL_SPREAD_MM:
        ratio, offset = _line(x[keep], y[keep])
    else:
        keep = np.ones(len(x), bool)
    res = np.abs(y[keep] - ratio * x[keep] - offset)
    return {"checked": True, "n_bones": len(common), "n_fit": int(keep.sum()), "ratio": round(ratio, 4),
            "offset_mm": round(offset, 2), "residual_mm": round(float(np.median(res)), 2), "why": None}


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares y = ratio x + offset."""
    xc = x - x.mean()
    ratio = float(xc @ (y - y.mean()) / (xc @ xc))
    return ratio, float(y.mean() - ratio * x.mean())


def lateral_offset_arg(text) -> str | float:
    """``--lateral-offset``: 'auto', 'none' or a number of mm (the patient sat that much higher, +S,
    for the lateral exposure than for the frontal one)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        word = str(text).strip().lower()
        if word in LATERAL_OFFSET_MODES:
            return word
        try:
            value = float(word.removesuffix("mm"))
        except ValueError:
            raise InputError(f"--lateral-offset takes auto, none or a number of mm, not {text!r}") from None
    if not np.isfinite(value) or abs(value) > MAX_USER_OFFSET_MM:
        raise InputError(f"--lateral-offset {text!r}: a between-exposure offset of at most "
                         f"{MAX_USER_OFFSET_MM:.0f} mm is expected")
    return value


def lateral_placement(scale: dict, mode="auto") -> dict:
    """Where the lateral's camera goes (:func:`place_lateral`), from :func:`vertical_scale`'s fit and
    the user's ``mode`` (:func:`lateral_offset_arg`): 'none' keeps the same-height assumption; a number
    is the user's offset; 'auto' moves the camera by the bones' estimate when the fit was checked (at
    least MIN_COMMON_BONES bones on both films), its median residual is at most
    MAX_PLACEMENT_RESIDUAL_MM and the offset at most MAX_AUTO_OFFSET_MM, else keeps the assumption.

    Returns {"mode", "applied": bool, "source": 'bones' | 'user' | None, "offset_si_mm" (the patient
    sat this much higher, +S, for the lateral than the same-height assumption says),
    "magnification" (true / assumed at the isocentre: 1.0 unless PLACE_MAGNIFICATION), "why" (the
    same-height assumption kept: the reason)}."""
    mode = lateral_offset_arg(mode)
    out = {"mode": mode if isinstance(mode, str) else "mm", "applied": False, "source": None,
           "offset_si_mm": 0.0, "magnification": 1.0, "why": None}
    if mode == "none":
        return {**out, "why": "--lateral-offset none: the same-height assumption"}
    if not isinstance(mode, str):
        return {**out, "applied": mode != 0.0, "source": "user", "offset_si_mm": float(mode)}
    why = None
    if not scale.get("checked"):
        why = scale.get("why") or "the scale fit was not made"
    elif scale["residual_mm"] > MAX_PLACEMENT_RESIDUAL_MM:
        why = (f"the bones found on both films disagree (median residual {scale['residual_mm']:.1f} mm > "
               f"{MAX_PLACEMENT_RESIDUAL_MM:.0f} mm)")
    elif abs(scale["offset_mm"]) > MAX_AUTO_OFFSET_MM:
        why = (f"the bones suggest an offset of {abs(scale['offset_mm']):.0f} mm, more than the "
               f"{MAX_AUTO_OFFSET_MM:.0f} mm a patient moves between exposures (pass --lateral-offset MM if it is real)")
    if why is not None:
        return {**out, "why": why + ": the same-height assumption"}
    m = float(scale["ratio"]) if PLACE_MAGNIFICATION else 1.0
    # the lateral's heights through the assumed camera are m x (true - dz): offset = -m dz
    return {**out, "applied": True, "source": "bones", "offset_si_mm": round(-float(scale["offset_mm"]) / m, 2),
            "magnification": round(m, 4)}


def place_lateral(geometry: ProjectionGeometry, placement: dict) -> ProjectionGeometry:
    """The lateral's geometry moved as ``placement`` (:func:`lateral_placement`) says: the camera the
    film was taken with when the patient sat ``offset_si_mm`` higher than assumed
    (:func:`X2BRLib.dataset.lateral.rendering_geometry`); the same geometry when nothing is applied."""
    from .dataset.lateral import rendering_geometry

    if not placement.get("applied"):
        return geometry
    return rendering_geometry(geometry, placement["offset_si_mm"], placement["magnification"])


def placement_text(placement: dict) -> str:
    """One line for the status and the report: what was applied to the lateral's height."""
    if placement.get("applied"):
        by = "the bones found on both films" if placement["source"] == "bones" else "--lateral-offset"
        scale = (f", magnification x{placement['magnification']:.3f}" if placement["magnification"] != 1.0 else "")
        return f"lateral placed {placement['offset_si_mm']:+.1f} mm (patient higher, +S; from {by}){scale}"
    return f"lateral at the frontal film's height ({placement.get('why') or 'offset 0'})"


def check_scales(scale: dict, frontal: Radiograph, lateral: Radiograph) -> None:
    """Refuse a pair whose chest heights differ by more than MAX_SCALE_DISAGREEMENT."""
    r = scale.get("ratio")
    if not scale.get("checked") or (r > 0 and max(r, 1 / r) <= 1 + MAX_SCALE_DISAGREEMENT):
        return
    taller = "lateral" if r > 1 else "frontal"
    by = 100 * (max(r, 1 / r) - 1) if r > 0 else float("inf")
    raise InputError(
        f"the two films' scales disagree: with pixel spacings {frontal.geometry.spacing_mm[0]:.4g} mm (frontal, "
        f"{frontal.meta.get('spacing_source')}) and {lateral.geometry.spacing_mm[0]:.4g} mm (lateral, "
        f"{lateral.meta.get('spacing_source')}) the same {scale['n_bones']} bones span a chest {by:.0f} % taller "
        f"on the {taller} film (more than {100 * MAX_SCALE_DISAGREEMENT:.0f} %); give the right spacing with "
        "--pixel-spacing / --lateral-pixel-spacing", lateral.path)


def lateral_spacing(lateral: Radiograph, frontal: Radiograph, user_spacing_mm=None) -> tuple[Radiograph, dict]:
    """Choose the lateral's detector pixel spacing: the user's, else the file's, else the frontal
    film's chosen one (the same detector assumed; a warning). Returns (radiograph, record)."""
    from .scale import spacing_pair

    src = lateral.meta.get("spacing_source")
    new_warnings = []
    if user_spacing_mm is not None:
        sp, source, origin = spacing_pair(user_spacing_mm), "user", "--lateral-pixel-spacing"
    elif src not in (None, "none", "default"):
        sp, source, origin = tuple(lateral.geometry.spacing_mm), "file", src
    else:
        sp, source = tuple(frontal.geometry.spacing_mm), "frontal_film"
        origin = f"the frontal film's ({frontal.meta.get('spacing_source')}), the same detector assumed"
        why = lateral.meta.get("spacing_why") or "none given"
        new_warnings.append(f"no pixel spacing for the lateral film ({why}): "
                            f"using the frontal film's {sp[0]:.4g} mm (the same detector and pixel size assumed); "
                            "pass --lateral-pixel-spacing MM if you know it")
    record = {"spacing_mm": [round(float(v), 6) for v in sp], "source": source, "from": origin}
    meta = {**lateral.meta, "spacing_mm": list(sp), "spacing_source": src if source == "file" else source,
            "scale": record}
    geom = replace(lateral.geometry, spacing_mm=tuple(float(v) for v in sp))
    return replace(lateral, geometry=geom, meta=meta, warnings=list(lateral.warnings) + new_warnings), record


def prepare_lateral(frontal: Radiograph, frontal_dets, source, detector, image_size, view: str | None = None,
                    pixel_spacing_mm=None, force: bool = False, offset="auto") -> LateralFilm:
    """The lateral of ``frontal`` (already checked and scaled; ``frontal_dets``: the detector's boxes on
    its ``to_network_input(frontal, (detector.imgsz,) * 2)`` image) ready for the network, its camera
    placed by ``offset`` ('auto' | 'none' | mm: :func:`lateral_placement`).

    Raises InputError for the bad pairs of the module docstring (a lateral that looks frontal
    only unless ``force``). New warnings are also issued as :class:`RadiographWarning`.
    """
    from . import film_likeness, filmcheck

    offset = lateral_offset_arg(offset)
    lateral = read_lateral(source, view)
    n_read = len(lateral.warnings)  # the reader issued these already
    check_views(frontal, lateral)
    identity = check_identity(frontal, lateral)
    lateral, spacing = lateral_spacing(lateral, frontal, pixel_spacing_mm)
    lateral = replace(lateral, geometry=lateral.geometry.with_isocenter(frontal.geometry.isocenter_lps_mm))
    size = (detector.imgsz, detector.imgsz)
    det_image, det_geom = to_network_input(lateral, size)
    dets = detector.detect(det_image, conf=filmcheck.REFUSE_BELOW_CONFIDENCE)
    checks = filmcheck.image_checks(lateral.geometry.size_px, det_image)
    if checks["refusals"] and not force:
        raise filmcheck.NotAChestFilmError("the lateral film is not a chest radiograph: "
                                           + "; ".join(checks["refusals"]) + " (pass --force to reconstruct anyway)",
                                           lateral.path)
    evidence = filmcheck.view_evidence(dets, detector.imgsz)
    likeness = filmcheck.likeness_checks(film_likeness.likeness(detector, det_image))
    new = [f"the lateral film: {w}" for w in likeness.pop("warnings")]
    checks.update(likeness)
    if evidence["looks_frontal"]:
        text = (f"two frontal films: the --lateral film looks frontal (the bone detector finds "
                f"{evidence['bones_conf_0.25']} bones, the left and right ribs "
                f"{100 * evidence['rib_side_separation']:.0f} % of the width apart; on a lateral film they overlap)")
        if not force:
            raise InputError(text + "; give the lateral film of the study (or --force)", lateral.path)
        new.append(text + " (--force)")
    frontal_det_geom = to_network_input(frontal, size)[1]  # the frame of frontal_dets, with the chosen spacing
    scale = vertical_scale(frontal_dets, frontal_det_geom, dets, det_geom)
    check_scales(scale, frontal, lateral)
    mirror = {"back_side": None, "from": None, "contrast": None, "looks_mirrored": False}
    if lateral.meta.get("view_source") != "ViewPosition" or lateral.meta.get("patient_orientation") is None:
        mirror = mirror_evidence(det_image, lateral.geometry.view, dets)
        want = "right" if lateral.geometry.view == "LL" else "left"
        if mirror["looks_mirrored"] and mirror["from"] == "detector" and view is None:
            # the detector's vertebrae and sternum say where the back is: a film stored mirrored (common for
            # untagged exports) is turned to the view's display, and the user is told; a view the user named wins
            lateral = replace(lateral, image=np.ascontiguousarray(lateral.image[:, ::-1]),
                              meta={**lateral.meta, "flipped": list(lateral.meta.get("flipped", [])) + ["columns"]})
            det_image, det_geom = to_network_input(lateral, size)
            dets = detector.detect(det_image, conf=filmcheck.REFUSE_BELOW_CONFIDENCE)
            mirror = {**mirror, "corrected": True}
            new.append(f"the lateral film was stored mirrored (its spine on the {mirror['back_side']}, judged from "
                       f"the bone detector's vertebrae and sternum): flipped left-right to be read as "
                       f"{lateral.geometry.view} (back on the {want}); pass --lateral-view to read it otherwise")
        elif mirror["looks_mirrored"]:
            new.append(f"the lateral film looks mirrored: its back (spine) seems to be on the {mirror['back_side']}, "
                       f"but an {lateral.geometry.view} film is shown with the back on the {want} "
                       f"(judged from the {mirror['from']}); flip it or pass --lateral-view "
                       f"{'RL' if lateral.geometry.view == 'LL' else 'LL'}")
    lateral = replace(lateral, warnings=list(lateral.warnings) + new)
    for message in lateral.warnings[n_read:]:
        _warnings.warn(f"{lateral.path}: {message}" if lateral.path else message, RadiographWarning, stacklevel=3)
    image, geom = to_network_input(lateral, image_size)
    placement = lateral_placement(scale, offset)
    geom = place_lateral(geom, placement)
    record = {
        "input": lateral.path, "view": geom.view, "view_source": lateral.meta.get("view_source"),
        "view_position": lateral.meta.get("view_position"),
        "patient_orientation": lateral.meta.get("patient_orientation"),
        "flipped": lateral.meta.get("flipped", []), "spacing": spacing, "sdd_mm": round(geom.sdd_mm, 3),
        "sdd_source": lateral.meta.get("sdd_source"),
        "object_to_detector_mm": round(geom.sdd_mm - geom.sod_mm, 3), "geometry": geom.to_dict(),
        "film_check": {**checks, **evidence}, "mirror_check": mirror, "input_meta": lateral.meta,
        "warnings": list(lateral.warnings),
    }
    pair = {
        "assumptions": ["the central rays of both exposures meet at one isocentre (the frontal film's), at "
                        "the same height unless placement says otherwise: with --lateral-offset auto (the "
                        "default) the lateral's camera is moved by the height the bones found on both films "
                        "give (vertical_scale) when they agree, or by the user's --lateral-offset MM (the "
                        "two-view network is also trained to tolerate a vertical offset and a magnification "
                        "error)",
                        "the anatomy is the same in both films (the same patient, breathing and posture apart "
                        "from the turn)"],
        "identity": identity, "vertical_scale": scale,
        "placement": {**placement, "text": placement_text(placement)},
        "same_detector_assumed": spacing["source"] == "frontal_film",
    }
    record["pair"] = pair
    return LateralFilm(lateral, image, geom, record, dets)


__all__ = ["LateralFilm", "read_lateral", "check_main_film", "check_views", "check_identity", "mirror_evidence",
           "vertical_scale", "check_scales", "lateral_spacing", "prepare_lateral", "MAX_SCALE_DISAGREEMENT",
           "lateral_offset_arg", "lateral_placement", "place_lateral", "placement_text"]
