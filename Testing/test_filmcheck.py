"""Images that are not a frontal chest film are refused (or warned about) before any
reconstruction, with the shipped detector; the sample film passes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from X2BRLib.filmcheck import (LAYOUT_MAX_RESIDUAL_MM, NotAChestFilmError, check_and_scale, layout_checks,
                                neighbour_correlation)
from X2BRLib.io.radiograph import read_radiograph

REPO = Path(__file__).resolve().parents[1]
SAMPLE_FILM = REPO / "Resources" / "SampleData" / "sample_radiograph.dcm"


def _png(path, arr):
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)
    return path


def test_neighbour_correlation_separates_noise_from_a_smooth_image():
    rng = np.random.default_rng(0)
    assert abs(neighbour_correlation(rng.uniform(size=(64, 64)))) < 0.1
    assert neighbour_correlation(np.add.outer(np.arange(64.0), np.arange(64.0))) > 0.99


def test_random_noise_is_refused_naming_the_file_and_the_way_out(detector, tmp_path):
    f = _png(tmp_path / "noise.png", np.random.default_rng(1).uniform(0, 255, (512, 512)))
    with pytest.raises(NotAChestFilmError, match=r"noise\.png.*random noise.*--force"):
        check_and_scale(read_radiograph(f, default_spacing_mm=None, view="PA"), detector)
    out, _ = check_and_scale(read_radiograph(f, default_spacing_mm=None, view="PA"), detector, force=True)
    check = out.meta["film_check"]
    assert check["forced"] and check["refused"] and any("(--force)" in w for w in out.warnings)


def test_a_300_by_5000_strip_is_refused(detector, tmp_path):
    film = np.asarray(Image.fromarray(np.uint8(read_radiograph(SAMPLE_FILM).image * 255)).resize((300, 5000)))
    f = _png(tmp_path / "strip.png", film)
    with pytest.raises(NotAChestFilmError, match=r"300 x 5000 px image \(16\.7:1\)"):
        check_and_scale(read_radiograph(f, default_spacing_mm=None, view="PA"), detector)


def test_the_sample_film_is_not_refused_and_draws_no_warning(detector):
    out, dets = check_and_scale(read_radiograph(SAMPLE_FILM), detector)
    check = out.meta["film_check"]
    assert not check["refused"] and not check["warnings"] and check["bones_conf_0.25"] >= 40
    assert out.meta["scale"]["source"] == "file"


def test_bones_out_of_the_frontal_layout_or_sides_overlapping_draw_a_warning(detector):
    """The sample film's own detections pass; the same boxes given to other bones (out of the
    chest's layout) or the left ribs moved onto the right ones (as on a lateral) are warned about."""
    from dataclasses import replace

    _, dets = check_and_scale(read_radiograph(SAMPLE_FILM), detector)
    ok = layout_checks(dets, detector.imgsz)
    assert not ok["warnings"] and ok["layout_residual_mm"] < LAYOUT_MAX_RESIDUAL_MM and ok["rib_side_separation"] > 0.3
    boxes = [d.box_px for d in dets]
    shuffled = [replace(d, box_px=boxes[(i * 7) % len(boxes)]) for i, d in enumerate(dets)]
    out = layout_checks(shuffled, detector.imgsz)
    assert out["layout_residual_mm"] > LAYOUT_MAX_RESIDUAL_MM and any("do not sit where a frontal" in w for w in out["warnings"])
    right = {d.label - 12: d.box_px for d in dets if 13 <= d.label <= 24}
    overlapped = [replace(d, box_px=right[d.label]) if d.label in right else d for d in dets]
    out = layout_checks(overlapped, detector.imgsz)
    assert out["rib_side_separation"] < 0.15 and any("looks like a lateral film" in w for w in out["warnings"])


def test_reconstruct_refuses_noise_with_one_line_and_writes_nothing(tmp_path, capsys):
    from X2BRLib.cli import main

    f = _png(tmp_path / "noise.png", np.random.default_rng(2).uniform(0, 255, (400, 400)))
    out = tmp_path / "out"
    assert main(["reconstruct", str(f), "-o", str(out), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr()
    lines = [ln for ln in err.err.splitlines() if ln.startswith("x2br: error:")]
    assert len(lines) == 1 and "not a frontal chest radiograph" in lines[0]
    assert json.loads(err.out.strip().splitlines()[-1])["failed"] and not out.exists()


def test_a_png_stored_as_its_negative_is_read_as_the_negative_with_a_warning(detector, tmp_path):
    """A PNG does not say which way its grey values run: the sample film saved bone-dark is read
    as its negative (the detector finds its bones there), saved bone-bright as it is."""
    film = np.uint8(np.round(read_radiograph(SAMPLE_FILM).image * 255))
    pos = read_radiograph(_png(tmp_path / "film.png", film), default_spacing_mm=None, view="PA")
    neg = read_radiograph(_png(tmp_path / "negative.png", 255 - film), default_spacing_mm=None, view="PA")
    out_pos, dets_pos = check_and_scale(pos, detector)
    out_neg, dets_neg = check_and_scale(neg, detector)
    assert "polarity" not in out_pos.meta  # 40 or more bones as stored: not in question
    record = out_neg.meta["polarity"]
    assert record["read_as"] == "negative" and record["bones_as_stored"] < 20 <= 40 <= record["bones_as_negative"]
    assert any("negative" in w for w in out_neg.warnings)
    assert np.allclose(out_neg.image, out_pos.image, atol=2 / 255)  # what the networks get: the film
    assert abs(out_neg.meta["scale"]["spacing_mm"][0] / out_pos.meta["scale"]["spacing_mm"][0] - 1) < 0.02
    assert not out_neg.meta["film_check"]["warnings"]
