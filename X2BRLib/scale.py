"""Physical scale of a film: which detector pixel spacing to use, from where, how sure.

Order (first that applies wins):

1. ``user``: the spacing the user gave (``--pixel-spacing MM``; in Slicer the volume's spacing);
2. ``file``: the file's own spacing (DICOM ImagerPixelSpacing / PixelSpacing, NRRD / NIfTI / MHA
   spacing other than the 1 x 1 mm ITK reports for files without one), unless the chest it
   implies is not an adult's (see :func:`check_file_spacing`): then the estimate is used, with a
   warning saying both;
3. ``estimate``: from the bones the detector finds on the film (:func:`estimate_spacing`);
4. ``default``: no usable estimate (too few bones found): the image's longer side is taken to
   span a 43 cm detector (``DEFAULT_FIELD_MM``; the old 0.143 mm default for a 3,008 px film).

The estimate. The shipped prior (``Resources/Scale/bone_layout.json``, made by
``scripts/build_scale_prior.py``) holds each bone's mean box centre in millimetres on the plane
through the isocentre, parallel to the detector, over virtual patients of the public CT.
The detector's box centres (network pixels) are fitted to those positions by a weighted
similarity transform (scale, rotation, shift; outliers dropped); its scale k (px per mm at the
isocentre) gives the network pixel spacing ``magnification / k``, and the file's spacing follows
by the resampling ratio. Uncertainty: the calibration spread over the prior's virtual patients
combined with the fit's standard error. It only knows the size of the one public CT's patient
and the virtual patients' size range (0.92-1.08); real adults vary more.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from .geometry import DEFAULT_FIELD_MM
from .shipped import resource

PRIOR_PATH = resource("Scale", "bone_layout.json")
MIN_CONFIDENCE = 0.25       # detections used for the fit
MIN_BONES = 6               # fewer fitted bones: no estimate
MIN_SPREAD_MM = 40.0        # RMS distance of the fitted bones from their centroid (prior, mm)
# A file's spacing is not believed when the chest it implies is outside this factor of the
# prior patient's size (with an estimate of at least this many bones). A setting, not a
# measurement: wider than the virtual patients' range (0.88-1.12) and than adult chest widths
# around the public CT's; children's films fall below it and are warned about.
PLAUSIBLE_SIZE_FACTOR = (0.7, 1.4)
MIN_BONES_TO_OVERRIDE = 10
# An estimate that makes the image wider than this is suspicious: chest detectors are 35-43 cm;
# a child's film (small bones on a large field) does it, since the prior is an adult's chest.
MAX_FIELD_MM = 500.0


@lru_cache(maxsize=4)
def load_prior(path: str | None = None) -> dict:
    """The bone-layout prior: {"labels": [...], "centre_mm": (n, 2), "calibration": {...}, ...}."""
    p = Path(path) if path else PRIOR_PATH
    d = json.loads(p.read_text())
    d["centre_mm_by_label"] = {int(lab): np.array(c, float) for lab, c in zip(d["labels"], d["centre_mm"])}
    return d


def fit_similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None):
    """Weighted least-squares similarity dst ~ k R src + t (Umeyama, no reflection).

    src, dst: (n, 2) float (src in mm, dst in px); w: (n,) weights >= 0.
    Returns (k, R (2, 2), t (2,), residuals (n,) in dst units)."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    w = np.ones(len(src)) if w is None else np.asarray(w, float)
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    a, b = src - ms, dst - md
    cov = (b * w[:, None]).T @ a
    U, S, Vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(U @ Vt)) or 1.0
    D = np.diag([1.0, d])
    R = U @ D @ Vt
    var = float(w @ (a ** 2).sum(1))
    k = float(np.trace(np.diag(S) @ D) / var)
    t = md - k * R @ ms
    res = np.linalg.norm(dst - (k * src @ R.T + t), axis=1)
    return k, R, t, res


def fit_layout(detections, prior: dict | None = None, min_confidence: float = MIN_CONFIDENCE) -> dict | None:
    """Fit detected box centres to the prior layout.

    detections: objects with ``label``, ``confidence``, ``box_px`` (u0, v0, u1, v1) in network px.
    Returns {"px_per_mm": k at the isocentre plane, "n_bones", "labels", "residual_rms_mm",
    "spread_mm", "se_rel"} or None when fewer than MIN_BONES remain or they cluster (spread
    below MIN_SPREAD_MM). Outliers (residual > max(3 x median, 8 mm)) are dropped, twice at most.
    """
    prior = prior or load_prior()
    lut = prior["centre_mm_by_label"]
    rows = [(d.label, d.confidence, d.box_px) for d in detections
            if d.confidence >= min_confidence and d.label in lut]
    if len(rows) < MIN_BONES:
        return None
    labels = np.array([r[0] for r in rows])
    w = np.array([r[1] for r in rows], float)
    box = np.array([r[2] for r in rows], float)
    dst = np.stack([(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2], 1)
    src = np.stack([lut[int(lab)] for lab in labels])
    keep = np.ones(len(rows), bool)
    for _ in range(3):
        if keep.sum() < MIN_BONES:
            return None
        k, R, t, res = fit_similarity(src[keep], dst[keep], w[keep])
        res_mm = np.linalg.norm(dst - (k * src @ R.T + t), axis=1) / k
        limit = max(3.0 * float(np.median(res_mm[keep])), 8.0)
        new = res_mm <= limit
        if (new == keep).all():
            break
        keep = new
    k, R, t, _ = fit_similarity(src[keep], dst[keep], w[keep])
    res_mm = np.linalg.norm(dst[keep] - (k * src[keep] @ R.T + t), axis=1) / k
    spread = float(np.sqrt(((src[keep] - src[keep].mean(0)) ** 2).sum(1).mean()))
    if spread < MIN_SPREAD_MM:
        return None
    n = int(keep.sum())
    rms = float(np.sqrt((res_mm ** 2).mean()))
    return {"px_per_mm": k, "n_bones": n, "labels": [int(x) for x in labels[keep]],
            "rotation_deg": round(math.degrees(math.atan2(R[1, 0], R[0, 0])), 2),
            "residual_rms_mm": round(rms, 3), "spread_mm": round(spread, 2),
            "se_rel": rms / (spread * math.sqrt(n))}


def estimate_spacing(detections, net_geometry, radiograph_geometry, prior: dict | None = None) -> dict | None:
    """Detector pixel spacing of the radiograph from the detections on its network image.

    net_geometry: the ProjectionGeometry of the image the detector saw (``to_network_input`` of
    the radiograph, whose spacing was assumed); radiograph_geometry: the radiograph's (same
    assumed spacing). Returns {"spacing_mm": (su, sv), "uncertainty_rel", "fit": {...}} or None.
    """
    prior = prior or load_prior()
    fit = fit_layout(detections, prior)
    if fit is None:
        return None
    s_net = net_geometry.magnification / fit["px_per_mm"]  # network pixel pitch on the detector, mm
    ratio = s_net / net_geometry.spacing_mm[0]
    su, sv = radiograph_geometry.spacing_mm
    unc = math.hypot(prior["calibration"]["sd_rel"], fit["se_rel"])
    return {"spacing_mm": (su * ratio, sv * ratio), "uncertainty_rel": round(unc, 4), "fit": fit}


def rib_cage_width_px(detections, min_confidence: float = MIN_CONFIDENCE) -> float | None:
    """Outer rib-cage width in network px: from the right ribs' leftmost box edge to the left
    ribs' rightmost (columns run toward the patient's left); None without ribs on both sides."""
    left = [d.box_px[2] for d in detections if 1 <= d.label <= 12 and d.confidence >= min_confidence]
    right = [d.box_px[0] for d in detections if 13 <= d.label <= 24 and d.confidence >= min_confidence]
    return max(left) - min(right) if left and right else None


def chest_width_mm(detections, net_spacing_mm: float, magnification: float) -> float | None:
    """Rib-cage width in mm at the isocentre implied by a network pixel pitch (detector mm)."""
    w = rib_cage_width_px(detections)
    return None if w is None else float(w * net_spacing_mm / magnification)


def resolve(radiograph, detections, net_geometry, user_spacing_mm=None, prior: dict | None = None):
    """Choose the spacing (see the module docstring); return (radiograph with it, scale record).

    radiograph: as read (``meta['spacing_source']``: 'none' when the file had no usable spacing;
    its geometry then holds a placeholder). Returns a new Radiograph whose geometry, meta
    ('spacing_mm', 'spacing_source', 'scale') and warnings say what was used.
    scale record: {"spacing_mm", "source": user | file | estimate | default, "from",
    "uncertainty_rel", "estimate": {...} | None, "chest_width_mm" (rib cage, at the isocentre;
    None without ribs on both sides), "field_mm" (the image's longer side), "status"}.
    """
    prior = prior or load_prior()
    g = radiograph.geometry
    meta, warnings = dict(radiograph.meta), list(radiograph.warnings)
    est = estimate_spacing(detections, net_geometry, g, prior)
    file_src = meta.get("spacing_source")
    has_file = file_src not in (None, "none", "default")
    new_warnings = []
    if user_spacing_mm is not None:
        sp, source, unc = spacing_pair(user_spacing_mm), "user", None
        origin = "--pixel-spacing"
    elif has_file:
        sp, source, unc, origin = tuple(g.spacing_mm), "file", None, file_src
        if est is not None:
            factor = est["spacing_mm"][0] / sp[0]  # implied size / prior size ~ 1 / factor
            implied = 1.0 / factor
            lo, hi = PLAUSIBLE_SIZE_FACTOR
            if not lo <= implied <= hi:
                width = chest_width_mm(detections, net_geometry.spacing_mm[0], net_geometry.magnification) \
                    or float(prior["rib_cage_width_mm"]) * implied
                if est["fit"]["n_bones"] >= MIN_BONES_TO_OVERRIDE:
                    new_warnings.append(
                        f"the file's pixel spacing {sp[0]:.4g} mm ({file_src}) implies a chest "
                        f"{width:.0f} mm wide, outside adult sizes; using the spacing estimated from "
                        f"the bones instead: {est['spacing_mm'][0]:.4g} mm (+/- "
                        f"{100 * est['uncertainty_rel']:.0f} %); pass --pixel-spacing to force one")
                    sp, source, unc, origin = tuple(est["spacing_mm"]), "estimate", est["uncertainty_rel"], \
                        f"{est['fit']['n_bones']} detected bones (file spacing {sp[0]:.4g} mm rejected)"
                else:
                    new_warnings.append(
                        f"the file's pixel spacing {sp[0]:.4g} mm ({file_src}) implies a chest "
                        f"{width:.0f} mm wide, outside adult sizes; kept (too few bones found to "
                        f"estimate another); pass --pixel-spacing if it is wrong")
    elif est is not None:
        sp, source, unc = tuple(est["spacing_mm"]), "estimate", est["uncertainty_rel"]
        origin = f"{est['fit']['n_bones']} detected bones"
        new_warnings.append(f"no pixel spacing in the file ({meta.get('spacing_why') or 'none given'}); "
                            f"estimated from {origin}: {sp[0]:.4g} mm (+/- {100 * unc:.0f} %); "
                            "pass --pixel-spacing MM if you know it")
        field = max(sp[0] * g.size_px[0], sp[1] * g.size_px[1])
        if field > MAX_FIELD_MM:
            new_warnings.append(f"with the estimated spacing the image is {field:.0f} mm wide, more than a "
                                f"chest detector (43 cm): a child's film? The estimate assumes an adult's chest")
    else:
        side_px = max(g.size_px)
        sp, source, unc = (DEFAULT_FIELD_MM / side_px,) * 2, "default", None
        origin = f"the image's longer side taken as a {DEFAULT_FIELD_MM:.0f} mm detector"
        new_warnings.append(f"no pixel spacing in the file ({meta.get('spacing_why') or 'none given'}) and "
                            f"too few bones found to estimate it; using {sp[0]:.4g} mm ({origin}): "
                            "sizes are a guess, pass --pixel-spacing MM")
    width = chest_width_mm(detections, net_geometry.spacing_mm[0] * sp[0] / g.spacing_mm[0],
                           net_geometry.magnification)
    record = {"spacing_mm": [round(float(x), 6) for x in sp], "source": source, "from": origin,
              "uncertainty_rel": unc,
              "estimate": None if est is None else {
                  "spacing_mm": [round(float(x), 6) for x in est["spacing_mm"]],
                  "uncertainty_rel": est["uncertainty_rel"], **est["fit"],
                  "px_per_mm": round(est["fit"]["px_per_mm"], 6), "se_rel": round(est["fit"]["se_rel"], 5)},
              "chest_width_mm": None if width is None else round(width, 1),
              "field_mm": round(float(max(sp[0] * g.size_px[0], sp[1] * g.size_px[1])), 1),
              "prior": prior.get("name")}
    record["status"] = status_line(record)
    meta.update(spacing_mm=list(sp), spacing_source=file_src if source == "file" else source, scale=record)
    if unc is not None:
        meta["spacing_uncertainty_pct"] = round(100 * unc, 1)  # the preview title shows it
    geom = replace(g, spacing_mm=tuple(float(x) for x in sp))
    out = replace(radiograph, geometry=geom, meta=meta, warnings=warnings + new_warnings)
    return out, record


def status_line(record: dict) -> str:
    """One line for people (CLI, Slicer status): the spacing, where it came from, how sure."""
    sp = record["spacing_mm"]
    text = f"pixel spacing {sp[0]:.4g}" + (f" x {sp[1]:.4g}" if abs(sp[1] - sp[0]) > 1e-6 else "") + " mm"
    text += {"user": " (given by the user)", "file": f" (from the file: {record['from']})",
             "estimate": f" (estimated from {record['from']}",
             "default": " (a default guess: too few bones to estimate it)"}[record["source"]]
    if record["source"] == "estimate":
        text += f", +/- {100 * record['uncertainty_rel']:.0f} %)"
    if record.get("chest_width_mm") is not None:
        text += f"; rib cage about {record['chest_width_mm']:.0f} mm wide"
    return text


def spacing_pair(value) -> tuple:
    """(column, row) mm from one number (square pixels) or two; InputError unless positive and finite."""
    vals = [float(v) for v in (value if isinstance(value, (list, tuple)) else (value, value))]
    if len(vals) != 2 or not all(math.isfinite(v) and v > 0 for v in vals):
        from .errors import InputError

        raise InputError(f"pixel spacing must be one or two positive numbers (mm), got {value!r}")
    return tuple(vals)
