"""What of a film is the patient: collimation borders and burnt-in markers.

Both are found on the display values (bone bright, any range) before the intensity
normalisation, so that neither skews it (:func:`X2BRLib.io.radiograph._normalise`):

- :func:`exposed_field`: flat borders along the image edges, bright (the collimator's
  shadow, where no X-rays arrived) or dark (a black border mask or padding added by
  the processing). A border line is a row or column whose pixels are, all but
  ``BORDER_OUTLIERS`` of them, within ``FLAT_TOL`` of the image's maximum (or all within
  it of the minimum); lines are taken from each edge inward while that holds, at most
  ``MAX_BORDER`` of the side (and at least ``MIN_BORDER`` of it). Collimator edges not parallel to the image edges, and
  borders with a scatter gradient wider than ``FLAT_TOL``, are not found (the whole
  image then counts, as before).
- :func:`burnt_in_markers`: small connected blobs saturated at the image's maximum
  inside the field (lead markers "L"/"R", text): each ``MARKER_MIN_PX`` to
  ``MARKER_MAX_FRACTION`` of the field's pixels, with a sharp edge (the median of a
  ring around the blob at least ``MARKER_EDGE`` of the range below the maximum), so
  the saturated centre of a dense bone, whose surroundings are bright too, is no
  marker. Metal (pacemakers, ECG electrodes) with sharp edges counts as a marker.

Pure numpy / scipy; arrays are (H, W) with rows toward the feet.
"""
from __future__ import annotations

import numpy as np

FLAT_TOL = 0.02             # fraction of the image's value range
BORDER_OUTLIERS = 0.05      # share of a border line allowed off the flat value (markers, text)
MAX_BORDER = 0.45           # most of a side a border may take
MIN_BORDER = 0.01           # narrower borders (edge rows of a smooth image, 1-px frames) are ignored
MIN_FIELD = 0.25            # the field must keep at least this share of each side
SATURATED_TOL = 0.005       # fraction of the range below the maximum that still counts as saturated
MARKER_MIN_PX = 9
MARKER_MAX_FRACTION = 0.003
MARKERS_MAX_TOTAL = 0.02    # more saturated pixels than this share: a clipped film, not markers
MARKER_EDGE = 0.25          # a marker's surroundings lie at least this fraction of the range below it


def exposed_field(values: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): border widths in pixels (0 = none) of (H, W) finite values.

    The field is ``values[top:H - bottom, left:W - right]``.
    """
    v = np.asarray(values, np.float32)
    h, w = v.shape
    vmin, vmax = float(v.min()), float(v.max())
    tol = FLAT_TOL * (vmax - vmin)
    if tol <= 0:
        return 0, 0, 0, 0
    bright, dark = v >= vmax - tol, v <= vmin + tol

    def width(mask_lines, n):  # lines from the edge inward, each (L,) bool
        share_b = mask_lines[0].mean(axis=1)
        share_d = mask_lines[1].mean(axis=1)
        ok = (share_b >= 1 - BORDER_OUTLIERS) | (share_d >= 1 - BORDER_OUTLIERS)
        limit = int(MAX_BORDER * n)
        bad = np.flatnonzero(~ok[:limit])
        found = int(bad[0]) if bad.size else limit
        return found if found >= max(2, MIN_BORDER * n) else 0

    top = width((bright, dark), h)
    bottom = width((bright[::-1], dark[::-1]), h)
    left = width((bright.T, dark.T), w)
    right = width((bright.T[::-1], dark.T[::-1]), w)
    if h - top - bottom < MIN_FIELD * h or w - left - right < MIN_FIELD * w:
        return 0, 0, 0, 0
    return top, bottom, left, right


def burnt_in_markers(values: np.ndarray, field=(0, 0, 0, 0)) -> np.ndarray:
    """(H, W) bool: pixels of small saturated blobs inside the field (see the module docstring)."""
    from scipy import ndimage

    v = np.asarray(values, np.float32)
    h, w = v.shape
    top, bottom, left, right = field
    inner = v[top:h - bottom, left:w - right]
    out = np.zeros(v.shape, bool)
    vmin, vmax = float(inner.min()), float(inner.max())
    if vmax <= vmin:
        return out
    sat = inner >= vmax - SATURATED_TOL * (vmax - vmin)
    if sat.mean() > MARKERS_MAX_TOTAL:
        return out
    lab, n = ndimage.label(sat, np.ones((3, 3), bool))
    if n == 0:
        return out
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = (sizes >= MARKER_MIN_PX) & (sizes <= MARKER_MAX_FRACTION * inner.size)
    keep[0] = False
    edge_below = vmax - MARKER_EDGE * (vmax - vmin)
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if not keep[i]:
            continue
        sl = tuple(slice(max(s.start - 3, 0), s.stop + 3) for s in sl)
        blob = lab[sl] == i
        ring = ndimage.binary_dilation(blob, iterations=3) & ~ndimage.binary_dilation(blob)
        keep[i] = ring.any() and float(np.median(inner[sl][ring])) <= edge_below
    out[top:h - bottom, left:w - right] = keep[lab]
    return out


def fill_from_surroundings(values: np.ndarray, mask: np.ndarray, margin_px: int = 2) -> np.ndarray:
    """A copy of values where ``mask`` (grown by margin_px, the blobs' blurred rims) takes the
    value of the nearest pixel outside it."""
    from scipy import ndimage

    out = np.array(values, copy=True)
    if not mask.any():
        return out
    grown = ndimage.binary_dilation(mask, iterations=margin_px) if margin_px > 0 else mask
    if grown.all():
        return out
    _, (ri, ci) = ndimage.distance_transform_edt(grown, return_indices=True)
    out[grown] = out[ri[grown], ci[grown]]
    return out
