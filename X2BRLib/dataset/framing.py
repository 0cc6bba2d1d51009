"""Framing: frontal films whose field is magnified and off-centre (issue 14, detector v3's gaps).

Detector v3 missed plainly visible bones on a magnified, off-centre bedside film (the gallery's
mhh_40f355ec: the left shoulder fills the upper right corner, the right chest is cut off by the
field's left edge; ``bench/README.md``, "Gallery recall: what detector v3 misses"): a framing its
training films lacked (their field is the whole 43 cm detector centred on the chest; the
detector training's ``translate`` 0.12 / ``scale`` 0.4 augmentation moves and scales the whole
film but rarely cuts a side of the chest off at a shoulder's size).

A framed film is a smaller part of the detector, shown at the same pixel count: the pixel
spacing divided by ``zoom`` and the pixel grid's centre moved in the detector plane by
(``shift_u``, ``shift_v``) x the unframed field's width. That is still one
:class:`~X2BRLib.geometry.ProjectionGeometry` (the principal point moves off the film's centre),
so the DRR, the ground truth, the occupancy samples and the bone boxes all follow the one
geometry the case records; nothing is cropped or resampled after rendering. Bones cut by the
field's edge get clipped boxes, bones mostly outside none (``builder.bone_boxes``).

Who gets it: ``x2br build-dataset --framing P`` draws it for a share P of train and val cases'
frontal films (off by default; lateral films and the test split never: the test split stays
comparable with earlier versions, and X2B's reconstruction assumes a chest-centred film), from
the case's own stream ``[seed, split, index, 3]``: a case's other draws stay what they were.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import streams

# zoom: log-uniform; a 43 cm field magnified 1.15-1.8x shows 24-37 cm of the detector, a chest
# about 30-35 cm wide: one side is cut. shift_u: toward one side (sign drawn), so the other
# shoulder nears a corner; shift_v: mostly toward the head (negative: up), as bedside films lift
# the field to the neck and shoulders. Fractions of the unframed field's width.
FRAMING_RANGES = {"zoom": (1.15, 1.8), "shift_u": (0.04, 0.2), "shift_v": (-0.15, 0.05)}
FRAMING_STREAM = streams.FRAMING  # the case stream [seed, split, index, 3] (streams.py)


def sample_framing(rng: np.random.Generator) -> dict:
    """One framing: {"zoom", "shift_u", "shift_v"} drawn from FRAMING_RANGES."""
    r = FRAMING_RANGES
    return {"zoom": float(np.exp(rng.uniform(*np.log(r["zoom"])))),
            "shift_u": float(rng.choice([-1.0, 1.0]) * rng.uniform(*r["shift_u"])),
            "shift_v": float(rng.uniform(*r["shift_v"]))}


def draw_framing(seed: int, split_id: int, index: int, probability: float) -> dict | None:
    """The framing of a case (None: the usual field), deterministic per case."""
    return streams.draw_optional(seed, split_id, index, FRAMING_STREAM, probability, sample_framing)


def framed(geom, framing: dict | None):
    """The geometry of a framed film: spacing / zoom, the pixel grid's centre moved by the shifts
    (fractions of the unframed field's width) along the detector's columns and rows."""
    if not framing:
        return geom
    field_mm = geom.spacing_mm[0] * geom.width
    centre = geom.detector + field_mm * (framing["shift_u"] * np.array(geom.u_dir)
                                         + framing["shift_v"] * np.array(geom.v_dir))
    z = float(framing["zoom"])
    return replace(geom, detector_center_lps_mm=tuple(centre),
                   spacing_mm=(geom.spacing_mm[0] / z, geom.spacing_mm[1] / z))
