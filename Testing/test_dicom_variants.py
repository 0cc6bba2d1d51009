"""DICOM radiographs as hospitals send them, written here by pydicom (and imagecodecs for the
JPEG family): no file meta, every compressed transfer syntax X2BR claims, 10/12/16 bits
signed and unsigned, VOI LUTs, FOR PROCESSING images, collimation borders, burnt-in markers."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # noqa: E402 (repo root)

import imagecodecs  # noqa: E402
import pydicom  # noqa: E402
from pydicom import uid  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from scipy import ndimage  # noqa: E402

from X2BRLib.errors import InputError  # noqa: E402
from X2BRLib.imaging import NORMALISE_PERCENTILES  # noqa: E402
from X2BRLib.io.radiograph import RadiographWarning, read_radiograph  # noqa: E402

CR = "1.2.840.10008.5.1.4.1.1.1"
H, W = 96, 128
BONE = (slice(30, 60), slice(40, 90))


def phantom(bone=3000, background=1000, noise=40, gradient=300, seed=0):
    """(H, W) float: a bright bone block on a noisy background with a smooth gradient."""
    rng = np.random.default_rng(seed)
    img = background + gradient * np.linspace(0, 1, W)[None] + rng.normal(0, noise, (H, W))
    img[BONE] += bone - background
    return img


def bone_contrast(image):
    mask = np.zeros(image.shape, bool)
    mask[BONE] = True
    return float(image[mask].mean() - image[~mask].mean())


def expected(values):
    """The reader's normalisation of display values (no border, no marker)."""
    lo, hi = np.percentile(values, NORMALISE_PERCENTILES)
    return np.clip((values - lo) / (hi - lo), 0, 1)


def dataset(stored, bits_stored=None, signed=False, photometric="MONOCHROME2", **attrs):
    """A CR data set around stored pixel values (H, W) of an integer dtype."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CR
    ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CR, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.ImagerPixelSpacing = "CR", "PA", [0.2, 0.2]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    allocated = stored.dtype.itemsize * 8
    bits = bits_stored or allocated
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits, bits - 1, int(signed)
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def save(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


def encapsulated(ds, frame: bytes, ts, lossy=False):
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ts
    if lossy:
        ds.LossyImageCompression = "01"
    return ds


# ---------------------------------------------------------------------- no file meta
@pytest.mark.parametrize("name", ["IM000001", "bare.dcm"])
def test_a_bare_implicit_vr_data_set_without_file_meta_reads(tmp_path, name):
    stored = np.round(phantom()).astype(np.uint16)
    reference = read_radiograph(save(dataset(stored, 12), tmp_path / "ref.dcm"))
    ds = dataset(stored, 12)
    del ds.file_meta  # what old PACS exports look like: no preamble, no meta, implicit VR
    path = tmp_path / name
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[:2] == b"\x08\x00"  # starts with the first element of group 0008
    r = read_radiograph(path)
    assert r.meta["file_meta"] is False and "Implicit VR Little Endian" in r.meta["file_meta_note"]
    assert r.meta["transfer_syntax_uid"] == uid.ImplicitVRLittleEndian
    assert np.array_equal(r.image, reference.image)
    assert r.geometry.spacing_mm == reference.geometry.spacing_mm and r.geometry.view == "PA"


def test_a_data_set_without_file_meta_and_compressed_pixels_is_one_clear_line(tmp_path):
    stored = np.round(phantom()).astype(np.uint16)
    ds = encapsulated(dataset(stored, 12), imagecodecs.jpegls_encode(stored), uid.JPEGLSLossless)
    del ds.file_meta
    path = tmp_path / "bare_jls.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=True)
    with pytest.raises(InputError, match="without a file meta header holds compressed") as info:
        read_radiograph(path)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------- compressed transfer syntaxes
def _jpeg_baseline(stored12):
    u8 = (stored12 >> 4).astype(np.uint8)
    return u8, imagecodecs.jpeg8_encode(u8, level=95)


COMPRESSED = {
    # name: (transfer syntax, lossy, encoder(ds, stored 12-bit uint16) -> ds)
    "rle": (uid.RLELossless, False, lambda ds, a: (ds.compress(uid.RLELossless, encoding_plugin="pydicom"), ds)[1]),
    "jpeg-baseline-8bit": (uid.JPEGBaseline8Bit, True, None),  # 8-bit data, built below
    "jpeg-extended-12bit": (uid.JPEGExtended12Bit, True, lambda ds, a: encapsulated(
        ds, imagecodecs.jpeg8_encode(a, level=95, bitspersample=12), uid.JPEGExtended12Bit, lossy=True)),
    "jpeg-lossless-sv1": (uid.JPEGLosslessSV1, False, lambda ds, a: encapsulated(
        ds, imagecodecs.jpeg8_encode(a, lossless=True, predictor=1, bitspersample=12), uid.JPEGLosslessSV1)),
    "jpeg-lossless-p14": (uid.JPEGLossless, False, lambda ds, a: encapsulated(
        ds, imagecodecs.jpeg8_encode(a, lossless=True, predictor=6, bitspersample=12), uid.JPEGLossless)),
    "jpeg-ls-lossless": (uid.JPEGLSLossless, False, lambda ds, a: encapsulated(
        ds, imagecodecs.jpegls_encode(a), uid.JPEGLSLossless)),
    "jpeg-ls-near-lossless": (uid.JPEGLSNearLossless, True, lambda ds, a: encapsulated(
        ds, imagecodecs.jpegls_encode(a, level=3), uid.JPEGLSNearLossless, lossy=True)),
    "jpeg2000-lossless": (uid.JPEG2000Lossless, False, lambda ds, a: (ds.compress(uid.JPEG2000Lossless), ds)[1]),
    "jpeg2000": (uid.JPEG2000, True, lambda ds, a: (ds.compress(uid.JPEG2000, j2k_cr=[10]), ds)[1]),
    "htj2k-lossless": (uid.HTJ2KLossless, False, lambda ds, a: encapsulated(
        ds, imagecodecs.htj2k_encode(a, level=0), uid.HTJ2KLossless)),
    "deflated": (uid.DeflatedExplicitVRLittleEndian, False, lambda ds, a: (
        setattr(ds.file_meta, "TransferSyntaxUID", uid.DeflatedExplicitVRLittleEndian), ds)[1]),
}


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("name", list(COMPRESSED))
def test_each_compressed_transfer_syntax_reads_like_the_uncompressed_file(tmp_path, name, photometric):
    ts, lossy, encode = COMPRESSED[name]
    values = phantom()
    if photometric == "MONOCHROME1":  # bone stored dark
        values = 4095 - values
    stored = np.clip(np.round(values), 0, 4095).astype(np.uint16)
    if encode is None:  # JPEG baseline: 8-bit samples
        stored, frame = _jpeg_baseline(stored)
        ds = encapsulated(dataset(stored, photometric=photometric), frame, ts, lossy=True)
    else:
        ds = encode(dataset(stored, 12, photometric=photometric), stored)
    ref = read_radiograph(save(dataset(stored, 12 if stored.itemsize == 2 else 8, photometric=photometric),
                               tmp_path / "native.dcm"))
    r = read_radiograph(save(ds, tmp_path / f"{name}.dcm"))
    assert r.meta["transfer_syntax_uid"] == ts and r.meta["inverted"] == (photometric == "MONOCHROME1")
    assert bone_contrast(r.image) > 0.5
    if lossy:
        assert np.abs(r.image - ref.image).mean() < 0.02
    else:
        assert np.array_equal(r.image, ref.image)


def test_an_unsupported_transfer_syntax_is_one_line_naming_it(tmp_path):
    stored = np.round(phantom()).astype(np.uint16)
    mpeg2 = uid.UID("1.2.840.10008.1.2.4.100")
    path = save(encapsulated(dataset(stored, 12), b"\x00\x00\x01\xb3" + bytes(60), mpeg2, lossy=True),
                tmp_path / "video.dcm")
    with pytest.raises(InputError) as info:
        read_radiograph(path)
    msg = str(info.value)
    assert "MPEG2" in msg and str(mpeg2) in msg and str(path) in msg and "\n" not in msg


def test_a_missing_decoder_is_one_line_saying_what_to_install(tmp_path):
    """A Python without the decoder packages (blocked in a fresh interpreter) reads a JPEG-LS file."""
    stored = np.round(phantom()).astype(np.uint16)
    path = save(encapsulated(dataset(stored, 12), imagecodecs.jpegls_encode(stored), uid.JPEGLSLossless),
                tmp_path / "jls.dcm")
    code = ("import sys\n"
            "for m in ('pylibjpeg', 'openjpeg', 'libjpeg', 'rle', 'jpeg_ls', 'gdcm', 'PIL'): sys.modules[m] = None\n"
            "from X2BRLib.errors import InputError\n"
            "from X2BRLib.io.radiograph import read_radiograph\n"
            "try:\n    read_radiograph(sys.argv[1])\n"
            "except InputError as e:\n    print(e)\n")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert out.stdout.strip() == (f"{path}: cannot decode the DICOM pixel data: no decoder installed for transfer "
                                  f"syntax JPEG-LS Lossless Image Compression ({uid.JPEGLSLossless}); install one "
                                  "with: pip install pylibjpeg pylibjpeg-libjpeg"), out.stderr


# ---------------------------------------------------------------------- bits
def test_ten_bit_data_with_overlay_bits_above_bits_stored(tmp_path):
    values = np.clip(np.round(phantom(bone=800, background=200, noise=10)), 0, 1023).astype(np.uint16)
    junk = np.random.default_rng(3).integers(0, 64, values.shape).astype(np.uint16) << 10
    r = read_radiograph(save(dataset(values | junk, 10), tmp_path / "ten.dcm"))
    clean = read_radiograph(save(dataset(values, 16), tmp_path / "clean.dcm"))
    assert r.meta["bits_stored"] == 10 and np.array_equal(r.image, clean.image)


def test_twelve_bit_signed_data_is_sign_extended(tmp_path):
    values = np.round(phantom(bone=1500, background=-1200, noise=30)).astype(np.int16)
    twelve_bits = (values.astype(np.int32) & 0x0FFF).astype(np.uint16)  # stored without sign extension
    r = read_radiograph(save(dataset(twelve_bits, 12, signed=True), tmp_path / "s12.dcm"))
    full = read_radiograph(save(dataset(values, 16, signed=True), tmp_path / "s16.dcm"))
    assert r.meta["pixel_signed"] and np.array_equal(r.image, full.image)
    assert np.allclose(r.image, expected(values.astype(float)), atol=1e-5)
    assert bone_contrast(r.image) > 0.5


# ---------------------------------------------------------------------- VOI and intent
def test_a_voi_lut_sequence_is_applied(tmp_path):
    stored = np.clip(np.round(phantom()), 0, 4095).astype(np.uint16)
    lut = np.round(255 * np.sqrt(np.arange(4096) / 4095)).astype(np.uint16)  # a curved look-up table
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new(0x00283006, "US", lut.tolist())  # LUTData
    item.LUTExplanation = "sqrt"
    ds = dataset(stored, 12, VOILUTSequence=[item], WindowCenter=2048, WindowWidth=4096)
    r = read_radiograph(save(ds, tmp_path / "voilut.dcm"))
    assert r.meta["voi"] == "VOILUTSequence" and r.meta["voi_applied"]
    assert np.allclose(r.image, expected(lut[stored].astype(float)), atol=1e-5)


def test_a_sigmoid_window_is_applied(tmp_path):
    stored = np.clip(np.round(phantom()), 0, 4095).astype(np.uint16)
    ds = dataset(stored, 12, WindowCenter=1800, WindowWidth=1600, VOILUTFunction="SIGMOID")
    r = read_radiograph(save(ds, tmp_path / "sigmoid.dcm"))
    assert r.meta["voi"] == "window" and r.meta["voi_function"] == "SIGMOID"
    assert r.meta["voi_window"] == [1800.0, 1600.0]
    sigmoid = 1.0 / (1.0 + np.exp(-4.0 * (stored - 1800.0) / 1600.0))
    assert np.allclose(r.image, expected(sigmoid), atol=1e-4)


@pytest.mark.parametrize("said_by", ["PresentationIntentType", "SOPClassUID"])
def test_a_for_processing_image_linear_in_exposure_is_taken_to_the_log(tmp_path, said_by):
    mu = phantom(bone=1.5, background=0.4, noise=0.01, gradient=0.2)  # attenuation line integrals
    intensity = np.round(4000 * np.exp(-mu)).astype(np.uint16)  # raw detector values: bone dark
    ds = dataset(intensity, 12, PixelIntensityRelationship="LIN", PixelIntensityRelationshipSign=1,
                 WindowCenter=1000, WindowWidth=200)
    if said_by == "SOPClassUID":  # DX For Processing storage, no PresentationIntentType
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1.1"
    else:
        ds.PresentationIntentType = "FOR PROCESSING"
    with pytest.warns(RadiographWarning, match="FOR PROCESSING"):
        r = read_radiograph(save(ds, tmp_path / "raw.dcm"))
    assert r.meta["presentation_intent"] == "FOR PROCESSING" and r.meta["log_applied"] and r.meta["inverted"]
    assert not r.meta["voi_applied"]  # the window is for display, not for raw data
    assert np.allclose(r.image, expected(-np.log(intensity.astype(float))), atol=1e-5)
    assert bone_contrast(r.image) > 0.5


# ---------------------------------------------------------------------- what of the film is the patient
@pytest.mark.parametrize("border", ["collimator-white-mono1", "collimator-white-mono2", "black-mask"])
def test_a_collimation_border_is_left_out_of_the_intensity_window(tmp_path, border):
    values = np.clip(np.round(phantom()), 0, 4095).astype(np.uint16)
    pad = ((20, 30), (12, 25))
    photometric = "MONOCHROME1" if border.endswith("mono1") else "MONOCHROME2"
    inner = 4095 - values if photometric == "MONOCHROME1" else values
    level = {"collimator-white-mono1": 0, "collimator-white-mono2": 4095, "black-mask": 0}[border]
    framed = np.pad(inner, pad, constant_values=level)
    plain = read_radiograph(save(dataset(inner, 12, photometric=photometric), tmp_path / "plain.dcm"))
    r = read_radiograph(save(dataset(framed, 12, photometric=photometric), tmp_path / "framed.dcm"))
    assert r.meta["collimation_border_px"] == {"top": 20, "bottom": 30, "left": 12, "right": 25}
    assert np.array_equal(r.image[20:-30, 12:-25], plain.image)  # the same window as without the border
    field = np.zeros(r.image.shape, bool)
    field[20:-30, 12:-25] = True
    assert r.image[~field].max() == 0.0  # the border reads as no attenuation, as padding does


def test_a_burnt_in_marker_takes_the_values_around_it(tmp_path):
    values = np.clip(np.round(phantom()), 0, 4095).astype(np.uint16)
    marked = values.copy()
    marked[8:18, 6:8] = 4095  # an "L" at full scale, in the background
    marked[16:18, 8:13] = 4095
    plain = read_radiograph(save(dataset(values, 12), tmp_path / "plain.dcm"))
    r = read_radiograph(save(dataset(marked, 12), tmp_path / "marked.dcm"))
    assert r.meta["burnt_in_marker_px"] == int((marked == 4095).sum())
    letter = marked == 4095
    assert r.image[letter].max() < 0.5  # background-like, no longer bone-bright
    rim = ndimage.binary_dilation(letter, iterations=2)  # the letter's blurred rim is filled too
    assert np.abs(r.image[~rim] - plain.image[~rim]).max() < 0.01
    assert r.image[BONE].mean() == pytest.approx(plain.image[BONE].mean(), abs=0.005)
