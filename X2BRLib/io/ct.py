"""CT plus label-map input: the training side's entry point.

``read_labelled_ct(ct, labels)`` reads a CT (NIfTI, NRRD, MHA or a DICOM series
folder) and its bone labels (a TotalSegmentator multi-label map, a folder of
per-structure masks named ``<structure>.nii.gz``, or a map already in catalog
values as ``x2br label-bones`` writes it) and returns a :class:`LabelledCT`
whose labels are in the X2BR bone catalog (anatomy.py). Everything is in LPS
millimetres (SimpleITK's frame).

Which values a label map holds (``label_values``): ``"catalog"`` (0 background,
1..45 the catalog's bones), ``"totalseg"`` (TotalSegmentator ids, translated by
the structure table) or ``"auto"``: a ``structure_table`` means TotalSegmentator;
otherwise a map whose values all lie in 0..45 and include a rib (1..24) is catalog
values, anything else TotalSegmentator ids (a TotalSegmentator map of a chest holds
its ribs as 92-115; one cut to a few vertebrae, 27-44, has no value in 1..24 unless
it holds organs, and organs come with ribs in a chest).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import anatomy
from ..errors import InputError
from ..volume import Volume

_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass
class LabelledCT:
    """hu: CT in Hounsfield units (float32 Volume); labels: catalog labels
    (uint8 Volume on the same grid); source: provenance strings."""

    hu: Volume
    labels: Volume
    name: str = "ct"
    source: dict = field(default_factory=dict)
    contrast: bool | None = None  # contrast-enhanced (removed in virtual patients); None: not known
    meta: dict = field(default_factory=dict)  # how a prepared copy was made (crop, spacing, contrast test)

    def bones_present(self) -> list[int]:
        return [int(v) for v in np.unique(self.labels.array) if v]

    def save_npz(self, path) -> None:
        """A compact prepared copy (HU as int16, catalog labels, grid): loads fast in
        dataset workers and needs no SimpleITK (e.g. on a training machine)."""
        from .atomic import atomic_write

        atomic_write(path, lambda tmp: np.savez_compressed(
            tmp, hu=np.clip(np.rint(self.hu.array), -32768, 32767).astype(np.int16),
            labels=self.labels.array.astype(np.uint8), origin=self.hu.origin_lps_mm, spacing=self.hu.spacing_mm,
            direction=self.hu.direction, name=np.array(self.name),
            contrast=np.array(-1 if self.contrast is None else int(self.contrast)),
            meta=np.array(json.dumps(self.meta))), overwrite=True, suffix=".npz")

    @classmethod
    def load_npz(cls, path) -> "LabelledCT":
        path = Path(path)
        if not path.exists():
            raise InputError("prepared CT not found", path)
        with np.load(path) as z:
            grid = (z["origin"], z["spacing"], z["direction"])
            # files written before contrast was recorded: None (the virtual patient then removes contrast)
            flag = int(z["contrast"]) if "contrast" in z.files else -1
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
            return cls(Volume(z["hu"].astype(np.float32), *grid), Volume(z["labels"], *grid), str(z["name"]),
                       {"prepared": str(path)}, None if flag < 0 else bool(flag), meta)


def read_image(path: Path):
    import SimpleITK as sitk

    if not path.exists():
        raise InputError("file or folder not found", path)
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise InputError("folder holds no DICOM series", path)
            if len(series) > 1:
                raise InputError(f"folder holds {len(series)} DICOM series; give the folder of one", path)
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as e:
        raise InputError(f"cannot be read as an image ({str(e).strip().splitlines()[-1][:200]})", path) from e


def _on_ct_grid(lab, ct, labels_path):
    """The label map on the CT's voxel grid: as is when the grids match, else resampled
    (nearest neighbour) in physical space, e.g. a NIfTI label map of a DICOM series
    read in the other slice order. Refused when the two do not overlap."""
    import SimpleITK as sitk

    same = (lab.GetSize() == ct.GetSize() and np.allclose(lab.GetOrigin(), ct.GetOrigin(), atol=1e-2)
            and np.allclose(lab.GetSpacing(), ct.GetSpacing(), atol=1e-4)
            and np.allclose(lab.GetDirection(), ct.GetDirection(), atol=1e-4))
    if same:
        return lab
    a, b = Volume.from_sitk(lab), Volume.from_sitk(ct)
    (alo, ahi), (blo, bhi) = a.bounds_lps_mm(), b.bounds_lps_mm()
    if np.any(np.minimum(ahi, bhi) < np.maximum(alo, blo)):
        raise InputError("label map does not overlap the CT in space (origin, spacing or direction differ)",
                         labels_path)
    return sitk.Resample(lab, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, lab.GetPixelID())


def read_structure_table(csv_path) -> dict[str, int]:
    """A TotalSegmentator name table: CSV with columns ``structure`` and ``id``."""
    out = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            out[row["structure"].strip()] = int(row["id"])
    return out


LABEL_VALUES = ("auto", "catalog", "totalseg")


def catalog_values_rule(values, structure_table=None) -> str:
    """``"catalog"`` or ``"totalseg"`` for a label map holding ``values`` (the "auto" rule in
    the module docstring)."""
    if structure_table is not None:
        return "totalseg"
    values = np.asarray(values)
    ribs = [b.label for b in anatomy.BONES if b.group == "rib"]
    if values.size and int(values.max()) <= len(anatomy.BONES) and np.isin(values, ribs).any():
        return "catalog"
    return "totalseg"


def read_labelled_ct(ct_path, labels_path, structure_table=None, name=None,
                     label_values: str = "auto") -> LabelledCT:
    """Read a CT and its labels, translated to catalog labels.

    ct_path: CT image file or DICOM series folder (values in HU).
    labels_path: a multi-label map on the CT grid, or a folder of per-structure
        binary masks named after TotalSegmentator structures (``rib_left_1.nii.gz``).
    structure_table: path of a CSV (``structure,id``) or a dict; the standard
        TotalSegmentator v2 ids when None.
    label_values: ``auto`` | ``catalog`` | ``totalseg`` (module docstring); ignored for a
        folder of masks (named after TotalSegmentator structures).
    """
    if label_values not in LABEL_VALUES:
        raise InputError(f"label_values must be one of {', '.join(LABEL_VALUES)}, not {label_values!r}")
    import SimpleITK as sitk

    ct_path, labels_path = Path(ct_path), Path(labels_path)
    ct = read_image(ct_path)
    if ct.GetDimension() != 3 or min(ct.GetSize()) < 2:
        raise InputError(f"expected a 3D CT volume, got size {ct.GetSize()}", ct_path)
    ct = sitk.Cast(ct, sitk.sitkFloat32)
    hu = Volume.from_sitk(ct, np.float32)
    if float(hu.array.min()) >= 0 and float(hu.array.max()) > 1500:
        # stored values without rescale: typical raw CT has air near 0 and water near 1000-1024
        raise InputError("CT values do not look like Hounsfield units (no negative values); "
                         "apply the rescale intercept first", ct_path)

    if labels_path.is_dir() and not any(labels_path.glob("*.dcm")):
        cat = np.zeros(hu.array.shape, np.uint8)
        found = 0
        for b in anatomy.BONES:
            for suffix in _IMAGE_SUFFIXES:
                p = labels_path / f"{b.totalseg_name}{suffix}"
                if p.exists():
                    m = read_image(p)
                    if m.GetSize() != ct.GetSize():
                        raise InputError(f"mask size {m.GetSize()} differs from the CT's {ct.GetSize()}", p)
                    cat[sitk.GetArrayFromImage(m) > 0] = b.label
                    found += 1
                    break
        if not found:
            raise InputError("no mask named after a catalog bone (e.g. rib_left_1.nii.gz) in folder", labels_path)
    else:
        lab = read_image(labels_path)
        if lab.GetDimension() != 3:
            raise InputError(f"expected a 3D label map, got {lab.GetDimension()}D", labels_path)
        lab = _on_ct_grid(lab, ct, labels_path)
        arr = sitk.GetArrayFromImage(lab)
        if not np.issubdtype(arr.dtype, np.integer):
            arr = np.rint(arr)
        if arr.min() < 0 or arr.max() > 255:
            raise InputError("label map values outside 0..255", labels_path)
        arr = arr.astype(np.uint8)
        kind = label_values if label_values != "auto" else catalog_values_rule(
            np.unique(arr), structure_table)
        if kind == "catalog":
            if int(arr.max()) > len(anatomy.BONES):
                raise InputError(f"label map holds values up to {int(arr.max())}; catalog values end at "
                                 f"{len(anatomy.BONES)} (is it TotalSegmentator's? use --label-values totalseg)",
                                 labels_path)
            cat = arr
        else:
            table = structure_table
            if isinstance(table, (str, os.PathLike)):
                table = read_structure_table(table)
            cat = anatomy.totalseg_to_catalog_lut(table)[arr]
    labels = Volume(cat, hu.origin_lps_mm, hu.spacing_mm, hu.direction)
    if not labels.array.any():
        raise InputError("label map holds none of the catalog's bones", labels_path)
    return LabelledCT(hu, labels, name or ct_path.name.split(".")[0],
                      {"ct": str(ct_path), "labels": str(labels_path)})


def patient_name(ct_path) -> str:
    """A CT's patient name: its folder's name for ``<patient>/ct.nii.gz`` (a cohort folder's
    layout), else the file name without its suffixes."""
    p = Path(ct_path)
    stem = p.name.split(".")[0]
    return p.parent.name if stem == "ct" and p.parent.name else stem
