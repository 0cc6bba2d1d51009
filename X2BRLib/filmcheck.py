"""Is this a frontal chest film? Checks that run before any reconstruction.

Two kinds of evidence:

* the film's own statistics: its aspect ratio (a chest film is about square, 35 x 43 cm at
  most: a 300 x 5,000 px strip is not one) and how alike neighbouring pixels are (the
  correlation of horizontally adjacent pixels of the network image: about 0 for random noise,
  above 0.9 for every real film of the gallery);
* the bone detector (YOLOv9t, 45 bones): a film on which it finds no bone at all, even at
  confidence 0.1, is refused; one on which it finds few with confidence >= 0.25 gets a warning
  (a lateral film, another body part, a child, or a film unlike the training films);
* where the bones it finds sit (:func:`layout_checks`): a warning when their box centres do not
  fit the frontal chest's bone layout (``scale.fit_layout``'s residual) or when the left and right
  ribs overlap as on a lateral film. Detector v2 learned lateral films and finds many "bones" on
  photographs and CT slices, so the count alone no longer tells those apart.
* whether the image looks like a radiograph at all (:mod:`X2BRLib.film_likeness`: a logistic
  regression on the detector's features): a warning below its threshold. It tells CT slices and
  pictures from films where the detector's boxes cannot (a coronal CT slice shows a chest's bones
  in place).

Refusals raise :class:`NotAChestFilmError` (an InputError: one line, exit 2) unless forced
(``x2br reconstruct --force``); the result of every check is kept for report.json. The
thresholds are settings chosen against ``bench/bench_filmcheck.py`` (its output is committed in
``bench/README.md``): no frontal film of the gallery or simulated film is refused.
"""
from __future__ import annotations

import numpy as np

from . import anatomy
from .errors import InputError

MAX_ASPECT = 2.5              # longer / shorter side
MIN_NEIGHBOUR_CORRELATION = 0.5
REFUSE_BELOW_CONFIDENCE = 0.1  # no bone at this confidence: refused
WARN_CONFIDENCE = 0.25
WARN_BELOW_BONES = 10          # fewer bones at WARN_CONFIDENCE: a warning
N_BONES = 45
# A film looks frontal (for the lateral of a pair: two frontal films) when the detector finds
# at least FRONTAL_MIN_BONES bones at WARN_CONFIDENCE with at least FRONTAL_MIN_RIBS ribs of each
# side whose mean centres lie FRONTAL_MIN_RIB_SEPARATION of the image width apart (left ribs to
# the image's right). On a lateral film the two sides overlap. Settings read off
# bench/bench_pair_views.py on the gallery with detector v1 (bench/results/pair_views_v1_cpu.txt).
FRONTAL_MIN_BONES = 10
FRONTAL_MIN_RIBS = 3
FRONTAL_MIN_RIB_SEPARATION = 0.3
# The main film: a warning when every box the detector gives at LAYOUT_CONFIDENCE (the refusal's
# confidence, >= scale.MIN_BONES bones) fits the frontal layout prior with an RMS residual above
# LAYOUT_MAX_RESIDUAL_MM, or when the ribs of each side (>= FRONTAL_MIN_RIBS at WARN_CONFIDENCE) lie
# less than SIDE_MIN_RIB_SEPARATION of the width apart (gallery frontal films >= 0.22, laterals
# <= 0.021). The fit takes the weak boxes too: on a real film they still sit on bones, on a
# photograph or a CT slice they scatter. Residuals of that fit (bench/bench_filmcheck.py; detector v3
# bench/results/filmcheck_noprobe_cpu.txt, v2 filmcheck_v2_rule21_cpu.txt): gallery frontal films at most
# 20.3 mm with v3 (24.2 mm with v2, on a film where it finds 11 bones), laterals >= 89 mm; the
# photographs and CT slices that pass the other checks with v3 21.2-36.5 mm, except a coronal CT slice
# (5.9 mm: it is a chest seen from the front) and an axial one (17.4 mm). 21 mm lies between the
# frontal films and those non-films (thin margins both ways, about 0.7 and 0.2 mm, on these 53 images;
# the v2-era rule, 25 mm on the confident boxes only, let 7 of 18 non-films through with v3). Chosen
# on the same images it is measured on: there is no held-out set of non-films (docs/DECISIONS.md).
LAYOUT_CONFIDENCE = REFUSE_BELOW_CONFIDENCE
LAYOUT_MAX_RESIDUAL_MM = 21.0
SIDE_MIN_RIB_SEPARATION = 0.15


class NotAChestFilmError(InputError):
    """The image does not look like a frontal chest radiograph."""


def neighbour_correlation(image: np.ndarray) -> float:
    """Pearson correlation of horizontally adjacent pixels of an (H, W) image (0 when constant)."""
    a = np.asarray(image, np.float64)
    x, y = a[:, :-1].ravel(), a[:, 1:].ravel()
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        return 0.0
    return float(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy))


def image_checks(size_px, net_image: np.ndarray) -> dict:
    """Statistics of the film alone. size_px: (width, height) of the file; net_image: (h, w) in
    [0, 1] as the networks see it. Returns {"aspect", "neighbour_correlation", "refusals": [...]}."""
    w, h = int(size_px[0]), int(size_px[1])
    aspect = max(w, h) / max(1, min(w, h))
    corr = neighbour_correlation(net_image)
    refusals = []
    if aspect > MAX_ASPECT:
        refusals.append(f"a {w} x {h} px image ({aspect:.1f}:1) is not shaped like a chest film "
                        f"(at most {MAX_ASPECT}:1)")
    if corr < MIN_NEIGHBOUR_CORRELATION:
        refusals.append(f"neighbouring pixels are nearly unrelated (correlation {corr:.2f}, a film "
                        f"has > {MIN_NEIGHBOUR_CORRELATION}): this looks like random noise")
    return {"aspect": round(aspect, 3), "neighbour_correlation": round(corr, 4), "refusals": refusals}


def detection_checks(detections) -> dict:
    """Evidence from the detector. detections: objects with ``confidence`` (at most one per bone,
    found at confidence >= REFUSE_BELOW_CONFIDENCE or lower). Returns {"bones_conf_0.1",
    "bones_conf_0.25", "mean_confidence", "refusals": [...], "warnings": [...]}."""
    conf = np.array([d.confidence for d in detections], float)
    n_low = int((conf >= REFUSE_BELOW_CONFIDENCE).sum())
    n_ok = int((conf >= WARN_CONFIDENCE).sum())
    out = {"bones_conf_0.1": n_low, "bones_conf_0.25": n_ok,
           "mean_confidence": round(float(conf.mean()), 4) if len(conf) else 0.0,
           "refusals": [], "warnings": []}
    if n_low == 0:
        out["refusals"].append(f"the bone detector finds no chest bone (none of {N_BONES} at confidence "
                               f">= {REFUSE_BELOW_CONFIDENCE})")
    elif n_ok < WARN_BELOW_BONES:
        out["warnings"].append(f"the bone detector finds only {n_ok} of {N_BONES} bones with confidence "
                               f">= {WARN_CONFIDENCE}: this may not be a frontal chest film (a lateral film, "
                               "another body part, a child) or it differs from the simulated training "
                               "films; check the result")
    return out


def layout_checks(detections, width_px: int) -> dict:
    """Do the bones found sit where a frontal chest's do? detections on the network image
    (width_px wide). Returns {"layout_residual_mm" (:func:`layout_residual_mm`), "rib_side_separation",
    "warnings": [...]}."""
    res = layout_residual_mm(detections)
    sep = view_evidence(detections, width_px)["rib_side_separation"]
    warnings = []
    if res is not None and res > LAYOUT_MAX_RESIDUAL_MM:
        warnings.append(f"the bones the detector finds do not sit where a frontal chest film's do (layout "
                        f"residual {res:.0f} mm, a frontal film has < {LAYOUT_MAX_RESIDUAL_MM:.0f} mm): this may "
                        "not be a frontal chest film (a lateral film, another image, a child); check the result")
    if sep is not None and sep < SIDE_MIN_RIB_SEPARATION:
        warnings.append(f"the left and right ribs overlap (centres {sep:.2f} of the width apart, a frontal "
                        f"film has > {SIDE_MIN_RIB_SEPARATION}): this looks like a lateral film; give the "
                        "frontal film first (and the lateral with --lateral)")
    return {"layout_residual_mm": res, "rib_side_separation": sep, "warnings": warnings}


def layout_residual_mm(detections) -> float | None:
    """RMS residual (mm, prior frame) of ``scale.fit_layout`` of the detections of confidence >=
    LAYOUT_CONFIDENCE (outliers dropped as the fit does); None without a fit (too few bones)."""
    from .scale import fit_layout

    fit = fit_layout(detections, min_confidence=LAYOUT_CONFIDENCE)
    return None if fit is None else fit["residual_rms_mm"]


def view_evidence(detections, width_px: int) -> dict:
    """Does the detector see a frontal film? detections on the network image (width_px wide).

    Returns {"bones_conf_0.25", "ribs_left", "ribs_right", "rib_side_separation" (mean centre of
    the left ribs minus that of the right ribs, as a fraction of the width; None without
    FRONTAL_MIN_RIBS of each side), "looks_frontal": bool} (confident detections only)."""
    ok = [d for d in detections if d.confidence >= WARN_CONFIDENCE]
    ribs = {side: [0.5 * (d.box_px[0] + d.box_px[2]) for d in ok
                   if anatomy.bone(d.label).group == "rib" and anatomy.bone(d.label).laterality == side]
            for side in ("left", "right")}
    left, right = ribs["left"], ribs["right"]
    sep = None
    if len(left) >= FRONTAL_MIN_RIBS and len(right) >= FRONTAL_MIN_RIBS:
        sep = round(float(np.mean(left) - np.mean(right)) / float(width_px), 4)
    frontal = len(ok) >= FRONTAL_MIN_BONES and sep is not None and sep >= FRONTAL_MIN_RIB_SEPARATION
    return {"bones_conf_0.25": len(ok), "ribs_left": len(left), "ribs_right": len(right),
            "rib_side_separation": sep, "looks_frontal": bool(frontal)}


def likeness_checks(likeness: dict | None) -> dict:
    """The film-likeness probe's verdict (:mod:`X2BRLib.film_likeness`): {"film_likeness",
    "film_likeness_threshold", "warnings"}; no warning without a probe."""
    p, t = (likeness or {}).get("film_likeness"), (likeness or {}).get("threshold")
    warnings = []
    if p is not None and p < t:
        warnings.append(f"the image does not look like a radiograph (film likeness {p:.2f}, films score above "
                        f"{t:g}): it may be a CT slice, a drawing or a photograph, or a film unlike the "
                        "training films (a child's, an unusual processing); check the result")
    return {"film_likeness": p, "film_likeness_threshold": t, "warnings": warnings}


def check_film(size_px, net_image, detections, force: bool = False, path=None, likeness: dict | None = None) -> dict:
    """Every check; raises NotAChestFilmError on any refusal unless ``force``. likeness: the
    probe's result for this image (:func:`X2BRLib.film_likeness.likeness`; None: not scored).

    Returns the record for report.json: {"aspect", "neighbour_correlation", "bones_conf_0.1",
    "bones_conf_0.25", "mean_confidence", "layout_residual_mm", "rib_side_separation" (both left
    out when refused), "film_likeness", "film_likeness_threshold", "refused": [...], "forced": bool,
    "warnings": [...]}."""
    img = image_checks(size_px, net_image)
    det = detection_checks(detections)
    refusals = img.pop("refusals") + det.pop("refusals")
    warnings = det.pop("warnings")
    lay = layout_checks(detections, np.asarray(net_image).shape[1]) if not refusals else {"warnings": []}
    warnings += lay.pop("warnings")
    det.update(lay)
    lk = likeness_checks(likeness)
    if not refusals:
        warnings += lk["warnings"]
    det.update({k: v for k, v in lk.items() if k != "warnings"})
    if refusals and not force:
        raise NotAChestFilmError("not a frontal chest radiograph: " + "; ".join(refusals)
                                 + " (pass --force to reconstruct anyway)", path)
    if refusals:
        warnings = [f"reconstructed although it does not look like a chest film (--force): "
                    + "; ".join(refusals)] + warnings
    return {**img, **det, "refused": refusals, "forced": bool(refusals and force), "warnings": warnings}


def check_and_scale(radiograph, detector, pixel_spacing_mm=None, force: bool = False):
    """The checks before a reconstruction: detect the bones on the film as the networks see it,
    read a film stored as its negative as that (:mod:`X2BRLib.polarity`), refuse what is not a
    chest film (unless ``force``), choose the pixel spacing
    (:func:`X2BRLib.scale.resolve`). Returns (radiograph with that spacing, its meta holding
    'film_check' and 'scale' and its warnings what was assumed; detections)."""
    from dataclasses import replace

    from . import film_likeness, polarity, scale
    from .io.radiograph import to_network_input

    def detect(rad):
        image, geom = to_network_input(rad, (detector.imgsz, detector.imgsz))
        return detector.detect(image, conf=REFUSE_BELOW_CONFIDENCE), image, geom

    # a PNG / JPEG stored as its negative is read as the negative (polarity.py)
    radiograph, dets, image, geom, _ = polarity.choose(radiograph, detect)
    check = check_film(radiograph.geometry.size_px, image, dets, force=force, path=radiograph.path,
                       likeness=film_likeness.likeness(detector, image))
    radiograph = replace(radiograph, meta={**radiograph.meta, "film_check": check},
                         warnings=list(radiograph.warnings) + check["warnings"])
    radiograph, _ = scale.resolve(radiograph, dets, geom, pixel_spacing_mm)
    return radiograph, dets
