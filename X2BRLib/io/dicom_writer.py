"""Write a film as a real DICOM DX image (for sample data, tests and DRR export).

The geometry is recorded the way a DX modality does: ImagerPixelSpacing (at the
detector), DistanceSourceToDetector, DistanceSourceToPatient (to the isocentre
here), ViewPosition (PA, AP, LL, RL), PatientOrientation (columns toward the patient's left
"L" on a frontal film, toward the back "P" on an LL film and the front "A" on an RL film; rows
toward the feet "F"), so ``read_radiograph`` recovers the same :class:`ProjectionGeometry`.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import ProjectionGeometry
from .atomic import atomic_write

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def write_radiograph_dicom(path, image: np.ndarray, geometry: ProjectionGeometry, overwrite: bool = False,
                           patient_name: str = "X2BR^Sample", description: str = "X2BR virtual chest film",
                           patient_id: str = "X2BR-SAMPLE", study_uid: str | None = None) -> Path:
    """image: (H, W) float in [0, 1], bone bright -> 12-bit MONOCHROME2 DX. Atomic; refuses to
    overwrite unless asked. study_uid: the StudyInstanceUID (a new one when None; give the PA
    film's to write its lateral into the same study)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError("exists; pass overwrite to replace it", path)
    h, w = image.shape
    if (w, h) != tuple(geometry.size_px):
        raise ValueError(f"image {w}x{h} does not match geometry {geometry.size_px}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = DX_FOR_PRESENTATION, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), generate_uid()
    ds.Modality, ds.PresentationIntentType = "DX", "FOR PRESENTATION"
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.StudyDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.SeriesDescription = description
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", geometry.view
    ds.PatientOrientation = [{"LL": "P", "RL": "A"}.get(geometry.view, "L"), "F"]
    ds.ImagerPixelSpacing = [f"{geometry.spacing_mm[1]:.6f}", f"{geometry.spacing_mm[0]:.6f}"]  # row, column
    ds.DistanceSourceToDetector = f"{geometry.sdd_mm:.3f}"
    ds.DistanceSourceToPatient = f"{geometry.sod_mm:.3f}"
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, 0, "US"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = np.round(np.clip(image, 0, 1) * 4095).astype(np.uint16).tobytes()
    return atomic_write(path, lambda tmp: pydicom.dcmwrite(tmp, ds, enforce_file_format=True), overwrite=True)
