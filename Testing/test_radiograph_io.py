"""Tests of X2BRLib.io.radiograph on small files generated in tmp_path."""
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # noqa: E402 (repo root)

import pydicom  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from X2BRLib.errors import InputError  # noqa: E402
from X2BRLib.geometry import ProjectionGeometry  # noqa: E402
from X2BRLib.io.radiograph import (DEFAULT_SPACING_MM, Radiograph, RadiographWarning,  # noqa: E402
                                   SpacingWarning, read_radiograph, to_network_input,
                                   write_radiograph_png)

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
H, W = 96, 128
BONE = (slice(30, 60), slice(40, 90))  # rows, columns of the "bone" block


def phantom(bone_value, background, dtype=np.uint16, noise=20):
    rng = np.random.default_rng(0)
    img = np.full((H, W), background, float) + rng.normal(0, noise, (H, W))
    img[BONE] = bone_value + rng.normal(0, noise, img[BONE].shape)
    return np.clip(img, 0, np.iinfo(dtype).max).astype(dtype)


def bone_contrast(image):
    mask = np.zeros(image.shape, bool)
    mask[BONE] = True
    return image[mask].mean() - image[~mask].mean()


def write_dicom(path, pixels=None, sop=CR_STORAGE, modality="CR", photometric="MONOCHROME2",
                preamble=True, **attrs):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128 if preamble else None)
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation = modality, photometric
    if pixels is not None:
        frames = pixels.shape[0] if pixels.ndim == 3 and photometric.startswith("MONO") else 1
        rgb = pixels.ndim == 3 and not photometric.startswith("MONO")
        ds.Rows, ds.Columns = pixels.shape[-3 if rgb else -2], pixels.shape[-2 if rgb else -1]
        ds.SamplesPerPixel = 3 if rgb else 1
        if rgb:
            ds.PlanarConfiguration = 0
        if frames > 1:
            ds.NumberOfFrames = frames
        bits = pixels.dtype.itemsize * 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.save_as(str(path), enforce_file_format=True)
    return path


# ---------------------------------------------------------------------- DICOM
def test_dicom_cr_monochrome1_bone_bright(tmp_path):
    stored = phantom(bone_value=800, background=3000)  # MONOCHROME1: bone = low values
    path = write_dicom(tmp_path / "cr.dcm", stored, photometric="MONOCHROME1",
                       ImagerPixelSpacing=[0.2, 0.15], ViewPosition="PA")
    r = read_radiograph(path)
    assert isinstance(r, Radiograph) and r.path == str(path)
    assert r.image.shape == (H, W) and r.image.dtype == np.float32
    assert 0.0 <= r.image.min() and r.image.max() <= 1.0
    assert bone_contrast(r.image) > 0.5  # bone bright after inversion
    assert r.geometry.size_px == (W, H)
    assert r.geometry.spacing_mm == pytest.approx((0.15, 0.2))  # (column, row)
    assert r.geometry.view == "PA" and r.meta["view_source"] == "ViewPosition"
    assert r.meta["spacing_source"] == "ImagerPixelSpacing" and r.meta["inverted"]
    assert r.meta["modality"] == "CR" and r.meta["photometric"] == "MONOCHROME1"
    assert r.warnings == [] and json.loads(json.dumps(r.meta)) == r.meta  # flat, JSON-able


def test_dicom_dx_rescale_window_ap_distances(tmp_path):
    stored = phantom(bone_value=3000, background=1000)
    path = write_dicom(tmp_path / "dx", stored, sop=DX_STORAGE, modality="DX",  # no extension
                       RescaleSlope=2.0, RescaleIntercept=-100.0, WindowCenter=4000, WindowWidth=5000,
                       PixelSpacing=[0.1, 0.1], ViewPosition="AP",
                       DistanceSourceToDetector=1000.0, DistanceSourceToPatient=800.0)
    r = read_radiograph(path)
    assert bone_contrast(r.image) > 0.5 and r.meta["voi_applied"] and not r.meta["inverted"]
    assert r.geometry.view == "AP"
    assert r.geometry.sdd_mm == pytest.approx(1000.0)
    assert r.meta["object_to_detector_mm"] == pytest.approx(200.0)
    assert r.meta["magnification"] == pytest.approx(1.25)
    # PixelSpacing is at the patient: the detector spacing is 1.25x larger
    assert r.meta["spacing_source"] == "PixelSpacing"
    assert r.geometry.spacing_mm == pytest.approx((0.125, 0.125))
    # the view argument overrides ViewPosition
    assert read_radiograph(path, view="pa").geometry.view == "PA"


def test_dicom_patient_orientation_flips(tmp_path):
    stored = phantom(3000, 1000)
    stored[:10, :10] = 4000  # marker at the first row and column
    path = write_dicom(tmp_path / "f.dcm", stored, ImagerPixelSpacing=[0.1, 0.1], ViewPosition="PA",
                       PatientOrientation=["R", "H"])  # columns -> patient's right, rows -> head
    with pytest.warns(RadiographWarning, match="flipped"):
        r = read_radiograph(path)
    assert r.meta["flipped"] == ["columns", "rows"] and any("flipped" in w for w in r.warnings)
    assert r.image[-10:, -10:].min() == 1.0 and r.image[:10, :10].max() < 1.0


def test_dicom_missing_spacing_and_view_warns(tmp_path):
    path = write_dicom(tmp_path / "nospacing.dcm", phantom(3000, 1000), ImagerPixelSpacing=[0, 0])
    with pytest.warns(SpacingWarning, match="pixel spacing"), \
            pytest.warns(RadiographWarning, match="assuming PA"):
        r = read_radiograph(path)
    assert r.geometry.spacing_mm == (DEFAULT_SPACING_MM, DEFAULT_SPACING_MM)
    assert r.meta["spacing_source"] == "default" and r.geometry.view == "PA"
    assert any("spacing" in w for w in r.warnings) and any("PA" in w for w in r.warnings)


# ---------------------------------------------------------------------- Pillow and ITK
@pytest.mark.parametrize("kind", ["L8", "I16", "RGB"])
def test_png_loads_with_default_spacing_warning(tmp_path, kind):
    grey16 = phantom(50000, 10000)
    arr = {"L8": (grey16 >> 8).astype(np.uint8), "I16": grey16,
           "RGB": np.stack([(grey16 >> 8).astype(np.uint8)] * 3, -1)}[kind]
    path = tmp_path / f"{kind}.png"
    Image.fromarray(arr).save(path)
    with pytest.warns(SpacingWarning):
        r = read_radiograph(path, default_spacing_mm=0.2, view="PA")
    assert r.image.shape == (H, W) and bone_contrast(r.image) > 0.5
    assert r.geometry.spacing_mm == (0.2, 0.2) and r.meta["spacing_source"] == "default"
    assert r.meta["original_dtype"] == ("uint16" if kind == "I16" else "uint8")


def test_coloured_rgb_warns(tmp_path):
    arr = np.stack([phantom(200, 50, np.uint8)] * 3, -1)
    arr[..., 0] //= 2
    Image.fromarray(arr).save(tmp_path / "c.png")
    with pytest.warns(UserWarning):
        r = read_radiograph(tmp_path / "c.png")
    assert any("colour" in w for w in r.warnings) and bone_contrast(r.image) > 0.5


def test_nrrd_spacing_respected(tmp_path):
    img = sitk.GetImageFromArray(phantom(3000, 1000).astype(np.float32))
    img.SetSpacing((0.3, 0.25))
    sitk.WriteImage(img, str(tmp_path / "r.nrrd"))
    vol = sitk.GetImageFromArray(phantom(3000, 1000)[None].astype(np.float32))  # one slice: OK
    vol.SetSpacing((0.3, 0.25, 2.0))
    sitk.WriteImage(vol, str(tmp_path / "r1.mha"))
    for name in ("r.nrrd", "r1.mha"):
        r = read_radiograph(tmp_path / name, view="AP")
        assert r.geometry.view == "AP" and r.meta["view_source"] == "argument"
        assert r.geometry.spacing_mm == pytest.approx((0.3, 0.25)) and r.meta["spacing_source"] == "file"
        assert r.image.shape == (H, W) and bone_contrast(r.image) > 0.5


# ---------------------------------------------------------------------- bad input
def _bad_files(d: Path):
    """name -> (path, expected words in the message)."""
    (d / "notes.txt").write_text("this is not an image\n" * 20)
    (d / "noise.bin").write_bytes(np.random.default_rng(1).integers(0, 256, 4000, np.uint8).tobytes())
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(4, 70, 70).astype(np.float32)), str(d / "ct.nrrd"))
    Image.fromarray(np.full((80, 80), 77, np.uint8)).save(d / "flat.png")
    Image.fromarray(np.arange(100, dtype=np.uint8).reshape(10, 10)).save(d / "tiny.png")
    write_dicom(d / "multi.dcm", np.stack([phantom(3000, 1000)] * 3), modality="CT")
    write_dicom(d / "ybr.dcm", np.zeros((H, W, 3), np.uint8), photometric="YBR_FULL")
    write_dicom(d / "nopix.dcm", None, ImagerPixelSpacing=[0.1, 0.1])
    return {
        "missing": (d / "absent.dcm", "not found"),
        "text": (d / "notes.txt", "cannot be read"),
        "bytes": (d / "noise.bin", "cannot be read"),
        "volume": (d / "ct.nrrd", "3D volume with 4 slices"),
        "multiframe": (d / "multi.dcm", "multi-frame"),
        "constant": (d / "flat.png", "constant image"),
        "tiny": (d / "tiny.png", "10 x 10"),
        "ybr": (d / "ybr.dcm", "YBR_FULL"),
        "nopixels": (d / "nopix.dcm", "no pixel data"),
    }


def test_bad_inputs_raise_input_error_and_write_nothing(tmp_path):
    cases = _bad_files(tmp_path)
    before = sorted(os.listdir(tmp_path))
    for name, (path, words) in cases.items():
        with pytest.raises(InputError) as info:
            read_radiograph(path)
        msg = str(info.value)
        assert words in msg, (name, msg)
        assert str(path) in msg and info.value.path == str(path), (name, msg)
    assert sorted(os.listdir(tmp_path)) == before


def test_bad_arguments(tmp_path):
    path = write_dicom(tmp_path / "cr.dcm", phantom(3000, 1000), ImagerPixelSpacing=[0.1, 0.1])
    with pytest.raises(InputError, match="view"):
        read_radiograph(path, view="XY")  # LL and RL are lateral views (issue 15)
    with pytest.raises(InputError, match="default_spacing_mm"):
        read_radiograph(path, default_spacing_mm=float("nan"))


# ---------------------------------------------------------------------- network input
def _synthetic(width=300, height=200, spacing=(0.5, 0.4)):
    img = np.zeros((height, width), np.float32)
    cy, cx = height // 2, width // 2
    img[cy - 10:cy + 10, cx - 10:cx + 10] = 1.0  # centred on pixel (cx - 0.5, cy - 0.5)
    img[20:40, 30:50] = 0.5  # off-centre block
    geom = ProjectionGeometry.chest("AP", size_px=(width, height), spacing_mm=spacing,
                                    sdd_mm=1100.0, object_to_detector_mm=150.0)
    return Radiograph(img, geom)


def _centroid(img, sel):
    rr, cc = np.nonzero(sel)
    w = img[rr, cc]
    return np.array([(cc * w).sum() / w.sum(), (rr * w).sum() / w.sum()])


def test_to_network_input_shape_range_geometry():
    rad = _synthetic()
    out, g = to_network_input(rad, size_px=(64, 64))
    field = max(300 * 0.5, 200 * 0.4)
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert g.size_px == (64, 64) and g.spacing_mm == pytest.approx((field / 64, field / 64))
    ref = ProjectionGeometry.chest("AP", size_px=(64, 64), spacing_mm=(field / 64,) * 2,
                                   sdd_mm=1100.0, object_to_detector_mm=150.0)
    assert np.allclose(g.projection_matrix(), ref.projection_matrix())
    assert out.sum() * (field / 64) ** 2 == pytest.approx(rad.image.sum() * 0.5 * 0.4, rel=1e-4)
    assert out[:8].max() == 0.0  # padding above the (shorter) image is background


def test_to_network_input_keeps_positions():
    rad = _synthetic()
    out, g = to_network_input(rad, size_px=(64, 48), field_mm=170.0)
    centre = _centroid(out, out > 0.6)
    assert centre == pytest.approx([(64 - 1) / 2, (48 - 1) / 2], abs=0.3)
    # the off-centre block lands where the geometry projects it
    src = _centroid(rad.image, rad.image == 0.5)
    uv, _ = g.project(rad.geometry.pixel_to_lps(src[None]))
    sel = np.zeros(out.shape, bool)
    r0, c0 = int(uv[0, 1]), int(uv[0, 0])
    sel[r0 - 5:r0 + 6, c0 - 5:c0 + 6] = True
    assert _centroid(out, sel & (out > 0)) == pytest.approx(uv[0], abs=0.15)


# ---------------------------------------------------------------------- PNG writer
def test_write_png_roundtrip_and_no_overwrite(tmp_path):
    img = np.linspace(0, 1, 80 * 96).reshape(80, 96)
    path = write_radiograph_png(tmp_path / "out.png", img)
    assert os.listdir(tmp_path) == ["out.png"]  # no temp file left behind
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I") and im.size == (96, 80)
        assert np.abs(np.asarray(im) / 65535.0 - img).max() <= 0.5 / 65535 + 1e-9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        back = read_radiograph(path)
    lo, hi = np.array(back.meta["intensity_window"]) / 65535.0  # the 0.5 / 99.5 percentiles
    assert lo == pytest.approx(0.005, abs=1e-3) and hi == pytest.approx(0.995, abs=1e-3)
    assert np.abs(back.image - np.clip((img - lo) / (hi - lo), 0, 1)).max() < 1e-4
    with pytest.raises(InputError, match="exists"):
        write_radiograph_png(path, img)
    write_radiograph_png(path, 1 - img, overwrite=True)
    with Image.open(path) as im:
        assert np.asarray(im)[0, 0] == 65535
    assert os.listdir(tmp_path) == ["out.png"]
