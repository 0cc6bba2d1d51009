"""Which file the out-of-process reconstruction reads for a radiograph volume in 3D Slicer.

MRML classes only (no Qt), tested headless on a real MRML scene. The rule: **what the user
sees in Slicer wins over the file it came from**. The original file is used only while the
volume still matches it; a volume whose pixel spacing was corrected in the Volumes module keeps
its file's other facts (a DICOM file's distances and view) with the corrected spacing, which the
command also gets as ``--pixel-spacing`` (the user's: never replaced by the estimate); any other
change sends the volume itself (written as NRRD).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPACING_TOLERANCE_MM = 1e-6
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


@dataclass(frozen=True)
class FilmInput:
    """path: the file to give ``x2br reconstruct``; source: where it comes from, in words
    ('placed film', 'file', 'DICOM file with the volume's spacing', 'volume'); note: a line for
    the user when the volume's corrections were used, else None; pixel_spacing_mm: (column, row)
    mm the user set in the Volumes module, for ``--pixel-spacing`` (the user's spacing: never
    replaced by the estimate from the bones), else None."""

    path: str
    source: str
    note: str | None = None
    pixel_spacing_mm: tuple | None = None


def _is_dicom(path) -> bool:
    name = str(path).lower()
    if name.endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_as_slicer_does(path):
    """A scratch scalar volume node (not in any scene) read from ``path`` by Slicer's volume
    archetype storage node, the reader behind the Volumes and DICOM modules; None if it
    cannot read the file."""
    from .scene import _slicer

    sl = _slicer()
    node = sl.vtkMRMLScalarVolumeNode()
    storage = sl.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(1)
    try:
        ok = storage.ReadData(node)
    except Exception:  # noqa: BLE001  (a reader error of any kind: treat as unreadable)
        ok = False
    return node if ok and node.GetImageData() is not None else None


def _pixels(node) -> np.ndarray:
    from vtkmodules.util import numpy_support

    scalars = node.GetImageData().GetPointData().GetScalars()
    return numpy_support.vtk_to_numpy(scalars)


def compare_with_file(volume_node, path) -> str:
    """'same' (the volume is what Slicer reads from the file), 'spacing' (same pixels, another
    in-plane pixel spacing: corrected in the Volumes module) or 'changed' (other pixels or size,
    or the file cannot be read back)."""
    storage = volume_node.GetStorageNode()
    if (storage is not None and storage.GetFileName() and os.path.isfile(storage.GetFileName())
            and os.path.samefile(storage.GetFileName(), path) and not volume_node.GetModifiedSinceRead()):
        return "same"
    fresh = read_as_slicer_does(path)
    if fresh is None:
        return "changed"
    mine, theirs = volume_node.GetImageData(), fresh.GetImageData()
    if mine is None or mine.GetDimensions() != theirs.GetDimensions() \
            or mine.GetNumberOfScalarComponents() != theirs.GetNumberOfScalarComponents() \
            or not np.array_equal(_pixels(volume_node), _pixels(fresh)):
        return "changed"
    spacing, file_spacing = volume_node.GetSpacing()[:2], fresh.GetSpacing()[:2]
    return "same" if np.allclose(spacing, file_spacing, rtol=0, atol=SPACING_TOLERANCE_MM) else "spacing"


def dicom_with_spacing(source, spacing_xy_mm, path) -> Path:
    """A copy of a DICOM radiograph whose detector pixel spacing (ImagerPixelSpacing, row then
    column) is ``spacing_xy_mm`` = (column spacing, row spacing) as Slicer's volume shows it
    (i, j); PixelSpacing is removed so that nothing contradicts it. Everything else (pixels,
    distances, view) is the original's. Works with pydicom 2 (Slicer's) and 3."""
    import pydicom

    sx, sy = (float(v) for v in spacing_xy_mm)
    if not (sx > 0 and sy > 0):
        from .errors import InputError

        raise InputError(f"pixel spacing must be positive, got {sx} x {sy} mm")
    ds = pydicom.dcmread(str(source), force=True)
    ds.ImagerPixelSpacing = [f"{sy:.10g}", f"{sx:.10g}"]
    if "PixelSpacing" in ds:
        del ds.PixelSpacing
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path))
    return path


def radiograph_input(volume_node, folder, dicom_file=None) -> FilmInput:
    """The file to reconstruct ``volume_node`` from, written into ``folder`` when needed.

    dicom_file: the file the DICOM module loaded the volume from (``DICOM.instanceUIDs`` ->
        the DICOM database), when it did.
    Order: the film a previous X2BR run placed (its own source file); else the volume's file
    (DICOM, or the file it was loaded from) while the volume matches it; a DICOM file with the
    volume's corrected spacing; else the volume written as NRRD.
    """
    from .scene import READABLE_SUFFIXES, write_volume_file

    placed = volume_node.GetAttribute("X2BR.source")
    if volume_node.GetAttribute("X2BR.role"):
        if placed and os.path.isfile(placed):
            return FilmInput(placed, "placed film")
        from .errors import InputError  # its spacing is the isocentre plane's, not the detector's: never a film

        raise InputError(f"'{volume_node.GetName()}' is a film X2BR placed in the patient and the file it was "
                         "made from is gone (a temporary copy): pick the radiograph you loaded as the input")
    candidate = str(dicom_file) if dicom_file and os.path.isfile(dicom_file) else None
    storage = volume_node.GetStorageNode()
    if candidate is None and storage is not None and storage.GetFileName():
        name = storage.GetFileName()
        if os.path.isfile(name) and os.path.basename(name).lower().endswith(READABLE_SUFFIXES):
            candidate = name
    folder = Path(folder)
    if candidate is not None:
        state = compare_with_file(volume_node, candidate)
        if state == "same":
            return FilmInput(candidate, "file")
        sx, sy = volume_node.GetSpacing()[:2]
        if state == "spacing" and _is_dicom(candidate):
            path = dicom_with_spacing(candidate, (sx, sy), folder / "radiograph.dcm")
            return FilmInput(str(path), "DICOM file with the volume's spacing",
                             f"pixel spacing {sx:.4g} x {sy:.4g} mm from the volume (as set in Slicer), "
                             "not from the DICOM file", (float(sx), float(sy)))
        if state == "spacing":
            path = write_volume_file(volume_node, folder / "radiograph.nrrd")
            return FilmInput(str(path), "volume", f"pixel spacing {sx:.4g} x {sy:.4g} mm from the volume "
                                                  "(as set in Slicer), not from its file", (float(sx), float(sy)))
    path = write_volume_file(volume_node, folder / "radiograph.nrrd")
    return FilmInput(str(path), "volume")


def check_lateral_volume(input_node, lateral_node) -> dict:
    """The Slicer module's check of its optional "Lateral film" input: one 2D radiograph
    (:func:`X2BRLib.scene.check_radiograph_volume`) that is not the radiograph itself. The pair
    (views, patients, studies, scales) is checked by the command (:mod:`X2BRLib.pair`).
    Returns the lateral's check record; raises InputError (a ValueError) with one line."""
    from .errors import InputError
    from .scene import check_radiograph_volume

    if lateral_node is not None and input_node is not None and lateral_node.GetID() == input_node.GetID():
        raise InputError(f"'{lateral_node.GetName()}' is picked as the radiograph and as the lateral film: "
                         "pick the lateral (LL or RL) film of the same study, or none")
    try:
        return check_radiograph_volume(lateral_node)
    except InputError as e:
        raise InputError(f"lateral film: {e}") from None


__all__ = ["FilmInput", "check_lateral_volume", "read_as_slicer_does", "compare_with_file", "dicom_with_spacing",
           "radiograph_input"]
