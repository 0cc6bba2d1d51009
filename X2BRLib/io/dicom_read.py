"""DICOM radiographs as hospitals send them: the data set, its pixels, their display values.

Used by :func:`X2BRLib.io.radiograph.read_radiograph` (which adds spacing, view and
geometry). Three steps, each a function:

1. :func:`read_dataset`: a file with or without the 128-byte preamble and the file
   meta header (old PACS exports are often a bare implicit-VR little-endian data
   set; the transfer syntax is then taken from how the data set is encoded).
2. :func:`decode_pixels`: the stored values, (H, W) or (H, W, 3) integers, for every
   transfer syntax pydicom has a decoder for: uncompressed (implicit / explicit VR,
   little or big endian, deflated), RLE lossless (pydicom), JPEG baseline and
   extended (8 and 12 bit), JPEG lossless (process 14, selection value 1 or any),
   JPEG-LS (lossless and near-lossless) through pylibjpeg + pylibjpeg-libjpeg, JPEG
   2000 (lossless and lossy) and HTJ2K (tested lossless) through pylibjpeg-openjpeg. BitsStored <
   BitsAllocated is masked and sign-extended (PixelRepresentation 1) by pydicom.
   Anything else is one :class:`~X2BRLib.errors.InputError` line naming the transfer
   syntax (and the package to install when only a decoder is missing).
3. :func:`display_values`: float values with bone bright.
   FOR PRESENTATION (or no intent given): modality LUT (RescaleSlope/Intercept or
   Modality LUT Sequence), then the VOI LUT Sequence or else the first window
   (VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID), then MONOCHROME1 (and an
   INVERSE Presentation LUT Shape) inverted.
   FOR PROCESSING (raw detector values; PresentationIntentType, or the DX For
   Processing storage class when that is missing): modality LUT, then PixelIntensityRelationship
   LIN is taken to the log (values proportional to exposure -> attenuation), no VOI,
   and PixelIntensityRelationshipSign +1 (lower value = less X-ray intensity) inverted
   so that bone (where fewer X-rays arrive) is bright; a note says so.

Every fact is recorded in ``meta`` (flat, JSON-able); every assumption is a note.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

# transfer syntax UID -> the PyPI packages whose decoder pydicom uses for it
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",  # JPEG extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE (pydicom's own decoder needs nothing)
}
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"  # Digital X-Ray Image Storage - For Processing
_ENCAPSULATED_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian: first item of encapsulated pixel data


def read_dataset(p: Path):
    """The pydicom data set of ``p``, with ``file_meta.TransferSyntaxUID`` always set.

    Returns (ds, file_meta_note): the note is None, or says that the file had no file
    meta header and which transfer syntax was inferred. InputError when the file holds
    no DICOM elements, or when it has no file meta and compressed pixel data (the
    codec cannot be known).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        ds = pydicom.dcmread(p)
    except InvalidDicomError:  # no 128-byte preamble and "DICM": a bare data set?
        ds = pydicom.dcmread(p, force=True)
        if not any(k in ds for k in ("SOPClassUID", "Modality", "PixelData", "Rows")):
            raise InputError("not a DICOM file (no DICM preamble and no DICOM elements)", p)
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in ds.file_meta:
        return ds, None
    implicit, little = ds.original_encoding
    ts = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    pixel_data = ds.get("PixelData")
    if isinstance(pixel_data, bytes) and pixel_data[:4] == _ENCAPSULATED_ITEM:
        raise InputError("DICOM file without a file meta header holds compressed (encapsulated) pixel "
                         "data: its transfer syntax, and so its codec, is unknown", p)
    ds.file_meta.TransferSyntaxUID = ts
    return ds, f"no DICOM file meta header: read as {ts.name}, the data set's own encoding"


def transfer_syntax(ds) -> tuple[str, str]:
    """(UID, name) of the data set's transfer syntax ('?' when unknown)."""
    from pydicom.uid import UID

    uid = UID(str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "?"))
    name = uid.name if uid.is_transfer_syntax else "unknown transfer syntax"
    return str(uid), name


def _lut_functions():
    """pydicom's modality and VOI LUT functions: ``pydicom.pixels`` (pydicom 3) or the 2.x module
    (3D Slicer ships pydicom 2.4, and the Slicer module never replaces it)."""
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return apply_modality_lut, apply_voi_lut


def decode_pixels(ds, p: Path) -> np.ndarray:
    """The stored pixel values (pydicom's ``pixel_array``); one InputError line naming the
    transfer syntax when they cannot be decoded."""
    uid, name = transfer_syntax(ds)
    what = f"transfer syntax {name} ({uid})"
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom 2.x: no decoder registry; pixel_array's own error is reported below
        get_decoder = None
    try:
        decoder = get_decoder(uid) if get_decoder else None
    except (NotImplementedError, ValueError):
        raise InputError(f"cannot decode the DICOM pixel data: {what} is not supported (X2BR reads "
                         "uncompressed, deflated, RLE, JPEG, JPEG-LS, JPEG 2000 and HTJ2K DICOM)", p) from None
    if decoder is not None and not decoder.is_available:
        need = _DECODER_PACKAGES.get(uid, "a pydicom pixel data plugin")
        raise InputError(f"cannot decode the DICOM pixel data: no decoder installed for {what}; "
                         f"install one with: pip install {need}", p)
    try:
        return ds.pixel_array
    except Exception as e:  # decoders raise many types; keep the last line of their message
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        raise InputError(f"cannot decode the DICOM pixel data ({what}): {lines[-1]}", p) from e


def display_values(ds, stored: np.ndarray, meta: dict, notes) -> np.ndarray:
    """(H, W) stored values -> float64 display values, bone bright (see the module docstring).

    meta gets: presentation_intent, bits_stored, bits_allocated, pixel_signed, voi_applied
    (bool), voi ('VOILUTSequence' | 'window' | None), voi_window [centre, width] when a
    window was used, voi_function, intensity_relationship, inverted, log_applied.
    notes: an object with ``add(message)`` for assumptions the user should see.
    """
    apply_modality_lut, _ = _lut_functions()

    intent = str(ds.get("PresentationIntentType", "") or "").strip().upper() or None
    if intent is None and str(ds.get("SOPClassUID", "")) == DX_FOR_PROCESSING:
        intent = "FOR PROCESSING"
    meta.update(presentation_intent=intent, bits_stored=_int(ds.get("BitsStored")),
                bits_allocated=_int(ds.get("BitsAllocated")), pixel_signed=_int(ds.get("PixelRepresentation")) == 1,
                voi_applied=False, voi=None, inverted=False, log_applied=False)
    arr = np.asarray(apply_modality_lut(stored, ds), float)
    if intent == "FOR PROCESSING":
        arr, invert = _processing_values(arr, ds, meta, notes)
    else:
        arr = _apply_voi(arr, ds, meta, notes)
        invert = str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"
        if str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE":
            invert = not invert
    if invert:
        arr, meta["inverted"] = -arr, True
    return arr


def _apply_voi(arr, ds, meta, notes):
    """VOI LUT Sequence (first LUT) or else the first window, when it keeps some contrast."""
    _, apply_voi_lut = _lut_functions()

    has_lut = "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if np.ptp(arr) == 0 or not (has_lut or has_window):
        return arr
    if has_lut and np.array_equal(arr, np.round(arr)):  # LUT look-ups want integer input
        arr = arr.astype(np.int64)
    try:
        voi = np.asarray(apply_voi_lut(arr, ds, index=0, prefer_lut=True), float)
    except Exception as e:
        notes.add(f"VOI LUT / window could not be applied ({type(e).__name__}: {e}); ignored")
        return np.asarray(arr, float)
    if np.ptp(voi) == 0:
        notes.add("the VOI LUT / window maps every pixel to one value; ignored")
        return np.asarray(arr, float)
    meta.update(voi_applied=True, voi="VOILUTSequence" if has_lut else "window")
    if not has_lut:
        centre, width = (_first(ds.WindowCenter), _first(ds.WindowWidth))
        meta.update(voi_window=[centre, width],
                    voi_function=str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper())
    return voi


def _processing_values(arr, ds, meta, notes):
    """FOR PROCESSING: LIN -> log; invert when lower values mean less X-ray intensity."""
    rel = str(ds.get("PixelIntensityRelationship", "") or "").strip().upper() or None
    sign = _int(ds.get("PixelIntensityRelationshipSign"))
    meta.update(intensity_relationship=rel, intensity_relationship_sign=sign)
    said = []
    if rel == "LIN" and sign != -1:
        positive = arr[arr > 0]
        floor = float(np.percentile(positive, 0.1)) if positive.size else 1.0
        arr = np.log(np.maximum(arr, floor))
        meta["log_applied"] = True
        said.append("values linear in exposure were taken to the log")
    if sign in (1, -1):
        invert = sign == 1
    else:  # no sign given: trust the photometric interpretation
        invert = str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"
        said.append("PixelIntensityRelationshipSign missing, the photometric interpretation decides "
                    "what is bright")
    notes.add("FOR PROCESSING image (raw detector values, no VOI applied)"
              + (f": {'; '.join(said)}" if said else "")
              + "; a FOR PRESENTATION image is closer to the films X2B learnt from")
    return arr, invert


def _first(value) -> float:
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
