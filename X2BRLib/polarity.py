"""Films stored as their negative (bone dark, air bright), recognised by the bone detector.

A DICOM file says how its values map to brightness (PhotometricInterpretation MONOCHROME1 or
MONOCHROME2; the reader honours it). A PNG, JPEG or TIFF says nothing, and public collections hold
chest films saved as negatives: in the shared gallery, ``nih_00017625_000_ap.png`` (a portable
film whose ECG leads and burnt-in letters are dark) shows 14 of 45 bones to the detector as stored
and 39 as its negative. The detector learnt bone-bright films, so the count of bones it finds is
the evidence: when a film whose file does not state its polarity shows fewer than
``CHECK_BELOW_BONES`` bones at confidence >= ``CONFIDENCE``, the detector also reads its negative,
and the film is read as its negative when that shows at least ``MIN_GAIN_BONES`` more bones and
``MIN_RATIO`` times as many, with a warning. An image on which the detector sees no bone at all is
refused by the film check as stored; its negative is not tried. Measured on the gallery's 29 frontal films
(``bench/bench_polarity.py``, ``bench/results/polarity_cpu.txt``): as stored every other film shows
at least 5 more bones than its negative.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

CONFIDENCE = 0.25
CHECK_BELOW_BONES = 40  # the recall aim: a film above it is read as it is, no second pass
MIN_GAIN_BONES = 10
MIN_RATIO = 1.5


def bones(detections, confidence: float = CONFIDENCE) -> int:
    return sum(d.confidence >= confidence for d in detections)


def negative(radiograph):
    """The radiograph's negative: image 1 - x inside the exposed field, the collimation border
    (set to 0, no attenuation, by the reader) left at 0."""
    img = 1.0 - np.asarray(radiograph.image, np.float32)
    b = radiograph.meta.get("collimation_border_px") or {}
    h, w = img.shape
    top, bottom, left, right = (int(b.get(k, 0)) for k in ("top", "bottom", "left", "right"))
    img[:top], img[h - bottom:], img[:, :left], img[:, w - right:] = 0.0, 0.0, 0.0, 0.0
    return replace(radiograph, image=img)


def choose(radiograph, detect):
    """Read the film as stored or as its negative. ``detect(radiograph) -> (detections, network
    image, its geometry)`` (the caller's detector and confidence). Returns (radiograph, detections,
    network image, geometry, record for report.json or None when the film's polarity was not in
    question); a film read as its negative carries a warning and ``meta["polarity"]``."""
    dets, image, geom = detect(radiograph)
    n = bones(dets)
    if radiograph.meta.get("format") == "DICOM" or n >= CHECK_BELOW_BONES or not dets:
        return radiograph, dets, image, geom, None  # DICOM states it; no bone at all: the check refuses
    neg = negative(radiograph)
    dets_neg, image_neg, geom_neg = detect(neg)
    m = bones(dets_neg)
    record = {"read_as": "stored", "bones_as_stored": n, "bones_as_negative": m}
    if m >= n + MIN_GAIN_BONES and m >= MIN_RATIO * n:
        record["read_as"] = "negative"
        note = (f"the film looks stored as its negative (bone dark): the detector finds {n} of 45 bones "
                f"as stored, {m} on its negative; reconstructed from the negative")
        neg = replace(neg, meta={**neg.meta, "polarity": record}, warnings=list(neg.warnings) + [note])
        return neg, dets_neg, image_neg, geom_neg, record
    return replace(radiograph, meta={**radiograph.meta, "polarity": record}), dets, image, geom, record
