"""Reading chest radiographs into one normalised type, :class:`Radiograph`.

Supported files: DICOM (CR, DX; by extension, by the ``DICM`` preamble or as a bare
data set without file meta; compressed or not, see :mod:`X2BRLib.io.dicom_read`),
PNG / JPEG / TIFF (8 or 16 bit, grey or colour) through
Pillow, and 2D NRRD / NIfTI / MHA / MHD through SimpleITK (a 3D file holding a
single slice is accepted). Every problem with the input raises
:class:`~X2BRLib.errors.InputError` naming the problem and the file; every
assumption made in place of missing information (pixel spacing, view) is
listed in ``Radiograph.warnings`` and also issued through :mod:`warnings`.
Reading never writes anything.

Image convention (all formats): ``image[row, column]``, (H, W) float32 in
[0, 1], attenuation high = bright (bone bright, as a film is displayed);
columns toward the patient's left, rows toward the feet (see
:mod:`X2BRLib.geometry`). Intensities are normalised by mapping the 0.5 and
99.5 percentiles of the (display-transformed) pixel values to 0 and 1 and
clipping (the full min / max when those percentiles coincide, e.g. a mostly
empty image); the window used is kept in ``meta["intensity_window"]``. Flat
collimation borders are left out of the percentiles and set to 0, burnt-in
markers take the values around them (:mod:`X2BRLib.io.film_field`; widths in
``meta["collimation_border_px"]``, marker pixels in ``meta["burnt_in_marker_px"]``).
"""
from __future__ import annotations

import math
import os
import warnings as _warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from X2BRLib.errors import InputError
from X2BRLib.io.atomic import atomic_write
from X2BRLib.geometry import DEFAULT_OBJECT_TO_DETECTOR_MM, LATERAL_VIEWS, VIEWS, ProjectionGeometry
from X2BRLib.imaging import NORMALISE_PERCENTILES

DEFAULT_SPACING_MM = 0.143  # a common flat-panel detector pitch, used when the file gives none
MIN_SIDE_PX, MAX_SIDE_PX = 64, 8192
PERCENTILES = NORMALISE_PERCENTILES  # shared with the dataset builder
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_ITK_SUFFIXES = {".nrrd": "NRRD", ".nhdr": "NRRD", ".nii": "NIfTI", ".nii.gz": "NIfTI",
                 ".mha": "MetaImage", ".mhd": "MetaImage"}
_NOT_RADIOGRAPH_MODALITIES = {"CT", "MR", "PT", "NM", "US", "OCT", "SEG", "RTDOSE", "RTSTRUCT",
                              "RTPLAN", "RTIMAGE", "SR", "PR", "KO", "ECG", "REG"}
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's "L" conversion
# DICOM ViewPosition values of a lateral film; LATERAL / LAT leave the side to PatientOrientation
LATERAL_VIEW_POSITIONS = ("LL", "RL", "LATERAL", "LAT")
# the column direction (PatientOrientation's first letter) each lateral view is displayed with
LATERAL_COLUMNS = {"LL": "P", "RL": "A"}


class RadiographWarning(UserWarning):
    """An assumption was made while reading a radiograph."""


class SpacingWarning(RadiographWarning):
    """The pixel spacing was missing or invalid; a default was used."""


@dataclass
class Radiograph:
    """A chest radiograph ready for X2BR.

    image: (H, W) float32 in [0, 1], bone bright; rows toward the feet,
        columns toward the patient's left.
    geometry: its camera; ``geometry.size_px == (W, H)`` and
        ``geometry.spacing_mm`` = (column, row) detector pixel spacing in mm.
    path: the file read, or None.
    meta: flat JSON-able facts: format, modality, view, view_source, photometric,
        spacing_mm, spacing_source ('ImagerPixelSpacing' | 'PixelSpacing' | 'file' |
        'default' | 'none'; X2BRLib.scale may set 'user' | 'estimate' | 'default'), sdd_mm,
        sdd_source, object_to_detector_mm, magnification,
        original_dtype, original_shape, intensity_window, ...
    warnings: human-readable assumptions made while reading.
    """

    image: np.ndarray
    geometry: ProjectionGeometry
    path: str | None = None
    meta: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


class _Notes(list):
    """(message, category) pairs gathered while reading, issued once the read succeeds."""

    def add(self, message: str, category=RadiographWarning):
        self.append((message, category))


# ---------------------------------------------------------------------- public API
def read_radiograph(path, default_spacing_mm: float = DEFAULT_SPACING_MM, view=None,
                    default_view: str = "PA") -> Radiograph:
    """Read a radiograph file into a :class:`Radiograph` (see the module docstring).

    default_spacing_mm: detector pixel spacing used when the file has none (or an
        invalid one: zero, negative, NaN; or the exactly 1 x 1 mm ITK reports for NRRD / NIfTI /
        MHA files without spacing); defaults to DEFAULT_SPACING_MM = 0.143 mm. Using it always
        adds a warning and issues a :class:`SpacingWarning`. None: leave it to the caller
        (``X2BRLib.scale`` estimates it): no warning, ``meta["spacing_source"] = "none"``,
        ``meta["spacing_why"]`` says why, and the geometry holds DEFAULT_SPACING_MM as a placeholder.
    view: 'PA', 'AP', 'LL' or 'RL' to override the file's ViewPosition (DICOM); when neither
        is known PA is assumed, with a warning. A lateral film (ViewPosition LL, RL, LATERAL or
        LAT, or view 'LL' / 'RL') is displayed as :mod:`X2BRLib.geometry` says: columns toward the
        patient's back (LL) or front (RL), flipped from its PatientOrientation when that runs the
        other way (a note says so); LATERAL / LAT take the side from PatientOrientation
        (``P\\F``: LL, ``A\\F``: RL), else LL with a note.
    default_view: the view assumed (with a warning) when neither ``view`` nor the file gives
        one: 'PA' for the film, 'LL' for the lateral of a pair.

    DICOM: the modality LUT (RescaleSlope/Intercept) and the VOI LUT or window are
    applied, MONOCHROME1 is inverted; spacing comes from ImagerPixelSpacing (detector
    plane) or else PixelSpacing (patient plane, multiplied back by the magnification
    when known); SDD from DistanceSourceToDetector and the object-to-detector distance
    from DistanceSourceToDetector - DistanceSourceToPatient.
    """
    p = Path(os.fspath(path))
    for value in (view, default_view):
        if value is not None and str(value).upper() not in VIEWS:
            raise InputError(f"view must be one of {', '.join(VIEWS)}, got {value!r}", p)
    if default_spacing_mm is not None and _positive(default_spacing_mm) is None:
        raise InputError(f"default_spacing_mm must be a positive number, got {default_spacing_mm!r}")
    if not p.exists():
        raise InputError("file not found", p)
    if p.is_dir():
        raise InputError("is a folder, not a radiograph file", p)
    if p.stat().st_size == 0:
        raise InputError("empty file (0 bytes)", p)

    notes, kind = _Notes(), _sniff(p)
    try:
        if kind == "dicom":
            arr, info = _read_dicom(p, notes, None if view is None else str(view).upper(),
                                    str(default_view).upper())
        else:
            arr, info = {"itk": _read_itk, "pillow": _read_pillow}[kind](p, notes)
    except InputError:
        raise
    except Exception as e:  # library errors: unreadable, truncated, undecodable
        what = {"dicom": "a DICOM file", "itk": "an ITK image",
                "pillow": "an image (DICOM, PNG, JPEG, TIFF, NRRD, NIfTI, MHA)"}[kind]
        detail = [ln for ln in str(e).splitlines() if ln.strip()] or [""]
        raise InputError(f"cannot be read as {what}: {type(e).__name__}: {detail[-1]}", p) from e

    image, window, field = _normalise(arr, p, notes)
    meta = dict(info.pop("meta"))
    meta.update(original_shape=list(np.shape(arr)[:2]), intensity_window=window, **field)

    spacing, src = info.get("spacing"), info.get("spacing_source", "default")
    if spacing is None or not all(math.isfinite(s) and s > 0 for s in spacing):
        why = info.get("spacing_why") or "the file gives none"
        if default_spacing_mm is None:  # the caller decides (X2BRLib.scale)
            spacing, src = (DEFAULT_SPACING_MM,) * 2, "none"
            meta["spacing_why"] = why
        else:
            notes.add(f"no valid pixel spacing ({why}); using the default {default_spacing_mm} mm, "
                      "so physical sizes are only as right as this guess", SpacingWarning)
            spacing, src = (_positive(default_spacing_mm),) * 2, "default"

    if view is not None:
        v, v_src = str(view).upper(), "argument"
    elif info.get("view") in VIEWS:
        v, v_src = info["view"], info.get("view_source", "ViewPosition")
    else:
        v, v_src = str(default_view).upper(), "default"
        notes.add("view (PA/AP) unknown; assuming PA" if v == "PA" else
                  f"view unknown; assuming {v}" + (" (the patient's left side on the detector, the back on the "
                                                   "right of the image)" if v == "LL" else ""))

    sdd, otd = info.get("sdd_mm"), info.get("object_to_detector_mm")
    try:
        geom = ProjectionGeometry.chest(
            v, size_px=(image.shape[1], image.shape[0]), spacing_mm=spacing, sdd_mm=sdd,
            object_to_detector_mm=otd if otd is not None or v in LATERAL_VIEWS else DEFAULT_OBJECT_TO_DETECTOR_MM)
    except ValueError as e:
        raise InputError(f"inconsistent acquisition geometry (SDD {sdd} mm, object-to-detector "
                         f"{otd} mm): {e}", p) from e
    meta.update(view=v, view_source=v_src, spacing_mm=list(geom.spacing_mm), spacing_source=src,
                sdd_mm=geom.sdd_mm, sdd_source="DistanceSourceToDetector" if sdd else "default",
                object_to_detector_mm=geom.sdd_mm - geom.sod_mm,
                geometry_magnification=geom.magnification)
    meta.setdefault("magnification", None)
    for message, category in notes:
        _warnings.warn(f"{p}: {message}", category, stacklevel=2)
    return Radiograph(image, geom, str(p), meta, [m for m, _ in notes])


def to_network_input(radiograph: Radiograph, size_px=(256, 256), field_mm=None):
    """Resample a radiograph onto the square detector the network sees.

    The field of view is a square of side ``field_mm`` (default: the larger physical
    extent of the image) centred on the same detector centre; the image is padded
    with 0 (no attenuation) where it does not cover the field and area-averaged onto
    ``size_px`` = (w, h) pixels (exact box filtering for downsampling, nearest-like for
    upsampling). Returns (image (h, w) float32 in [0, 1], ProjectionGeometry) with the
    same source, detector centre, view and isocentre and spacing field_mm / size.
    """
    img = np.asarray(radiograph.image, np.float32)
    g = radiograph.geometry
    if img.ndim != 2 or (img.shape[1], img.shape[0]) != tuple(g.size_px):
        raise InputError(f"image shape {img.shape} does not match geometry size_px {g.size_px}",
                         radiograph.path)
    w, h = int(size_px[0]), int(size_px[1])
    if w < 1 or h < 1:
        raise InputError(f"size_px must be two positive integers, got {size_px!r}")
    su, sv = g.spacing_mm
    if field_mm is None:
        field_mm = max(img.shape[1] * su, img.shape[0] * sv)
    if _positive(field_mm) is None:
        raise InputError(f"field_mm must be a positive number, got {field_mm!r}")
    field_mm = float(field_mm)
    cols = _area_weights(img.shape[1], su, w, field_mm / w)  # (w, W)
    rows = _area_weights(img.shape[0], sv, h, field_mm / h)  # (h, H)
    out = (rows @ img) @ cols.T
    geom = replace(g, spacing_mm=(field_mm / w, field_mm / h), size_px=(w, h))
    return np.clip(out, 0.0, 1.0).astype(np.float32), geom


def write_radiograph_png(path, image, overwrite: bool = False) -> str:
    """Write an (H, W) image in [0, 1] (values clipped) as a 16-bit greyscale PNG.

    The file is written to a temporary file in the same folder, then renamed into
    place. An existing file is refused (InputError) unless ``overwrite=True``.
    PNG carries no pixel spacing: readers will fall back to the default. Returns the path.
    """
    from PIL import Image

    p = Path(os.fspath(path))
    arr = np.asarray(image, dtype=float)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"image must be a non-empty 2D array, got shape {arr.shape}", p)
    if not np.isfinite(arr).all():
        raise InputError("image has NaN or infinite values", p)
    if p.suffix.lower() != ".png":
        raise InputError("file name must end in .png", p)
    if p.exists() and not overwrite:
        raise InputError("file exists; pass overwrite=True to replace it", p)
    if not p.parent.is_dir():
        raise InputError("folder does not exist", p)
    u16 = np.round(np.clip(arr, 0.0, 1.0) * 65535.0).astype(np.uint16)
    atomic_write(p, lambda tmp: Image.fromarray(u16).save(tmp, format="PNG"), overwrite=overwrite)
    return str(p)


# ---------------------------------------------------------------------- helpers
def _sniff(p: Path) -> str:
    name = p.name.lower()
    if name.endswith(_DICOM_SUFFIXES):
        return "dicom"
    if any(name.endswith(s) for s in _ITK_SUFFIXES):
        return "itk"
    with open(p, "rb") as f:
        head = f.read(132)
    return "dicom" if head[128:132] == b"DICM" or _bare_dicom(head) else "pillow"


def _bare_dicom(head: bytes) -> bool:
    """A data set without preamble (old PACS exports): it starts with an element of group
    0002 or 0008, little endian, then an explicit VR (two capitals) or a short length."""
    if len(head) < 8 or head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    vr = head[4:6]
    return (vr.isalpha() and vr.isupper()) or int.from_bytes(head[4:8], "little") < 1024


def _check_shape(h: int, w: int, p: Path):
    if h == 0 or w == 0:
        raise InputError(f"empty image ({w} x {h} pixels)", p)
    if min(h, w) < MIN_SIDE_PX or max(h, w) > MAX_SIDE_PX:
        raise InputError(f"implausible radiograph size {w} x {h} pixels (each side must be "
                         f"{MIN_SIDE_PX} to {MAX_SIDE_PX} pixels)", p)


COLOUR_MIN_DIFF = 0.05   # of the image's range: a pixel whose channels differ by more is coloured
COLOUR_MIN_SHARE = 0.01  # of the pixels: more coloured ones make a colour image (JPEG chroma noise,
                         # a small coloured annotation do not; the gallery's RGB films: none)


def looks_coloured(rgb: np.ndarray) -> bool:
    """(..., >= 3) channels last -> is it a colour image, not grey stored as RGB? (reader and Slicer)"""
    rgb = np.asarray(rgb, np.float32)[..., :3].reshape(-1, 3)
    if not rgb.size:
        return False
    diff = np.abs(rgb - rgb[:, :1]).max(1)
    return float((diff > COLOUR_MIN_DIFF * max(float(np.ptp(rgb)), 1e-12)).mean()) > COLOUR_MIN_SHARE


def _luminance(arr: np.ndarray, notes: _Notes) -> np.ndarray:
    """(H, W, C) colour -> (H, W) float luminance; warns when the channels differ."""
    arr = np.asarray(arr, float)
    if arr.shape[2] in (2, 4) and np.ptp(arr[..., -1]) > 0:
        notes.add("the alpha channel is not uniform and was ignored")
    if arr.shape[2] < 3:
        return arr[..., 0]
    rgb = arr[..., :3]
    if looks_coloured(rgb[::max(1, rgb.shape[0] // 1000), ::max(1, rgb.shape[1] // 1000)]):
        notes.add("colour image (RGB channels differ): converted to luminance; "
                  "a radiograph should be greyscale")
    return rgb @ _LUMA


def _normalise(arr, p: Path, notes: _Notes):
    """Map the 0.5 / 99.5 percentiles of the exposed field to 0 / 1 and clip.

    Flat collimation borders (:func:`~X2BRLib.io.film_field.exposed_field`) are left out
    of the percentiles and set to 0 (no attenuation, as the padding of
    :func:`to_network_input`); burnt-in markers take the values around them.
    Returns (image float32, [lo, hi], facts for meta)."""
    from X2BRLib.io.film_field import burnt_in_markers, exposed_field, fill_from_surroundings

    arr = np.asarray(arr, np.float32 if np.asarray(arr).dtype.itemsize <= 2 else np.float64)
    _check_shape(arr.shape[0], arr.shape[1], p)
    finite = np.isfinite(arr)
    all_finite = bool(finite.all())
    if not finite.any():
        raise InputError("no finite pixel values (all NaN or infinite)", p)
    if not all_finite:
        notes.add(f"{int((~finite).sum())} NaN/infinite pixels set to the background")
    vals = arr if all_finite else arr[finite]
    lo, hi = float(vals.min()), float(vals.max())
    if hi <= lo:
        raise InputError(f"constant image (every pixel is {lo:g}): nothing to reconstruct", p)
    if not all_finite:
        arr = np.where(finite, arr, lo)
    top, bottom, left, right = field = exposed_field(arr)
    markers = burnt_in_markers(arr, field)
    arr = fill_from_surroundings(arr, markers)
    h, w = arr.shape
    inner = arr[top:h - bottom, left:w - right]
    step = max(1, int(math.sqrt(inner.size / 4e6)))  # percentiles on <= ~4 M samples
    sample = inner[::step, ::step]
    plo, phi = (float(x) for x in np.percentile(sample, PERCENTILES))
    if phi > plo:
        lo, hi = plo, phi
    out = ((arr - lo) * (1.0 / (hi - lo))).astype(np.float32)
    if not all_finite:
        out[~finite] = 0.0
    out[:top], out[h - bottom:], out[:, :left], out[:, w - right:] = 0.0, 0.0, 0.0, 0.0
    facts = {"collimation_border_px": {"top": top, "bottom": bottom, "left": left, "right": right},
             "burnt_in_marker_px": int(markers.sum())}
    return np.clip(out, 0.0, 1.0, out=out), [lo, hi], facts


def _area_weights(n_in: int, s_in: float, n_out: int, s_out: float) -> np.ndarray:
    """(n_out, n_in) float32: share of output pixel k covered by input pixel i; both
    grids are centred on the same point, input pixel pitch s_in, output pitch s_out."""
    e_in = (np.arange(n_in + 1) - n_in / 2.0) * s_in
    e_out = (np.arange(n_out + 1) - n_out / 2.0) * s_out
    overlap = (np.minimum(e_out[1:, None], e_in[None, 1:])
               - np.maximum(e_out[:-1, None], e_in[None, :-1]))
    return (np.clip(overlap, 0.0, None) / s_out).astype(np.float32)


def _positive(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _pair(ds, key):
    """DICOM (row, column) spacing -> (column, row) floats, or None if absent/invalid."""
    v = ds.get(key)
    if v is None:
        return None
    try:
        vals = [_positive(x) for x in v]
    except TypeError:  # a single value
        vals = [_positive(v)]
    return (vals[1], vals[0]) if len(vals) == 2 and None not in vals else None


# ---------------------------------------------------------------------- readers
def _read_dicom(p: Path, notes: _Notes, view: str | None = None, default_view: str = "PA"):
    from X2BRLib.io.dicom_read import decode_pixels, display_values, read_dataset, transfer_syntax

    ds, file_meta_note = read_dataset(p)
    modality = str(ds.get("Modality", "") or "").upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(f"multi-frame DICOM ({frames} frames, Modality {modality or '?'}): "
                         "expected a single radiograph", p)
    if modality in _NOT_RADIOGRAPH_MODALITIES and "LOCALIZER" not in str(ds.get("ImageType", "")).upper():
        raise InputError(f"DICOM Modality {modality} is not a projection radiograph", p)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(f"DICOM file has no pixel data (Modality {modality or '?'})", p)
    pi = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if pi not in ("MONOCHROME1", "MONOCHROME2", "RGB"):
        raise InputError(f"unsupported photometric interpretation {pi or 'missing'!r} "
                         "(supported: MONOCHROME1, MONOCHROME2, RGB)", p)
    _check_shape(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), p)
    stored = decode_pixels(ds, p)
    ts_uid, ts_name = transfer_syntax(ds)
    meta = dict(format="DICOM", modality=modality or None, photometric=pi, original_dtype=str(stored.dtype),
                transfer_syntax=ts_name, transfer_syntax_uid=ts_uid, file_meta=file_meta_note is None,
                burned_in_annotation=str(ds.get("BurnedInAnnotation", "") or "").upper() or None,
                voi_applied=False, inverted=False)
    if file_meta_note:
        meta["file_meta_note"] = file_meta_note
    if pi == "RGB":
        arr = _luminance(stored, notes)
    else:
        arr = display_values(ds, stored, meta, notes)

    vp = str(ds.get("ViewPosition", "") or "").strip().upper()
    meta["view_position"] = vp or None
    lateral, lateral_source = _lateral_view(view, vp, ds, notes, default_view)
    arr = _orient_dicom(arr, ds, meta, notes, lateral)
    meta.update(_identity(ds))
    sdd, sod = _positive(ds.get("DistanceSourceToDetector")), _positive(ds.get("DistanceSourceToPatient"))
    both = bool(sdd and sod and sod < sdd)
    mag = sdd / sod if both else _positive(ds.get("EstimatedRadiographicMagnificationFactor"))
    meta["magnification"] = mag
    info = dict(meta=meta, sdd_mm=sdd, object_to_detector_mm=sdd - sod if both else None)
    ips, ps = _pair(ds, "ImagerPixelSpacing"), _pair(ds, "PixelSpacing")
    if ips:
        info.update(spacing=ips, spacing_source="ImagerPixelSpacing")
    elif ps:
        if mag:
            info.update(spacing=(ps[0] * mag, ps[1] * mag), spacing_source="PixelSpacing")
            meta["spacing_note"] = (f"PixelSpacing is at the patient; detector spacing = "
                                    f"PixelSpacing x magnification {mag:.4g}")
        else:
            info.update(spacing=ps, spacing_source="PixelSpacing")
            notes.add("only PixelSpacing (patient plane) is given and the magnification is "
                      "unknown: used as the detector spacing, sizes may be off by ~5-10 %")
    elif "ImagerPixelSpacing" in ds or "PixelSpacing" in ds:
        info["spacing_why"] = "ImagerPixelSpacing/PixelSpacing is zero, negative or unreadable"
    if lateral is not None and view is None:
        if lateral_source is not None:
            info.update(view=lateral, view_source=lateral_source)
    elif vp in ("PA", "AP"):
        info["view"] = vp
    elif vp and vp not in LATERAL_VIEW_POSITIONS:
        notes.add(f"ViewPosition {vp!r} is not PA or AP; X2BR expects a frontal chest film")
    return arr, info


def _columns_letter(ds) -> str:
    """The first letter of PatientOrientation's column direction ('' when absent)."""
    po = [str(x).strip().upper() for x in (ds.get("PatientOrientation") or [])]
    return po[0][:1] if len(po) == 2 else ""


def _lateral_view(view, vp, ds, notes, default_view="PA") -> tuple[str | None, str | None]:
    """(view, source) of a lateral film: the argument, else ViewPosition LL / RL, else for LATERAL /
    LAT (or no ViewPosition when a lateral is expected) PatientOrientation's column direction
    (``P``: LL, ``A``: RL), else LL (LATERAL / LAT, with a note) or nothing (the caller's default).
    (None, None) for a frontal film."""
    if view is not None:
        return (view, "argument") if view in LATERAL_VIEWS else (None, None)
    if vp in LATERAL_VIEWS:
        return vp, "ViewPosition"
    if vp in LATERAL_VIEW_POSITIONS or (not vp and default_view in LATERAL_VIEWS):
        side = {"P": "LL", "A": "RL"}.get(_columns_letter(ds))
        if side is not None:
            return side, "PatientOrientation"
        if vp:
            notes.add(f"ViewPosition {vp} does not say which side was on the detector and "
                      "PatientOrientation does not say which way the columns run: read as LL "
                      "(patient's left on the detector, columns toward the back)")
            return "LL", "default"
        return default_view, None
    return None, None


IDENTITY_KEYS = ("patient_id_sha256", "study_uid_sha256")  # in meta for comparisons; never written out


def _identity(ds) -> dict:
    """Short SHA-256 digests of PatientID and StudyInstanceUID (to tell whether two films are of
    one patient and one study); None when absent. Reports leave them out (IDENTITY_KEYS): an
    unsalted digest of a short ID can be reversed by trying IDs."""
    import hashlib

    out = {}
    for key, tag in (("patient_id_sha256", "PatientID"), ("study_uid_sha256", "StudyInstanceUID")):
        value = str(ds.get(tag, "") or "").strip()
        out[key] = hashlib.sha256(value.encode()).hexdigest()[:16] if value else None
    return out


def _orient_dicom(arr, ds, meta, notes, lateral=None):
    """Flip to columns -> patient's left (a lateral film: toward the back for LL, the front for
    RL), rows -> feet using PatientOrientation."""
    po = [str(x).strip().upper() for x in (ds.get("PatientOrientation") or [])]
    meta["patient_orientation"] = "\\".join(po) or None
    flips = []
    away = "R" if lateral is None else {"P": "A", "A": "P"}[LATERAL_COLUMNS[lateral]]
    if len(po) == 2 and po[0][:1] == away:
        arr = arr[:, ::-1]
        flips.append("columns")
    if len(po) == 2 and po[1][:1] == "H":
        arr = arr[::-1, :]
        flips.append("rows")
    if flips:
        toward = "patient's left" if lateral is None else {"P": "back", "A": "front"}[LATERAL_COLUMNS[lateral]]
        notes.add(f"image flipped ({', '.join(flips)}) from PatientOrientation "
                  f"{meta['patient_orientation']} to columns -> {toward}, rows -> feet"
                  + ("" if lateral is None else f" ({lateral} view)"))
    meta["flipped"] = flips
    return np.ascontiguousarray(arr)


def _read_itk(p: Path, notes: _Notes):
    import SimpleITK as sitk

    img = sitk.ReadImage(str(p))
    size, dim = img.GetSize(), img.GetDimension()
    fmt = next(v for s, v in _ITK_SUFFIXES.items() if p.name.lower().endswith(s))
    if dim == 3 and size[2] > 1:
        raise InputError(f"3D volume with {size[2]} slices ({size[0]} x {size[1]} x {size[2]}): "
                         "expected a single 2D radiograph", p)
    if dim not in (2, 3):
        raise InputError(f"{dim}D image: expected a single 2D radiograph", p)
    _check_shape(size[1], size[0], p)
    arr = sitk.GetArrayFromImage(img)
    meta = dict(format=fmt, modality=None, photometric=None, original_dtype=str(arr.dtype), flipped=[])
    arr = arr[0] if dim == 3 else arr
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = _luminance(arr, notes)
    spacing = tuple(float(s) for s in img.GetSpacing()[:2])
    why = None
    if spacing == (1.0, 1.0):  # ITK's value for "no spacing": treated as none, like a PNG's
        spacing, why = None, (f"{fmt} spacing is exactly 1 x 1 mm, what ITK reports for files "
                              "without spacing (and Slicer for PNG / JPEG volumes)")
    if dim == 3:  # a slice placed in LPS: flip to columns -> left, rows -> feet
        d = np.array(img.GetDirection()).reshape(3, 3)
        if d[0, 0] < -0.9:  # columns run toward the patient's right
            arr = arr[:, ::-1]
            meta["flipped"].append("columns")
        if d[2, 1] > 0.9:  # rows run toward the head
            arr = arr[::-1, :]
            meta["flipped"].append("rows")
        if meta["flipped"]:
            notes.add(f"image flipped ({', '.join(meta['flipped'])}) from its LPS direction")
    return np.ascontiguousarray(arr), dict(meta=meta, spacing=spacing, spacing_source="file", spacing_why=why)


def _read_pillow(p: Path, notes: _Notes):
    from PIL import Image

    with _warnings.catch_warnings():  # PIL's decompression-bomb warning: our size check speaks instead
        _warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(p)
    with im:
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            raise InputError(f"multi-page image ({frames} frames): expected a single radiograph", p)
        _check_shape(im.height, im.width, p)
        im.load()
        fmt, mode = im.format, im.mode
        if mode == "1":
            im = im.convert("L")
        elif mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGBA" if mode in ("P", "PA") else "RGB")
        arr = np.asarray(im)
    meta = dict(format=fmt, modality=None, photometric=mode, original_dtype=str(arr.dtype),
                flipped=[])
    if arr.ndim == 3:
        arr = _luminance(arr, notes)
    return arr, dict(meta=meta, spacing=None,
                     spacing_why=f"{fmt} files carry no detector pixel spacing")
