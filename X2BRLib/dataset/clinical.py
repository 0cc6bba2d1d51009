"""A clinical film model: what real chest radiographs hold that a DRR of a cropped CT lacks.

Issue 14, item 3. :func:`X2BRLib.dataset.film.develop` calls :func:`attenuate` on the line
integrals (before the detector: physical additions) and :func:`finish` on the processed
image (before its last robust normalisation, so a simulated film ends as a real one read by
:func:`X2BRLib.imaging.robust_normalise`). Every effect has a probability and a documented
range in :data:`CLINICAL_RANGES`; :func:`sample_clinical` draws them from one generator
(``film.sample_film`` seeds it from the case's ``noise_seed``, so the case's other draws
stay what they were), and shapes (wires, letters) come from the drawn ``seed``:
reproducible. Nothing moves or rotates the image: bones stay under their projections.

``dose``: the photon count times ``gain`` (log-uniform): a network-size film is a real film
downsampled, each pixel the mean of many detector pixels, so far less noisy than one pixel.

Line-integral effects (``attenuate``), L dimensionless, ``MU_WATER_PER_MM`` per mm of tissue:
- ``extend``: the prepared CTs are cropped to the chest, so a DRR ends in straight edges where
  the body was cut. Outside the CT's support every pixel takes the line integral of the nearest
  body pixel, fading over ``reach`` x (that tissue's water-equivalent thickness): thick cuts
  (shoulders, neck, abdomen) continue and round off, natural body outlines (L ~ 0) add nothing;
  below the body the abdomen continues ``abdomen_reach`` times farther, above it a neck band
  (``neck_width`` of the body's width) continues to the film's edge.
- ``arms``: soft-tissue cylinders (``arm_radius_mm``) beside the chest, frontal views only.
- ``breasts``: soft-tissue half-ellipsoids over the lower chest (two on a frontal film, one at
  the front of a lateral one), ``breast_mm`` thick at the centre.
- ``ecg``: electrodes (disks with a bright snap) and thin wires (smooth curves) to the field's
  edge, and with ``TUBE_PROBABILITY`` a tube down the midline; metal and plastic add ``wire_L``.
- ``heel``: the anode heel effect, a linear exposure ramp of ``heel`` across the film.
- ``habitus``: a thick patient, ``tissue_mm`` of water at the middle of an elliptic chord across the body.
- ``lungs``: dense lungs (oedema, consolidation): a smooth random field up to ``lung_mm`` of water
  in patches of ``blob`` of the width, plus pleural effusions (per side) rising from the base,
  only where the lungs are (smoothed L below its median over the body).
- ``scatter`` (frontal): grid-less scatter, ``spr`` x the primary blurred over ``scatter_sigma``
  of the width added to it: the chest's contrast is compressed where it is dense; air stays 0.
- ``portable`` (frontal): the bedside branch: ``dose_factor`` x the dose, a blur of ``blur`` of the
  width (motion, focal spot), and each of habitus, lungs, scatter drawn off turned on with
  ``PORTABLE_FORCE``. Exposure control: habitus and lungs raise the dose by exp(mu x their tissue).
- ``flat`` (frontal, portable films only, ``FLAT_PROBABILITY``): a dense network of leads and wires
  (``electrodes``, ``wires``, ``lead_L``) over the chest, and a flat look-up curve (``after_normalise``).
- ``implants`` (frontal): spinal rods and pedicle screws over the thoracolumbar spine (``metal_L``).
  Both are drawn from their own stream (``_sample_gaps``) and drawn by :mod:`.film_devices`.

Image effects (``finish``), image in [0, 1], bone bright:
- ``multiscale``: vendor processing (MUSICA-like): the image split into band-pass layers at
  scales 0.5, 1, 2, ... % of the film width; coarse layers compressed (``low_gain``), fine ones
  boosted (``detail_gain``) through a soft saturation, then a film-like sigmoid look-up curve
  (``lut_center``, ``lut_width``).
- ``collimation``: shutters near the body's edges (hide any straight CT edge left) with a soft
  penumbra; outside them the film is white (unexposed), black (electronic masking) or grey.
- ``flat`` (``after_normalise``, on the film as normalised, last): the body's middle tones
  compressed to ``slope`` of their range, the film's black and white points kept.
- ``markers``: burnt-in text and lead letters (L/R, PA/AP, PORTABLE, ...), bright or dark, in
  the film's corners and upper sides, some on a block.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from ..drr import MU_WATER_PER_MM

CLINICAL_PROBABILITY = 0.85  # share of sample_film's films that get the clinical model
CLINICAL_RANGES = {
    # effect: (probability, {parameter: (low, high)})
    "dose": (1.0, {"gain": (3.0, 30.0)}),  # photons x gain: a 256 px film averages many detector pixels
    "extend": (0.95, {"reach": (0.4, 1.0), "abdomen_reach": (2.0, 6.0), "neck_width": (0.22, 0.38)}),
    "arms": (0.4, {"arm_radius_mm": (35.0, 55.0), "arm_gap_mm": (0.0, 40.0)}),
    "breasts": (0.35, {"breast_mm": (10.0, 40.0), "breast_width": (0.16, 0.24)}),
    "ecg": (0.4, {"electrodes": (2, 9), "wire_L": (0.15, 0.9)}),
    "heel": (0.5, {"heel": (-0.25, 0.25)}),
    "multiscale": (0.8, {"low_gain": (0.4, 0.9), "detail_gain": (1.0, 1.8), "lut_center": (0.4, 0.6),
                         "lut_width": (0.12, 0.3)}),
    "collimation": (0.45, {"margin": (-0.01, 0.12), "penumbra_px": (0.5, 3.0)}),
    "markers": (0.7, {"count": (1, 3), "text_height": (0.02, 0.045)}),
    # bedside (portable AP, ICU) films: added after v2 missed ribs and lower vertebrae on them
    "habitus": (0.25, {"tissue_mm": (20.0, 100.0)}),
    "lungs": (0.25, {"lung_mm": (30.0, 200.0), "blob": (0.04, 0.12), "effusion_mm": (0.0, 150.0),
                     "effusion_height": (0.2, 0.6)}),
    "scatter": (0.35, {"spr": (0.1, 1.0), "scatter_sigma": (0.04, 0.15)}),
    "portable": (0.3, {"dose_factor": (0.2, 1.0), "blur": (0.0, 0.006)}),
    # detector v3's gaps (dataset version 6; bench/README.md "Gallery recall: what detector v3 misses"),
    # drawn from their own stream (_sample_gaps): a film without them is what version 5 made of it.
    # flat: of a portable film, with FLAT_PROBABILITY: a flat, low-contrast look-up curve under a dense
    # network of ECG leads and wires (the gallery's nih_00017625: 15 of 45 bones found, visible but faint)
    "flat": (0.4, {"slope": (0.25, 0.55), "electrodes": (8, 16), "wires": (3, 8), "lead_L": (0.8, 2.0)}),
    # implants: spinal rods and pedicle screws over the thoracolumbar spine, bright metal (the gallery's
    # nih_00027760: ribs 11-12, T9 and L1 missed behind them); a small share of frontal films
    "implants": (0.04, {"levels": (3, 9), "top": (0.45, 0.7), "rod_mm": (5.0, 6.5), "gap_mm": (14.0, 22.0),
                        "metal_L": (1.0, 4.0)}),
}
GAP_EFFECTS = ("flat", "implants")  # drawn by _sample_gaps, not in sample_clinical's loop
# of flat films, the leads dark instead of bright: on the gallery's flat film (nih_00017625) the
# leads and electrodes show darker than the chest behind them (its processing; metal attenuates more)
DARK_LEADS = 0.5
FLAT_PROBABILITY = CLINICAL_RANGES["flat"][0]  # of portable films: 0.85 x 0.3 x 0.4, about 10 % of frontal films
FRONTAL_ONLY = ("arms", "scatter", "portable", "flat", "implants")  # laterals: upright, at a grid (no grid-less haze)
PORTABLE_FORCE = 0.7  # of a portable film: each of habitus, lungs, scatter that was drawn off is turned on
TUBE_PROBABILITY = 0.3  # of a film with ECG leads: also a tube down the midline
_COLLIMATION_FILL = {"white": 0.55, "black": 0.3, "grey": 0.15}
_TEXTS = ("L", "R", "L", "R", "PA", "AP", "AP PORTABLE", "PORTABLE", "SUPINE", "ERECT", "AP ERECT MOBILE",
          "SITTING", "INSP", "1", "2", "L pa", "R ap")


@dataclass
class ClinicalParams:
    """Drawn effects: each is None (off) or a dict of its parameters (see CLINICAL_RANGES)."""

    seed: int
    dose: dict | None = None
    extend: dict | None = None
    arms: dict | None = None
    breasts: dict | None = None
    ecg: dict | None = None
    heel: dict | None = None
    multiscale: dict | None = None
    collimation: dict | None = None
    markers: dict | None = None
    habitus: dict | None = None
    lungs: dict | None = None
    scatter: dict | None = None
    portable: dict | None = None
    flat: dict | None = None
    implants: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "ClinicalParams | None":
        if d is None:
            return None
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def sample_clinical(rng: np.random.Generator, view: str, gaps: bool = True) -> ClinicalParams:
    """Draw every effect (on with its probability; its parameters uniform in their ranges).
    gaps: also GAP_EFFECTS (the builder: train and val films; the test split keeps version 5's films)."""
    cp = ClinicalParams(seed=int(rng.integers(2**31)))
    for name, (p, ranges) in CLINICAL_RANGES.items():
        if name in GAP_EFFECTS:
            continue
        on = rng.uniform() < p
        vals = _uniform_values(rng, ranges)
        if name == "dose":
            vals["gain"] = float(np.exp(rng.uniform(*np.log(ranges["gain"]))))
        if name == "portable":
            vals["dose_factor"] = float(np.exp(rng.uniform(*np.log(ranges["dose_factor"]))))
        if name == "lungs":
            vals["effusion_sides"] = [bool(s) for s in rng.uniform(size=2) < 0.6]  # patient's right, left
        if name in FRONTAL_ONLY and view not in ("PA", "AP"):
            on = False
        if name == "collimation":
            vals["fill"] = str(rng.choice(list(_COLLIMATION_FILL), p=list(_COLLIMATION_FILL.values())))
            vals["sides"] = [bool(s) for s in rng.uniform(size=4) < 0.8]  # left, right, top, bottom
        setattr(cp, name, vals if on else None)
    if cp.portable:  # the bedside branch: less dose, and mostly a thick, hazy, dense chest
        cp.dose["gain"] *= cp.portable["dose_factor"]
        redraw = sample_clinical_effects(rng, ("habitus", "lungs", "scatter"))
        for name, vals in redraw.items():
            if getattr(cp, name) is None and rng.uniform() < PORTABLE_FORCE:
                setattr(cp, name, vals)
    # automatic exposure control: a thicker (or denser) chest gets more photons, so that the
    # detector dose stays about what it was (roughly: half the lungs' added density counts)
    added_mm = (cp.habitus["tissue_mm"] if cp.habitus else 0.0) + (0.5 * cp.lungs["lung_mm"] if cp.lungs else 0.0)
    cp.dose["gain"] *= float(np.exp(MU_WATER_PER_MM * added_mm))
    if gaps:
        _sample_gaps(cp, view)
    return cp


def _sample_gaps(cp: ClinicalParams, view: str) -> None:
    """Draw GAP_EFFECTS from the stream [seed, 3] (the other effects' draws stay as they were):
    ``flat`` only on a portable film, ``implants`` on frontal films; integer ranges inclusive."""
    rng = np.random.default_rng([cp.seed, 3])
    for name in GAP_EFFECTS:
        p, ranges = CLINICAL_RANGES[name]
        on = rng.uniform() < p
        vals = _uniform_values(rng, ranges)
        if name == "flat":  # leads drawn dark with DARK_LEADS: so they show on the gallery's flat film
            vals["dark_leads"] = bool(rng.uniform() < DARK_LEADS)
        if view not in ("PA", "AP") or (name == "flat" and not cp.portable):
            on = False
        setattr(cp, name, vals if on else None)


def _uniform_values(rng: np.random.Generator, ranges: dict) -> dict:
    """Each parameter uniform in its (lo, hi): integers when lo is one (inclusive), else floats."""
    return {k: (int(rng.integers(lo, hi + 1)) if isinstance(lo, int) else float(rng.uniform(lo, hi)))
            for k, (lo, hi) in ranges.items()}


def sample_clinical_effects(rng: np.random.Generator, names) -> dict:
    """{name: parameters} drawn uniform in their CLINICAL_RANGES (no on/off draw)."""
    out = {}
    for name in names:
        out[name] = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in CLINICAL_RANGES[name][1].items()}
        if name == "lungs":
            out[name]["effusion_sides"] = [bool(s) for s in rng.uniform(size=2) < 0.6]
    return out


# ---------------------------------------------------------------------------- geometry of the body
def _body(L: np.ndarray, threshold: float = 0.05):
    """Support of the body in the line integrals: mask (H, W) bool and its bounding box
    (r0, r1, c0, c1), or None when the film is empty."""
    from scipy import ndimage

    mask = ndimage.binary_fill_holes(L > threshold)
    if not mask.any():
        return None, None
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return mask, (rows[0], rows[-1], cols[0], cols[-1])


def _anterior_sign(view: str) -> int:
    """Image column direction of the patient's front on a lateral film (+1: toward higher u)."""
    return -1 if view == "LL" else 1  # LL: columns toward the back; RL: toward the front


def _draw(shape, draw_fn, scale: int = 2) -> np.ndarray:
    """(H, W) float32 in [0, 1]: anti-aliased PIL drawing (draw_fn(ImageDraw, scale)) at scale x."""
    from PIL import Image, ImageDraw

    h, w = shape
    canvas = Image.new("L", (w * scale, h * scale), 0)
    draw_fn(ImageDraw.Draw(canvas), scale)
    return np.asarray(canvas.resize((w, h), Image.BOX), np.float32) / 255.0


# ---------------------------------------------------------------------------- line-integral effects
def attenuate(L: np.ndarray, cp: ClinicalParams, view: str, px_mm: float) -> np.ndarray:
    """(H, W) line integrals -> (H, W) float64 line integrals with the physical effects added.

    px_mm: detector pixel size at the patient (detector spacing / magnification), mm."""
    L = np.array(L, np.float64)
    mask, box = _body(L)
    if mask is None:
        return L
    h, w = L.shape
    rng = np.random.default_rng([cp.seed, 1])
    r0, r1, c0, c1 = box
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
    if cp.extend:
        e = cp.extend
        sides = {"top": (lambda a: a, lambda a: a), "bottom": (np.flipud, np.flipud),
                 "left": (np.transpose, np.transpose), "right": (lambda a: np.flipud(a.T), lambda a: np.flipud(a).T)}
        for side, (fwd, back) in sides.items():
            reach = e["reach"] * (e["abdomen_reach"] if side == "bottom" else 1.0)
            L = back(_extend_top(fwd(L), fwd(mask), px_mm, reach, e["neck_width"] if side == "top" else 0.0))
    if cp.arms:
        a = cp.arms
        r = a["arm_radius_mm"] / px_mm
        for side in (-1, 1):
            uc = (c0 if side < 0 else c1) + side * (a["arm_gap_mm"] / px_mm + r)
            chord = 2.0 * np.sqrt(np.clip(r * r - (uu - uc) ** 2, 0.0, None)) * px_mm
            top = r0 + 0.05 * (r1 - r0)
            fade = np.clip((vv - top) / max(1.0, r), 0.0, 1.0)
            L = L + MU_WATER_PER_MM * chord * fade
    if cp.breasts:
        b = cp.breasts
        rx = b["breast_width"] * (c1 - c0)
        ry = 0.6 * rx
        vc = r0 + rng.uniform(0.55, 0.75) * (r1 - r0)
        if view in ("PA", "AP"):
            centres = [0.5 * (c0 + c1) + s * rng.uniform(0.18, 0.3) * (c1 - c0) for s in (-1, 1)]
        else:
            front = c1 if _anterior_sign(view) > 0 else c0
            centres = [front - _anterior_sign(view) * 0.5 * rx]
        for uc in centres:
            dy = (vv - vc) / np.where(vv < vc, 3.0 * ry, ry)  # fades into the chest wall above
            rr = ((uu - uc) / rx) ** 2 + dy ** 2
            L = L + MU_WATER_PER_MM * b["breast_mm"] * np.sqrt(np.clip(1.0 - rr, 0.0, None))
    if cp.ecg:
        L = L + cp.ecg["wire_L"] * _ecg_layer(L.shape, box, cp.ecg, rng, px_mm)
    if cp.flat or cp.implants:
        from .film_devices import lead_network, spinal_implant

        grng = np.random.default_rng([cp.seed, 4])  # own stream: the other effects' shapes stay
        if cp.flat:
            sign = -0.5 if cp.flat.get("dark_leads") else 1.0  # dark: less than the chest behind (L >= 0 kept)
            L = L + sign * cp.flat["lead_L"] * lead_network(L.shape, box, cp.flat, grng, px_mm)
        if cp.implants:
            # metal saturates at the film's white (the body's 99.5th percentile, where the robust
            # normalisation puts 1): uncapped, its pixels (1-2 % of the film) would set the white point
            # and darken the rest (tried: median grey 0.30 -> 0.10 on one film; the gallery's film with
            # rods keeps an ordinary grey-level spread)
            cap = np.percentile(L[mask], 99.5)
            metal = L + cp.implants["metal_L"] * spinal_implant(L, box, cp.implants, grng, px_mm)
            L = np.maximum(L, np.minimum(metal, cap))
    if cp.heel:
        L = L + cp.heel["heel"] * (vv / max(h - 1, 1) - 0.5)
    if cp.habitus or cp.lungs:
        mask, box = _body(L)  # the body as extended
        L = L + MU_WATER_PER_MM * _soft_tissue(L, mask, box, cp, rng)
    if cp.scatter:
        L = _scatter(L, cp.scatter)
    if cp.portable and cp.portable.get("blur", 0.0) * w > 0.3:  # motion and a large focal spot
        from scipy import ndimage

        L = ndimage.gaussian_filter(L, cp.portable["blur"] * w, mode="nearest")
    return np.maximum(L, 0.0)


def _soft_tissue(L, mask, box, cp: ClinicalParams, rng) -> np.ndarray:
    """(H, W) mm of water-equivalent tissue: ``habitus`` (a thick patient: an elliptic chord
    across the body's width, ``tissue_mm`` at its middle) and ``lungs`` (dense lungs: a smooth
    random field of ``lung_mm`` at most, patches ``blob`` of the width, and per side a pleural
    effusion rising from the lung base over ``effusion_height`` of the body to ``effusion_mm``), the
    lung part only where the smoothed line integral is below its median over the body (the lungs)."""
    from scipy import ndimage

    h, w = L.shape
    out = np.zeros((h, w))
    if mask is None:
        return out
    r0, r1, c0, c1 = box
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
    soft = ndimage.gaussian_filter(mask * 1.0, max(1.0, 0.02 * w))
    if cp.habitus:
        half = 0.5 * (c1 - c0) + 0.05 * w
        chord = np.sqrt(np.clip(1.0 - ((uu - 0.5 * (c0 + c1)) / half) ** 2, 0.0, None))
        out += cp.habitus["tissue_mm"] * chord * soft
    if cp.lungs:
        g = cp.lungs
        Ls = ndimage.gaussian_filter(L, max(1.0, 0.03 * w))
        lung = ndimage.gaussian_filter(((Ls < np.median(Ls[mask])) & mask) * 1.0, max(1.0, 0.02 * w))
        field = ndimage.gaussian_filter(rng.normal(size=(h, w)), max(1.0, g["blob"] * w))
        field = np.clip(0.5 + 0.35 * (field - field.mean()) / max(field.std(), 1e-9), 0.0, 1.0)
        dense = g["lung_mm"] * field
        top = r1 - g["effusion_height"] * (r1 - r0)
        ramp = np.clip((vv - top) / max(1.0, 0.5 * g["effusion_height"] * (r1 - r0)), 0.0, 1.0)
        mid = 0.5 * (c0 + c1)
        for on, side in zip(g["effusion_sides"], (uu < mid, uu >= mid)):  # PA/AP: patient's right on the left
            if on:
                dense = dense + g["effusion_mm"] * ramp * side
        out += dense * lung
    return out


def _scatter(L: np.ndarray, s: dict) -> np.ndarray:
    """Scattered photons of a grid-less exposure: ``spr`` x the primary fluence blurred over
    ``scatter_sigma`` of the width, added to the primary; air stays at L = 0."""
    from scipy import ndimage

    primary = np.exp(-L)
    scattered = s["spr"] * ndimage.gaussian_filter(primary, max(1.0, s["scatter_sigma"] * L.shape[1]), mode="nearest")
    return -np.log((primary + scattered) / (1.0 + s["spr"]))


def _extend_top(L, mask, px_mm: float, reach: float, neck_width: float):
    """Continue a straight (maybe tilted) cut at the top of the body's support upward (other sides:
    the caller flips or transposes). Per column: the mean line integral a little inside the cut
    (past the projected edge's ramp), smoothed along the cut, fading as a cylinder's chord over
    ``reach`` x its water-equivalent thickness; a central neck band (``neck_width`` of the body's width) continues to the edge.
    No straight cut on this side (its first rows do not line up): L unchanged."""
    from scipy import ndimage

    h, w = L.shape
    cols = np.nonzero(mask.any(0))[0]
    if len(cols) < 4:
        return L
    first = np.argmax(mask, 0).astype(np.float64)
    core = cols[int(0.1 * len(cols)):int(0.9 * len(cols)) + 1]
    line = np.polyval(np.polyfit(core, first[core], 1), np.arange(w))  # the cut may be tilted
    resid = np.abs(first - line)
    if np.mean(resid[core] <= max(2, h // 80)) < 0.5:
        return L
    k = max(2, int(round(0.06 * h)))  # past the ramp of the cut seen obliquely by the cone beam
    cut = mask.any(0) & (resid <= k)  # columns of the cut, not the body's flanks
    inner = np.clip(np.round(line).astype(int) + k, 0, h - 1)  # one straight line: no per-column steps
    band_rows = np.clip(inner[None, :] + np.arange(k)[:, None], 0, h - 1)
    e = np.where(cut, L[band_rows, np.arange(w)[None, :]].mean(0), 0.0)
    sig = max(1.0, 0.04 * w)  # soft tissue: no rib or lung pattern; normalised over the cut's columns
    span = np.nonzero(cut)[0]
    span = (np.arange(w) >= span[0]) & (np.arange(w) <= span[-1])  # bridge gaps in the cut
    e = ndimage.gaussian_filter1d(e, sig) / np.maximum(ndimage.gaussian_filter1d(cut * 1.0, sig), 1e-6) \
        * ndimage.gaussian_filter1d(span * 1.0, sig)  # soft ends: rounded, not a slab with corners
    reach_px = reach * e / MU_WATER_PER_MM / px_mm
    if neck_width > 0:
        mid, half = 0.5 * (cols[0] + cols[-1]), 0.5 * neck_width * (cols[-1] - cols[0])
        band = np.clip((half - np.abs(np.arange(w) - mid)) / max(2.0, 0.2 * half), 0.0, 1.0)
    else:
        band = np.zeros(w)
    rows = np.arange(h)[:, None]
    d = (inner[None, :] - rows).astype(np.float64)  # pixels above the inner line
    ext = e * np.sqrt(np.clip(1.0 - np.maximum(d, 0.0) / np.maximum(reach_px, 1e-6), 0.0, 1.0))
    ext = ndimage.gaussian_filter(np.maximum(ext, 0.6 * band * e), max(1.0, 0.006 * h))  # a smooth outline
    # beyond the inner line the ramp of the cut is lifted to the continuation (what is denser, bone,
    # stays), blended over a few rows: no ripple for the processing to sharpen into lines
    return L + np.clip(d / 3.0 + 0.5, 0.0, 1.0) * np.maximum(ext - L, 0.0)


def _ecg_layer(shape, box, e: dict, rng: np.random.Generator, px_mm: float) -> np.ndarray:
    """(H, W) in [0, ~2]: electrodes (ring + snap) and wires from each to the film's edge."""
    h, w = shape
    r0, r1, c0, c1 = box
    n = int(e["electrodes"])
    centres = np.stack([rng.uniform(c0, c1, n), rng.uniform(r0, r0 + 0.85 * (r1 - r0), n)], 1)
    rad = rng.uniform(4.0, 8.0, n) / px_mm
    ends = []
    for u, v in centres:  # each wire leaves toward the nearest side or the bottom
        side = rng.integers(3)
        ends.append((rng.uniform(-0.1, 0.0) * w if side == 0 else (w * rng.uniform(1.0, 1.1) if side == 1
                     else rng.uniform(0, w)), h * rng.uniform(1.0, 1.1) if side == 2 else rng.uniform(0, h)))
    width_px = max(1.0, 1.2 / px_mm)
    tube = rng.uniform() < TUBE_PROBABILITY
    tube_x = 0.5 * (c0 + c1) + rng.uniform(-0.05, 0.05) * (c1 - c0)
    tube_end = r0 + rng.uniform(0.2, 0.9) * (r1 - r0)
    bends = rng.normal(0.0, 0.25, (n, 2))

    def draw(d, s):
        for (u, v), r, (eu, ev), bend in zip(centres, rad, ends, bends):
            mid = np.array([(u + eu) / 2, (v + ev) / 2]) + bend * np.hypot(eu - u, ev - v)
            t = np.linspace(0, 1, 64)[:, None]
            pts = (1 - t) ** 2 * np.array([u, v]) + 2 * (1 - t) * t * mid + t ** 2 * np.array([eu, ev])
            d.line([tuple(p * s) for p in pts], fill=140, width=max(1, int(round(width_px * s))))
            d.ellipse([(u - r) * s, (v - r) * s, (u + r) * s, (v + r) * s], outline=200,
                      width=max(1, int(round(0.25 * r * s))))
            d.ellipse([(u - 0.3 * r) * s, (v - 0.3 * r) * s, (u + 0.3 * r) * s, (v + 0.3 * r) * s], fill=255)
        if tube:
            d.line([(tube_x * s, -2), ((tube_x + 0.02 * w) * s, tube_end * s)], fill=110,
                   width=max(1, int(round(2.5 * width_px * s))))

    return 2.0 * _draw(shape, draw)


# ---------------------------------------------------------------------------- image effects
def finish(img: np.ndarray, cp: ClinicalParams, L: np.ndarray) -> np.ndarray:
    """(H, W) processed image in [0, 1] -> (H, W) float32 with processing, collimation and
    markers. L: the line integrals (with attenuate's effects), for the body's extent."""
    img = np.asarray(img, np.float32)
    h, w = img.shape
    rng = np.random.default_rng([cp.seed, 2])
    if cp.multiscale:
        img = _multiscale(img, cp.multiscale)
    mask, box = _body(L)
    if cp.collimation and box is not None:
        img = _collimate(img, box, cp.collimation, rng)
    if cp.markers:
        img = _markers(img, cp.markers, rng)
    return img.astype(np.float32)


def after_normalise(img: np.ndarray, cp: ClinicalParams, L: np.ndarray) -> np.ndarray:
    """The film as robust-normalised -> the film with ``flat``'s look-up curve (monotone, 0 and 1
    kept: a second normalisation changes nothing). Other effects: unchanged."""
    if not cp.flat:
        return img
    from .film_devices import flat_lut

    mask, _ = _body(L)
    return img if mask is None else flat_lut(img, mask, cp.flat["slope"])


def _multiscale(img: np.ndarray, m: dict) -> np.ndarray:
    """Band-pass layers at 0.5, 1, 2, 4, 8, 16 % of the width: the finest (noise) kept, the next
    ones boosted through a soft saturation, coarse ones compressed; then a sigmoid look-up curve. Returns [0, 1]."""
    from scipy import ndimage

    w = img.shape[1]
    sig = [max(0.5, f * w) for f in (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)]
    lows = [img] + [ndimage.gaussian_filter(img, s) for s in sig]
    out = lows[-1] * m["low_gain"]
    for k in range(len(sig)):
        band = lows[k] - lows[k + 1]
        gain = 1.0 if k == 0 else np.interp(k, [1, len(sig) - 1], [m["detail_gain"], m["low_gain"]])
        amp = float(np.percentile(np.abs(band), 99)) + 1e-6
        out = out + gain * amp * np.tanh(band / amp)
    lo, hi = np.percentile(out, (0.5, 99.5))
    x = (out - lo) / max(hi - lo, 1e-6)
    y = 1.0 / (1.0 + np.exp(-(x - m["lut_center"]) / m["lut_width"]))
    y0, y1 = 1.0 / (1.0 + np.exp(m["lut_center"] / m["lut_width"])), \
        1.0 / (1.0 + np.exp(-(1.0 - m["lut_center"]) / m["lut_width"]))
    return np.clip((y - y0) / (y1 - y0), 0.0, 1.0)


def _collimate(img, box, c: dict, rng) -> np.ndarray:
    """Shutters at ``margin`` (fraction of the body's size; < 0: just inside it) beyond the body's
    box on the drawn sides, a soft penumbra; outside them a white, black or grey fill."""
    from scipy import ndimage

    h, w = img.shape
    r0, r1, c0, c1 = box
    bw, bh = c1 - c0, r1 - r0
    m = [c["margin"] + rng.uniform(-0.01, 0.03) for _ in range(4)]
    edges = [c0 - m[0] * bw, c1 + m[1] * bw, r0 - m[2] * bh, r1 + m[3] * bh]
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = np.ones((h, w), np.float32)
    for on, d in zip(c["sides"], (uu - edges[0], edges[1] - uu, vv - edges[2], edges[3] - vv)):
        if on:
            inside = np.minimum(inside, np.clip(d + 0.5, 0.0, 1.0))
    inside = ndimage.gaussian_filter(inside, c["penumbra_px"])
    fill = {"white": rng.uniform(0.9, 1.0), "black": rng.uniform(0.0, 0.08), "grey": rng.uniform(0.3, 0.7)}[c["fill"]]
    fill = fill + rng.normal(0.0, 0.01, img.shape)
    return img * inside + fill * (1.0 - inside)


def _markers(img, mk: dict, rng) -> np.ndarray:
    """Burnt-in text and lead letters in the corners and upper sides; some on a block."""
    from PIL import ImageFont

    h, w = img.shape
    out = img.copy()
    for _ in range(int(mk["count"])):
        text = str(rng.choice(_TEXTS))
        size = max(6, int(round(mk["text_height"] * h * rng.uniform(0.8, 1.3))))
        font = ImageFont.load_default(size=2 * size)
        x = rng.choice([rng.uniform(0.01, 0.18), rng.uniform(0.7, 0.95)]) * w
        y = rng.choice([rng.uniform(0.01, 0.15), rng.uniform(0.15, 0.4), rng.uniform(0.8, 0.93)]) * h
        bright = rng.uniform() < 0.8
        block = rng.uniform() < 0.25

        def draw(d, s, text=text, font=font, x=x, y=y):
            d.text((x * s, y * s), text, fill=255, font=font)

        ink = _draw(img.shape, draw)
        if block:
            from scipy import ndimage

            pad = ndimage.binary_dilation(ink > 0.1, iterations=max(2, size // 3))
            rows, cols = np.nonzero(pad.any(1))[0], np.nonzero(pad.any(0))[0]
            if len(rows):
                bg = 0.05 if bright else 0.95
                out[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = bg
        value = rng.uniform(0.92, 1.0) if bright else rng.uniform(0.0, 0.1)
        out = out * (1.0 - ink) + value * ink
    return out
