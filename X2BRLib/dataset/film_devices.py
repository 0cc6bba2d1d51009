"""Things on and in the patient that detector v3's training films lacked (issue 14; dataset
version 6): a dense network of ECG leads and wires with a flat look-up curve (``flat``), and
spinal rods with pedicle screws (``implants``). :mod:`.clinical` draws them (``CLINICAL_RANGES``)
and calls these on the line integrals (leads, metal) and on the processed image (the look-up).
"""
from __future__ import annotations

import numpy as np

from .clinical import _draw, _ecg_layer


def lead_network(shape, box, f: dict, rng: np.random.Generator, px_mm: float) -> np.ndarray:
    """(H, W) in [0, ~2]: ``electrodes`` electrodes with a wire each to the film's edge (as the
    ``ecg`` effect draws them, here 8-16) and ``wires`` more wires and bundles (1.2-3 mm) looping
    across the chest from one electrode to another or to the edge: the dozen leads over a bedside
    chest of the gallery's flat portable film."""
    h, w = shape
    r0, r1, c0, c1 = box
    out = _ecg_layer(shape, box, {"electrodes": int(f["electrodes"])}, rng, px_mm)
    n = int(f["wires"])
    a = np.stack([rng.uniform(c0, c1, n), rng.uniform(r0, r0 + 0.9 * (r1 - r0), n)], 1)
    b = np.stack([rng.uniform(-0.1 * w, 1.1 * w, n), rng.uniform(r0, 1.1 * h, n)], 1)
    width = rng.uniform(1.2, 3.0, n) / px_mm
    value = rng.uniform(100, 200, n)
    bends = rng.normal(0.0, 0.3, (n, 2))

    def draw(d, s):
        t = np.linspace(0, 1, 64)[:, None]
        for p, q, wd, val, bend in zip(a, b, width, value, bends):
            mid = (p + q) / 2 + bend * np.hypot(*(q - p))
            pts = (1 - t) ** 2 * p + 2 * (1 - t) * t * mid + t ** 2 * q
            d.line([tuple(x * s) for x in pts], fill=int(val), width=max(1, int(round(wd * s))))

    return out + 2.0 * _draw(shape, draw)


def spine_track(L: np.ndarray, box, px_mm: float) -> np.ndarray:
    """(H,) float: the spine's column per row on a frontal film. Per row, within the middle 40 %
    of the body, the column where the line integral stands most above its surroundings (fine
    detail minus a 40 mm blur, averaged over a 30 mm wide band: a vertebra's width; the plain
    maximum leans toward the heart and aorta); then a straight line fitted over the chest's rows
    (10-70 % of the body's height: below, the diaphragm and the abdomen's edges compete), rows
    more than 3 MADs off dropped once, continued above and below."""
    from scipy import ndimage

    h, w = L.shape
    r0, r1, c0, c1 = box
    mid, half = 0.5 * (c0 + c1), 0.2 * (c1 - c0)
    lo, hi = int(max(0, mid - half)), int(min(w, mid + half + 1))
    D = ndimage.gaussian_filter(L, 1.0) - ndimage.gaussian_filter(L, max(1.0, 40.0 / px_mm))
    D = ndimage.uniform_filter1d(D, max(1, int(round(30.0 / px_mm))), axis=1)[:, lo:hi]
    rows = np.arange(int(r0 + 0.1 * (r1 - r0)), int(r0 + 0.7 * (r1 - r0)) + 1)
    if len(rows) < 6:
        return np.full(h, mid)
    cols = lo + np.argmax(D[rows], 1).astype(np.float64)
    fit = np.polyfit(rows, cols, 1)
    resid = np.abs(cols - np.polyval(fit, rows))
    keep = resid <= max(1.0, 3.0 * np.median(resid))
    fit = np.polyfit(rows[keep], cols[keep], 1)
    return np.polyval(fit, np.arange(h))


def spinal_implant(L: np.ndarray, box, im: dict, rng: np.random.Generator, px_mm: float) -> np.ndarray:
    """(H, W) in [0, 1]: two rods (``rod_mm`` wide) ``gap_mm`` either side of the spine from
    ``top`` of the body's height down over ``levels`` vertebrae (24-32 mm each), a pedicle screw
    (head and a shaft pointing in and down) at each level on each side, a cross-link with p 0.5."""
    h, w = L.shape
    r0, r1, c0, c1 = box
    track = spine_track(L, box, px_mm)
    level = rng.uniform(24.0, 32.0) / px_mm
    top = r0 + im["top"] * (r1 - r0)
    bottom = top + int(im["levels"]) * level
    gap, rod = im["gap_mm"] / px_mm, im["rod_mm"] / px_mm
    head_r, shaft, shaft_w = 5.0 / px_mm, rng.uniform(12.0, 18.0) / px_mm, 5.0 / px_mm
    cross = rng.uniform() < 0.5
    cross_at = top + rng.uniform(0.3, 0.7) * (bottom - top)

    def at(v):
        return float(np.interp(v, np.arange(h), track))

    def draw(d, s):
        vs = np.linspace(top, bottom, 32)
        for side in (-1, 1):
            d.line([((at(v) + side * gap) * s, v * s) for v in vs], fill=255, width=max(1, int(round(rod * s))))
            for k in range(int(im["levels"])):
                v = top + (k + 0.5) * level
                u = at(v) + side * gap
                d.ellipse([(u - head_r) * s, (v - head_r) * s, (u + head_r) * s, (v + head_r) * s], fill=255)
                d.line([(u * s, v * s), ((u - side * 0.7 * shaft) * s, (v + 0.3 * shaft) * s)], fill=230,
                       width=max(1, int(round(shaft_w * s))))
        if cross:
            d.line([((at(cross_at) - gap) * s, cross_at * s), ((at(cross_at) + gap) * s, cross_at * s)],
                   fill=255, width=max(1, int(round(0.8 * rod * s))))

    return _draw((h, w), draw)


def flat_lut(img: np.ndarray, mask: np.ndarray, slope: float) -> np.ndarray:
    """A flat look-up curve on a film already robust-normalised: the body's middle tones (its 5th
    to 95th percentile) compressed to ``slope`` of their range about their median, what lies below
    (air, dark borders) and above (metal, markers) spread over what is left of [0, 1]. Monotone
    with 0 -> 0 and 1 -> 1, so the film's 0.5th and 99.5th percentiles stay at 0 and 1: read again
    by ``imaging.robust_normalise`` (as every film is) it stays flat, a narrow grey band with faint
    ribs, even when the body fills the film. Piecewise linear; returns [0, 1]."""
    x = np.asarray(img, np.float32)
    lo, m, hi = np.percentile(x[mask], (5, 50, 95))
    lo, hi = max(float(lo), 1e-3), min(float(hi), 1.0 - 1e-3)
    if not lo < m < hi:
        return x
    ylo, yhi = m - slope * (m - lo), m + slope * (hi - m)
    return np.interp(x, [0.0, lo, hi, 1.0], [0.0, ylo, yhi, 1.0]).astype(np.float32)
