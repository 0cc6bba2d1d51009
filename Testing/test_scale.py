"""Pixel spacing when the file has none or an impossible one (X2BRLib.scale), with the shipped
detector and bone-layout prior on simulated films of known spacing."""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from X2BRLib import scale
from X2BRLib.filmcheck import check_and_scale
from X2BRLib.io.radiograph import SpacingWarning, read_radiograph, write_radiograph_png

REPO = Path(__file__).resolve().parents[1]
SAMPLE_FILM = REPO / "Resources" / "SampleData" / "sample_radiograph.dcm"


def _stripped(rad):
    """The radiograph as read from a file without spacing (placeholder 0.143 mm)."""
    return replace(rad, geometry=replace(rad.geometry, spacing_mm=(0.143, 0.143)),
                   meta=dict(rad.meta, spacing_source="none", spacing_why="removed by the test"))


def _with_file_spacing(rad, mm):
    return replace(rad, geometry=replace(rad.geometry, spacing_mm=(mm, mm)),
                   meta=dict(rad.meta, spacing_source="ImagerPixelSpacing"))


def test_similarity_fit_recovers_a_known_scale_rotation_and_shift():
    rng = np.random.default_rng(0)
    src = rng.uniform(-150, 150, (30, 2))
    a = np.radians(7.0)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = 0.61 * src @ R.T + [128.0, 120.0]
    k, R_fit, t, res = scale.fit_similarity(src, dst)
    assert k == pytest.approx(0.61, rel=1e-9) and np.allclose(R_fit, R) and res.max() < 1e-9


def test_the_sample_film_without_spacing_gets_its_spacing_back_within_10_percent(detector):
    rad = read_radiograph(SAMPLE_FILM)
    truth = rad.geometry.spacing_mm[0]
    out, dets = check_and_scale(_stripped(rad), detector)
    s = out.meta["scale"]
    assert s["source"] == "estimate" and out.meta["spacing_source"] == "estimate"
    assert abs(s["spacing_mm"][0] / truth - 1) < 0.10
    assert out.geometry.spacing_mm == pytest.approx(tuple(s["spacing_mm"]))
    assert 0 < s["uncertainty_rel"] < 0.2 and s["estimate"]["n_bones"] >= 30
    assert "estimated from" in s["status"] and "%" in s["status"]
    assert any("no pixel spacing in the file" in w for w in out.warnings)


def test_a_simulated_png_film_read_without_spacing_is_estimated_within_10_percent(detector, sample_source, tmp_path):
    """A virtual patient 6 % larger than the nominal one, rendered as the dataset builder does,
    written as PNG (no spacing) and read back as a user's file."""
    from X2BRLib.dataset.builder import warped_volumes
    from X2BRLib.dataset.film import default_film, develop
    from X2BRLib.dataset.virtual import identity_variation
    from X2BRLib.drr import render_drr

    params = replace(identity_variation(), scale=1.06)
    film = default_film("PA")
    geom = film.geometry((256, 256))
    _, mu, ijk = warped_volumes(sample_source, geom, params, 3.0)
    image = develop(render_drr(mu, ijk, geom, step_mm=1.5, clip_to_detector=False)[0].cpu().numpy(), film)
    png = write_radiograph_png(tmp_path / "film.png", image)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpacingWarning)  # reading leaves the spacing to the caller
        rad = read_radiograph(png, default_spacing_mm=None, view="PA")
    assert rad.meta["spacing_source"] == "none" and "PNG" in rad.meta["spacing_why"]
    out, _ = check_and_scale(rad, detector)
    assert abs(out.meta["scale"]["spacing_mm"][0] / geom.spacing_mm[0] - 1) < 0.10


def test_an_impossible_file_spacing_is_replaced_by_the_estimate_with_one_warning(detector):
    rad = read_radiograph(SAMPLE_FILM)
    truth = rad.geometry.spacing_mm[0]
    out, _ = check_and_scale(_with_file_spacing(rad, truth / 4), detector)  # a 4x downsampled CR kept its spacing
    s = out.meta["scale"]
    assert s["source"] == "estimate" and abs(s["spacing_mm"][0] / truth - 1) < 0.10
    said = [w for w in out.warnings if "implies a chest" in w]
    assert len(said) == 1 and "outside adult sizes" in said[0] and "using the spacing estimated" in said[0]
    kept, _ = check_and_scale(_with_file_spacing(rad, truth), detector)  # the right one is kept, silently
    assert kept.meta["scale"]["source"] == "file" and kept.geometry.spacing_mm == pytest.approx((truth, truth))
    assert kept.meta["spacing_source"] == "ImagerPixelSpacing" and not any("implies" in w for w in kept.warnings)


def test_the_users_spacing_wins_over_the_file_and_the_estimate(detector):
    rad = read_radiograph(SAMPLE_FILM)
    out, _ = check_and_scale(_with_file_spacing(rad, 0.05), detector, pixel_spacing_mm=2.5)
    assert out.meta["scale"]["source"] == "user" and out.geometry.spacing_mm == (2.5, 2.5)
    assert out.meta["scale"]["status"].startswith("pixel spacing 2.5 mm (given by the user)")


def test_too_few_bones_fall_back_to_a_43_cm_detector_with_a_warning(detector):
    rad = _stripped(read_radiograph(SAMPLE_FILM))
    out, record = scale.resolve(rad, [], rad.geometry)
    assert record["source"] == "default" and out.geometry.spacing_mm == pytest.approx((430 / 256,) * 2)
    assert any("too few bones" in w for w in out.warnings)


def test_a_nrrd_with_itks_1_mm_spacing_counts_as_no_spacing(tmp_path):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 1, (100, 90)).astype(np.float32))
    sitk.WriteImage(img, str(tmp_path / "film.nrrd"))  # spacing 1 x 1: what a PNG volume saved by Slicer has
    rad = read_radiograph(tmp_path / "film.nrrd", default_spacing_mm=None, view="PA")
    assert rad.meta["spacing_source"] == "none" and "1 x 1 mm" in rad.meta["spacing_why"]
    img.SetSpacing((0.2, 0.2))
    sitk.WriteImage(img, str(tmp_path / "film2.nrrd"))
    assert read_radiograph(tmp_path / "film2.nrrd", view="PA").meta["spacing_source"] == "file"


def test_an_estimate_wider_than_any_detector_is_warned_about(detector):
    """A small chest on a large field (here the sample film padded to 1.5 times its width and height,
    as a child's film would look) makes the estimated field wider than 500 mm."""
    import numpy as np

    rad = read_radiograph(SAMPLE_FILM)
    big = np.zeros((384, 384), np.float32)
    big[64:320, 64:320] = rad.image
    geom = replace(rad.geometry, size_px=(384, 384))
    out, _ = check_and_scale(_stripped(replace(rad, image=big, geometry=geom)), detector)
    assert out.meta["scale"]["source"] == "estimate" and out.meta["scale"]["field_mm"] > 500
    assert any("more than a chest detector" in w for w in out.warnings)
