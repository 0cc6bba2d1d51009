"""CT + label input and the `x2br` command line."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from X2BRLib import anatomy
from X2BRLib.cli import main
from X2BRLib.errors import InputError
from X2BRLib.io.ct import read_labelled_ct


def test_a_totalsegmentator_label_map_is_translated_to_the_catalog(sample_ct_paths):
    ct = read_labelled_ct(sample_ct_paths["ct"], sample_ct_paths["labels"])
    assert ct.hu.array.dtype == np.float32 and ct.hu.array.min() < -500
    assert set(ct.bones_present()) == {b.label for b in anatomy.BONES}
    assert ct.labels.array.shape == ct.hu.array.shape


def test_a_folder_of_per_structure_masks_reads_the_same(sample_ct_paths, tmp_path):
    lab = sitk.ReadImage(sample_ct_paths["labels"])
    arr = sitk.GetArrayFromImage(lab)
    for name in ("rib_left_3", "sternum", "vertebrae_T4"):
        m = sitk.GetImageFromArray((arr == anatomy.TOTALSEG_V2_IDS[name]).astype(np.uint8))
        m.CopyInformation(lab)
        sitk.WriteImage(m, str(tmp_path / f"{name}.nii.gz"))
    ct = read_labelled_ct(sample_ct_paths["ct"], tmp_path)
    want = {anatomy.bone(n).label for n in ("rib_left_3", "sternum", "vertebra_T4")}
    assert set(ct.bones_present()) == want


def test_a_dicom_series_ct_is_read(sample_ct_paths, tmp_path):
    full_labels = sitk.ReadImage(sample_ct_paths["labels"])
    zyx = np.argwhere(sitk.GetArrayFromImage(full_labels) == anatomy.TOTALSEG_V2_IDS["vertebrae_T6"])
    z, y, x = zyx.mean(0).astype(int)
    box = (slice(x - 10, x + 10), slice(y - 10, y + 10), slice(z - 2, z + 2))
    img = sitk.ReadImage(sample_ct_paths["ct"])[box]
    series = tmp_path / "series"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        for tag, value in (("0008|0060", "CT"), ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.42"),
                           ("0020|0037", "1\\0\\0\\0\\-1\\0"),
                           ("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, k))))),
                           ("0020|0013", str(k)), ("0028|0030", "3\\3"), ("0018|0050", "3")):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(series / f"s{k}.dcm"))
        writer.Execute(sl)
    read_back = sitk.ReadImage(sorted(str(p) for p in series.glob("*.dcm")))
    labels = sitk.GetImageFromArray(sitk.GetArrayFromImage(full_labels[box]))
    labels.CopyInformation(read_back)
    sitk.WriteImage(labels, str(tmp_path / "lab.nii.gz"))
    ct = read_labelled_ct(series, tmp_path / "lab.nii.gz")
    assert ct.hu.array.shape == (4, 20, 20)
    assert anatomy.bone("vertebra_T6").label in ct.bones_present()
    np.testing.assert_allclose(ct.hu.spacing_mm, [3, 3, 3], atol=1e-3)


def test_a_label_map_elsewhere_in_space_is_refused_naming_the_file(sample_ct_paths, tmp_path):
    lab = sitk.ReadImage(sample_ct_paths["labels"])
    lab.SetOrigin((5000.0, 0.0, 0.0))
    bad = tmp_path / "far.nii.gz"
    sitk.WriteImage(lab, str(bad))
    with pytest.raises(InputError, match="far.nii.gz.*does not overlap"):
        read_labelled_ct(sample_ct_paths["ct"], bad)


def test_a_label_map_on_another_grid_is_resampled_onto_the_ct(sample_ct_paths, tmp_path):
    lab = sitk.ReadImage(sample_ct_paths["labels"])
    flipped = sitk.Flip(lab, [False, False, True])  # same space, other slice order
    sitk.WriteImage(flipped, str(tmp_path / "flipped.nii.gz"))
    a = read_labelled_ct(sample_ct_paths["ct"], sample_ct_paths["labels"])
    b = read_labelled_ct(sample_ct_paths["ct"], tmp_path / "flipped.nii.gz")
    np.testing.assert_array_equal(a.labels.array, b.labels.array)


def test_a_missing_ct_is_refused(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_labelled_ct(tmp_path / "nope.nii.gz", tmp_path / "nope_labels.nii.gz")


def test_cli_builds_a_small_dataset_from_the_sample_ct(tmp_path, capsys):
    rc = main(["build-dataset", "--source", "sample", "-o", str(tmp_path / "ds"), "--train", "1", "--val", "0",
               "--test", "1", "--image-size", "64", "--voxel-mm", "6", "--points", "1024", "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["cases"] == {"train": 1, "val": 0, "test": 1}


def test_cli_reports_bad_input_in_one_line_and_writes_nothing(tmp_path, capsys):
    rc = main(["build-dataset", "--ct", str(tmp_path / "missing.nii.gz"), "--labels", str(tmp_path / "x.nii.gz"),
               "-o", str(tmp_path / "ds"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "x2br: error:" in err and "missing.nii.gz" in err and "Traceback" not in err


def test_cli_drr_refuses_to_overwrite(tmp_path, capsys):
    target = tmp_path / "film.png"
    target.write_bytes(b"user data")
    rc = main(["drr", "--source", "sample", "-o", str(target), "--image-size", "64"])
    assert rc == 2 and target.read_bytes() == b"user data"
    assert "--overwrite" in capsys.readouterr().err
