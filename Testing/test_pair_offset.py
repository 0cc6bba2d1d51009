"""The lateral's height in a PA + lateral pair (issue 15): estimated from the bones the shipped
detector finds on both films (``pair.vertical_scale``), applied to the lateral's camera
(``pair.lateral_placement`` / ``place_lateral``) by the pair path and by ``x2br evaluate
--place-lateral auto``, recorded in the report, under the user's ``--lateral-offset``.

The pair: DRRs of the bundled sample CT (identity anatomy), PA and LL at 256 px (the detector's
size), the lateral rendered with the patient sitting DZ mm higher than assumed (rendered once, ~10 s).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from X2BRLib import pair
from X2BRLib.cli import SAMPLE_CT, main
from X2BRLib.dataset.lateral import rendering_geometry
from X2BRLib.errors import InputError
from X2BRLib.geometry import ProjectionGeometry

pytestmark = pytest.mark.filterwarnings("ignore::X2BRLib.io.radiograph.RadiographWarning")
DZ = 12.0  # the patient sat this much higher for the lateral exposure than assumed
TOLERANCE_MM = 4.0  # the estimate's error on the simulated pairs is 1-2 mm (bench/results/pair_offset_cpu.txt)


@pytest.fixture(scope="module")
def virtual_pair():
    """(PA film, PA geometry, LL film taken DZ mm off, the LL geometry assumed, labels (X, Y, Z) at 3 mm)."""
    from X2BRLib.dataset.builder import load_source, warped_volumes
    from X2BRLib.dataset.virtual import identity_variation
    from X2BRLib.drr import line_integral_to_image, render_drr

    src = load_source(SAMPLE_CT, "cpu")
    pa, ll = (ProjectionGeometry.chest(v, size_px=(256, 256)) for v in ("PA", "LL"))
    labels, mu, ijk = warped_volumes(src, pa, identity_variation(), 3.0)
    films = [line_integral_to_image(render_drr(mu, ijk, g, step_mm=1.5, device="cpu", clip_to_detector=False)[0]
                                    .cpu().numpy()) for g in (pa, rendering_geometry(ll, DZ))]
    return films[0], pa, films[1], ll, labels.cpu().numpy()


@pytest.fixture(scope="module")
def detections(virtual_pair, detector):
    image, _, image_lat, _, _ = virtual_pair
    return [detector.detect(im, conf=pair.SCALE_CONFIDENCE) for im in (image, image_lat)]


def test_the_bones_on_both_films_give_the_offset_and_placing_the_camera_removes_it(virtual_pair, detections):
    _, pa, _, ll, _ = virtual_pair
    d_pa, d_ll = detections
    scale = pair.vertical_scale(d_pa, pa, d_ll, ll)
    assert scale["checked"] and scale["n_fit"] >= pair.MIN_COMMON_BONES and scale["ratio"] == pytest.approx(1, abs=0.02)
    placement = pair.lateral_placement(scale, "auto")
    assert placement["applied"] and placement["source"] == "bones"
    assert placement["offset_si_mm"] == pytest.approx(DZ, abs=TOLERANCE_MM)
    placed = pair.place_lateral(ll, placement)
    assert placed.isocenter_lps_mm == ll.isocenter_lps_mm and placed.box_size_mm == ll.box_size_mm
    assert placed.source[2] - ll.source[2] == pytest.approx(-placement["offset_si_mm"])  # the camera goes down
    again = pair.vertical_scale(d_pa, pa, d_ll, placed)  # the same boxes through the placed camera agree
    assert abs(again["offset_mm"]) < 0.1 and again["ratio"] == pytest.approx(scale["ratio"], abs=1e-3)
    # evaluate's --lateral-offset-mm D tells the network a camera D mm higher: the estimate follows it
    told = rendering_geometry(ll, offset_si_mm=-10.0)
    moved = pair.lateral_placement(pair.vertical_scale(d_pa, pa, d_ll, told), "auto")
    assert moved["offset_si_mm"] == pytest.approx(placement["offset_si_mm"] + 10.0, abs=0.2)


def test_the_user_decides_and_disagreeing_bones_keep_the_same_height(virtual_pair, detections):
    _, pa, _, ll, _ = virtual_pair
    scale = pair.vertical_scale(detections[0], pa, detections[1], ll)
    none = pair.lateral_placement(scale, "none")
    assert not none["applied"] and "none" in none["why"] and pair.place_lateral(ll, none) == ll
    user = pair.lateral_placement(scale, "-7.5")
    assert (user["source"], user["offset_si_mm"], user["mode"]) == ("user", -7.5, "mm")
    assert pair.place_lateral(ll, user).source[2] - ll.source[2] == pytest.approx(7.5)
    assert "lateral placed -7.5 mm" in pair.placement_text(user)
    loose = pair.lateral_placement({**scale, "residual_mm": pair.MAX_PLACEMENT_RESIDUAL_MM + 1}, "auto")
    assert not loose["applied"] and "disagree" in loose["why"] and "same-height" in pair.placement_text(loose)
    few = pair.lateral_placement(pair.vertical_scale(detections[0][:3], pa, detections[1][:3], ll), "auto")
    assert not few["applied"] and "fewer than" in few["why"]
    assert pair.lateral_offset_arg(" AUTO ") == "auto" and pair.lateral_offset_arg("12mm") == 12.0
    for bad in ("up", "nan", "500"):
        with pytest.raises(InputError, match="--lateral-offset"):
            pair.lateral_offset_arg(bad)


def _dicom(path, image, geom, **kw):
    from X2BRLib.io.dicom_writer import write_radiograph_dicom

    write_radiograph_dicom(path, image, geom, patient_id="offset-test", study_uid="1.2.3.4.5", **kw)
    return path


def test_the_pair_path_places_the_lateral_and_the_report_says_so(tmp_path, virtual_pair, detector):
    from X2BRLib import filmcheck
    from X2BRLib.io.radiograph import read_radiograph

    image, pa, image_lat, ll, _ = virtual_pair
    frontal, dets = filmcheck.check_and_scale(read_radiograph(_dicom(tmp_path / "pa.dcm", image, pa),
                                                              default_spacing_mm=None), detector)
    lat_file = _dicom(tmp_path / "ll.dcm", image_lat, ll)
    auto = pair.prepare_lateral(frontal, dets, lat_file, detector, (256, 256))  # auto: the default
    kept = pair.prepare_lateral(frontal, dets, lat_file, detector, (256, 256), offset="none")
    placement = auto.record["pair"]["placement"]
    assert placement["applied"] and placement["offset_si_mm"] == pytest.approx(DZ, abs=TOLERANCE_MM)
    assert placement["text"].startswith(f"lateral placed {placement['offset_si_mm']:+.1f} mm")
    assert auto.geometry == pair.place_lateral(kept.geometry, placement)
    assert auto.record["geometry"] == auto.geometry.to_dict()  # the report's camera is the one used
    assert kept.record["pair"]["placement"]["why"].startswith("--lateral-offset none")
    assert np.allclose(np.array(kept.geometry.source_lps_mm) - kept.geometry.isocenter_lps_mm, (-1630.0, 0, 0))
    # report.json says what was applied (the writer under test, not the network: the virtual patient's labels)
    from X2BRLib.io.radiograph import to_network_input
    from X2BRLib.pipeline import Reconstruction, write_outputs

    labels = virtual_pair[4]
    _, origin, spacing = pa.box_grid(3.0)
    film, geom = to_network_input(frontal, (256, 256))
    paths = write_outputs(Reconstruction(labels, origin, spacing, geom, film, frontal, lateral=auto),
                          tmp_path / "out", meshes=False)
    report = json.loads(open(paths["report"]).read())
    assert report["pair"]["placement"] == json.loads(json.dumps(placement))
    assert report["lateral"]["geometry"] == json.loads(json.dumps(auto.geometry.to_dict()))


def test_the_option_is_checked_before_any_work(tmp_path, capsys):
    from X2BRLib.pipeline import ReconstructOptions

    with pytest.raises(SystemExit) as e:
        main(["reconstruct", "pa.dcm", "--lateral", "ll.dcm", "--lateral-offset", "higher", "-o", str(tmp_path / "o")])
    assert e.value.code == 2 and "--lateral-offset: takes auto, none or a number of mm" in capsys.readouterr().err
    assert ReconstructOptions(lateral="ll.dcm", lateral_offset="8").lateral_offset == 8.0
    with pytest.raises(InputError, match="at most 100 mm"):
        ReconstructOptions(lateral="ll.dcm", lateral_offset=-250)
    assert not (tmp_path / "o").exists()


def test_evaluate_places_the_lateral_with_the_pair_paths_functions(tmp_path, virtual_pair):
    """A one-case lateral dataset of the pair (its lateral taken DZ off, given the assumed camera):
    --place-lateral auto records and applies about DZ; none leaves the camera as given."""
    from X2BRLib.pipeline import ReconstructOptions, Reconstructor
    from X2BRLib.x2b.model import X2BNet
    from X2BRLib.x2b.weights import save_weights

    image, pa, image_lat, ll, labels = virtual_pair
    (tmp_path / "d" / "test").mkdir(parents=True)
    np.savez_compressed(tmp_path / "d" / "test" / "case_00000.npz", image=image.astype(np.float16),
                        geometry=np.array(pa.to_json()), gt_labels=labels[::2, ::2, ::2],  # 6 mm: quick
                        boxes=np.zeros((0, 5), np.float32),
                        image_lat=image_lat.astype(np.float16), geometry_lat=np.array(ll.to_json()))
    (tmp_path / "d" / "dataset.json").write_text(json.dumps(
        {"version": 3, "splits": {"test": ["case_00000.npz"]}, "gt_voxel_mm": 6.0, "lateral": True}))
    save_weights(tmp_path / "w", X2BNet(hidden=16, n_blocks=1, feat_dim=8, views=2), {"image_size": [256, 256]})
    out = tmp_path / "e.json"
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--weights", str(tmp_path / "w"), "--device", "cpu",
                 "--views", "pa+lat", "--no-baseline", "--place-lateral", "auto", "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["place_lateral"] == "auto"
    placement = report["per_case"][0]["placement"]
    assert placement["applied"] and placement["offset_si_mm"] == pytest.approx(DZ, abs=TOLERANCE_MM)
    from X2BRLib.x2b.evaluate import evaluate

    rec = Reconstructor(ReconstructOptions(device="cpu", weights=str(tmp_path / "w"), check_films=False))
    with pytest.raises(ValueError, match="place_lateral must be none or auto"):
        evaluate(tmp_path / "d", rec, views=("pa+lat",), baseline=False, place_lateral="auto")  # no detector
