"""Test-time passes of the bone detector: the same network on views of the one film, each
bone's most confident box kept (``Detector(test_time=True)`` / ``detect(test_time=True)``).

Passes (no retraining; boxes of every pass are in the input image's pixel frame):
- ``plain``: the film as given (what ``detect`` does without test-time passes);
- ``clahe``: contrast-limited adaptive histogram equalisation (clip ``CLAHE_CLIP``): local
  contrast of flat, hazy bedside films lifted toward what the detector learnt;
- ``zoom``: the film letterboxed to ``ZOOM`` x the network size (256 -> 320 px): bones look
  larger to the network.
Boxes the plain pass did not give are kept only near where the frontal layout, fitted to the
plain pass's confident boxes, puts that bone (:func:`keep_consistent`): a pass that finds a
"rib" in the wrong place adds nothing.
Measured on the gallery and on images that are not chest films by
``bench/bench_detect_test_time.py``: more bones found on real films, and more (false) bones on
non-films too, so the film check (``filmcheck``) keeps the plain pass.
"""
from __future__ import annotations

import numpy as np

PASSES = ("plain", "clahe", "zoom")
CLAHE_CLIP = 0.02
GATE_MM = 20.0  # a test-time box counts when its bone's centre is within this of where the layout puts it
ZOOM = 1.25


def passes(test_time) -> tuple:
    """False / None / () -> () (one plain pass, no test-time passes); True -> PASSES; a sequence
    of pass names -> those (InputError naming an unknown one)."""
    if test_time is None or test_time is False:
        return ()
    if test_time is True:
        return PASSES
    names = tuple(str(n) for n in test_time)
    bad = [n for n in names if n not in PASSES]
    if bad:
        from ..errors import InputError

        raise InputError(f"unknown test-time pass {bad[0]!r}; choose from {', '.join(PASSES)}")
    return names


def view(image: np.ndarray, name: str) -> np.ndarray:
    """The (H, W) float32 [0, 1] image a pass gives the network (before letterboxing)."""
    if name == "clahe":
        from skimage import exposure

        return exposure.equalize_adapthist(np.clip(image, 0.0, 1.0), clip_limit=CLAHE_CLIP).astype(np.float32)
    return np.asarray(image, np.float32)


def network_size(imgsz: int, name: str) -> int:
    """The letterbox size of a pass: the detector's own, or ZOOM x it rounded to the stride (32)."""
    return int(round(imgsz * ZOOM / 32.0)) * 32 if name == "zoom" else int(imgsz)


def keep_consistent(plain, merged) -> list:
    """Of ``merged``'s boxes that the plain pass did not give (a new bone or another box), keep
    those whose centre lies within ``GATE_MM`` of where the frontal layout prior (``scale.fit_layout``'s,
    a similarity fitted to the plain pass's boxes of confidence >= ``scale.MIN_CONFIDENCE``, outliers
    dropped) puts that bone; the others fall back to the plain pass's box or are dropped. Without
    such a fit (too few bones) or on a film whose layout the film check warns about
    (``filmcheck.layout_residual_mm`` above ``filmcheck.LAYOUT_MAX_RESIDUAL_MM``): the plain pass's
    detections."""
    from ..filmcheck import LAYOUT_MAX_RESIDUAL_MM, layout_residual_mm
    from ..scale import MIN_CONFIDENCE, fit_layout, fit_similarity, load_prior

    lut = load_prior()["centre_mm_by_label"]
    fit = fit_layout(plain)
    res = layout_residual_mm(plain)
    if fit is None or res is None or res > LAYOUT_MAX_RESIDUAL_MM:
        return list(plain)
    used = [d for d in plain if d.label in set(fit["labels"]) and d.confidence >= MIN_CONFIDENCE]
    centre = lambda d: np.array([(d.box_px[0] + d.box_px[2]) / 2, (d.box_px[1] + d.box_px[3]) / 2])  # noqa: E731
    k, R, t, _ = fit_similarity(np.stack([lut[d.label] for d in used]), np.stack([centre(d) for d in used]),
                                np.array([d.confidence for d in used]))
    by_plain = {d.label: d for d in plain}
    out = []
    for d in merged:
        if d is by_plain.get(d.label) or (d.label in lut and
                                          np.linalg.norm(centre(d) - (k * lut[d.label] @ R.T + t)) / k <= GATE_MM):
            out.append(d)
        elif d.label in by_plain:
            out.append(by_plain[d.label])
    return out


def merge(per_pass) -> list:
    """[[Detection, ...], ...] of several passes -> each label's most confident detection, by label."""
    best = {}
    for dets in per_pass:
        for d in dets:
            if d.label not in best or d.confidence > best[d.label].confidence:
                best[d.label] = d
    return [best[k] for k in sorted(best)]
