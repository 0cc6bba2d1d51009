"""A user's PA + lateral pair (issue 15): reading and geometry from real DICOM files written here,
each bad pair refused with one line and nothing written, the CLI's lateral options, the Slicer
module's "Lateral film" input on a real MRML scene.

The lateral film is a DRR of the bundled sample CT in the LL geometry (rendered once, ~10 s),
written as a DX file in the study of the bundled sample film; the detector is the shipped one.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from X2BRLib import pair
from X2BRLib.cli import SAMPLE_DIR, main
from X2BRLib.errors import InputError
from X2BRLib.geometry import ProjectionGeometry
from X2BRLib.io.dicom_writer import write_radiograph_dicom
from X2BRLib.io.radiograph import read_radiograph, to_network_input, write_radiograph_png
from X2BRLib.pipeline import DEFAULT_TWO_VIEW_WEIGHTS, ONE_VIEW_WEIGHTS

pytestmark = pytest.mark.filterwarnings("ignore::X2BRLib.io.radiograph.RadiographWarning")
PA_FILM = SAMPLE_DIR / "sample_radiograph.dcm"


def _study(path):
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    return str(ds.PatientID), str(ds.StudyInstanceUID)


def _write_lateral(path, sample_patient, view="LL", orientation=None, view_position=None, **kw):
    """The LL DRR as a DX file in the sample film's study (or as told); orientation / view_position
    rewrite those tags (the pixels stay as rendered: back on the right)."""
    import pydicom

    *_, image, geom = sample_patient
    patient, study = _study(PA_FILM)
    kw = {"patient_id": patient, "study_uid": study, **kw}
    write_radiograph_dicom(path, image, geom if view == "LL" else ProjectionGeometry.chest(view, (256, 256)), **kw)
    if orientation or view_position:
        ds = pydicom.dcmread(str(path))
        if orientation:
            ds.PatientOrientation = list(orientation)
        if view_position:
            ds.ViewPosition = view_position
        ds.save_as(str(path))
    return path


@pytest.fixture(scope="module")
def frontal_checked(detector):
    """The sample PA film checked and scaled as the pipeline does: (radiograph, detections)."""
    from X2BRLib import filmcheck

    return filmcheck.check_and_scale(read_radiograph(PA_FILM, default_spacing_mm=None), detector)


# ---------------------------------------------------------------------- reading a lateral
def test_a_lateral_dicom_reads_with_its_view_distances_and_spacing(tmp_path, sample_patient):
    *_, image, geom = sample_patient
    lat = pair.read_lateral(_write_lateral(tmp_path / "lat.dcm", sample_patient))
    assert lat.geometry.view == "LL" and lat.meta["view_source"] == "ViewPosition"
    assert lat.meta["patient_orientation"] == "P\\F" and lat.meta["flipped"] == []
    assert lat.geometry.sdd_mm == pytest.approx(geom.sdd_mm, abs=1e-3)
    assert lat.geometry.sdd_mm - lat.geometry.sod_mm == pytest.approx(170.0, abs=1e-3)
    assert lat.geometry.spacing_mm == pytest.approx(geom.spacing_mm, rel=1e-5)
    assert lat.meta["spacing_source"] == "ImagerPixelSpacing"
    assert np.corrcoef(lat.image.ravel(), image.ravel())[0, 1] > 0.99


def test_columns_running_the_other_way_are_flipped_and_lateral_takes_its_side_from_the_orientation(
        tmp_path, sample_patient):
    *_, image, _ = sample_patient
    upright = pair.read_lateral(_write_lateral(tmp_path / "ll.dcm", sample_patient)).image
    mirrored = _write_lateral(tmp_path / "ll_a.dcm", sample_patient, orientation=("A", "F"))
    lat = pair.read_lateral(mirrored)  # LL by ViewPosition, but its columns run toward the front
    assert lat.geometry.view == "LL" and lat.meta["flipped"] == ["columns"]
    assert any("flipped (columns)" in w and "back" in w for w in lat.warnings)
    assert np.allclose(lat.image, upright[:, ::-1], atol=1e-6)

    side = _write_lateral(tmp_path / "lateral_a.dcm", sample_patient, orientation=("A", "F"), view_position="LATERAL")
    lat = pair.read_lateral(side)  # LATERAL: the orientation says which display, hence RL
    assert (lat.geometry.view, lat.meta["view_source"], lat.meta["flipped"]) == ("RL", "PatientOrientation", [])
    bare = _write_lateral(tmp_path / "lat.dcm", sample_patient, orientation=("", ""), view_position="LAT")
    lat = pair.read_lateral(bare)
    assert lat.geometry.view == "LL" and any("does not say which side" in w for w in lat.warnings)
    assert pair.read_lateral(bare, view="RL").geometry.view == "RL"  # the user's --lateral-view wins


def test_a_png_lateral_is_read_as_ll_with_a_warning(tmp_path, sample_patient):
    png = write_radiograph_png(tmp_path / "lat.png", sample_patient[3])
    lat = pair.read_lateral(png)
    assert lat.geometry.view == "LL" and lat.meta["view_source"] == "default"
    assert any("view unknown; assuming LL" in w for w in lat.warnings)
    assert lat.meta["spacing_source"] == "none"


def test_the_lateral_is_placed_at_the_pa_isocentre_in_network_form(tmp_path, sample_patient, detector, frontal_checked):
    frontal, dets = frontal_checked
    lat = pair.prepare_lateral(frontal, dets, _write_lateral(tmp_path / "lat.dcm", sample_patient), detector,
                               (256, 256), offset="none")  # the same-height camera (auto: test_pair_offset.py)
    g = lat.geometry
    assert g.view == "LL" and g.size_px == (256, 256) and lat.image.shape == (256, 256)
    assert g.isocenter_lps_mm == frontal.geometry.isocenter_lps_mm
    assert g.box_size_mm == frontal.geometry.box_size_mm
    assert np.allclose(np.array(g.source_lps_mm) - g.isocenter_lps_mm, (-1630.0, 0.0, 0.0))  # beam right -> left
    rec = lat.record
    assert rec["spacing"]["source"] == "file" and rec["view_source"] == "ViewPosition"
    assert rec["pair"]["identity"] == {"same_patient": True, "same_study": True}
    assert not rec["film_check"]["looks_frontal"] and "assumptions" in rec["pair"]
    # the film-likeness probe scores the lateral too (X2BRLib/film_likeness.py): a radiograph, no warning
    assert rec["film_check"]["film_likeness"] > 0.5 and rec["film_check"]["film_likeness_threshold"] == 0.5
    assert not any("does not look like a radiograph" in w for w in rec["warnings"])
    # the sample CT's bones project inside the lateral film where the DRR shows them
    labels, origin, spacing, image, _ = sample_patient
    uv, _ = g.project(origin + np.argwhere(labels == 32) * spacing)  # vertebra T7
    u, v = np.rint(uv.mean(0)).astype(int)
    assert 128 < u < 256 and lat.image[v - 2:v + 3, u - 2:u + 3].mean() > np.median(lat.image)  # back on the right


def test_a_lateral_without_spacing_takes_the_pa_films_and_says_so(tmp_path, sample_patient, detector, frontal_checked):
    frontal, dets = frontal_checked
    png = write_radiograph_png(tmp_path / "lat.png", sample_patient[3])
    with pytest.warns(UserWarning, match="using the frontal film's"):
        lat = pair.prepare_lateral(frontal, dets, png, detector, (256, 256))
    assert lat.radiograph.geometry.spacing_mm == frontal.geometry.spacing_mm
    assert lat.record["spacing"]["source"] == "frontal_film" and lat.record["pair"]["same_detector_assumed"]
    given = pair.prepare_lateral(frontal, dets, png, detector, (256, 256), pixel_spacing_mm=1.6)
    assert given.record["spacing"]["source"] == "user" and given.radiograph.geometry.spacing_mm == (1.6, 1.6)



def test_an_untagged_lateral_stored_mirrored_is_flipped_and_said(tmp_path, sample_patient, detector, frontal_checked):
    """A PNG lateral with its back on the left (how most untagged exports come): the detector's vertebrae
    and sternum show it, the film is turned to the LL display (back on the right) and a warning says so;
    a view the user names is trusted (warning only)."""
    frontal, dets = frontal_checked
    png = write_radiograph_png(tmp_path / "lat.png", sample_patient[3][:, ::-1])
    with pytest.warns(UserWarning, match="stored mirrored .* flipped left-right to be read as LL"):
        lat = pair.prepare_lateral(frontal, dets, png, detector, (256, 256))
    assert lat.record["mirror_check"]["corrected"] and lat.record["flipped"] == ["columns"]
    assert lat.record["mirror_check"]["back_side"] == "left"  # as stored
    labels, origin, spacing, _, _ = sample_patient
    uv, _ = lat.geometry.project(origin + np.argwhere(labels == 32) * spacing)  # T7 now on the back side
    u, v = np.rint(uv.mean(0)).astype(int)
    assert 128 < u < 256 and lat.image[v - 2:v + 3, u - 2:u + 3].mean() > np.median(lat.image)
    with pytest.warns(UserWarning, match="looks mirrored"):
        kept = pair.prepare_lateral(frontal, dets, png, detector, (256, 256), view="LL")
    assert kept.record["flipped"] == [] and not kept.record["mirror_check"].get("corrected")

# ---------------------------------------------------------------------- checks from the bones
def _oracle_detections(labels, origin, spacing, geom, mirror=False):
    """Boxes of the virtual patient's bones on a film (the dataset's bone_boxes), as detections."""
    from X2BRLib import anatomy
    from X2BRLib.dataset.builder import bone_boxes
    from X2BRLib.detect.detector import Detection

    out = []
    for lab, u0, v0, u1, v1 in bone_boxes(labels, origin, spacing, geom):
        if mirror:
            u0, u1 = geom.width - 1 - u1, geom.width - 1 - u0
        out.append(Detection(int(lab), anatomy.bone(int(lab)).name, 0.9, (u0, v0, u1, v1)))
    return out


def test_the_same_bones_at_the_same_heights_agree_and_a_wrong_spacing_is_caught(sample_patient):
    labels, origin, spacing, _, ll = sample_patient
    pa = ProjectionGeometry.chest("PA", size_px=(256, 256))
    d_pa, d_ll = (_oracle_detections(labels, origin, spacing, g) for g in (pa, ll))
    same = pair.vertical_scale(d_pa, pa, d_ll, ll)
    assert same["checked"] and same["n_bones"] >= 30
    assert same["ratio"] == pytest.approx(1.0, abs=0.03) and abs(same["offset_mm"]) < 3.0
    film = read_radiograph(PA_FILM)
    for factor in (1.4, 1.2):  # the lateral read with a 40 % (20 %: rp_p92's 21 % with detector v3) too large pixel
        wrong = ProjectionGeometry.chest("LL", size_px=(256, 256), spacing_mm=np.array(ll.spacing_mm) * factor)
        scale = pair.vertical_scale(d_pa, pa, d_ll, wrong)
        assert scale["ratio"] == pytest.approx(factor, abs=0.05)
        with pytest.raises(InputError, match=f"scales disagree.* {100 * (scale['ratio'] - 1):.0f} % taller on the lateral"):
            pair.check_scales(scale, film, film)
    pair.check_scales(same, film, film)  # agreeing scales pass
    assert not pair.vertical_scale(d_pa[:2], pa, d_ll[:2], ll)["checked"]


def test_the_back_side_of_a_lateral_from_the_spine_and_sternum(sample_patient):
    labels, origin, spacing, image, ll = sample_patient
    d = _oracle_detections(labels, origin, spacing, ll)
    assert pair.mirror_evidence(image, "LL", d) == {"back_side": "right", "from": "detector", "contrast": None,
                                                   "looks_mirrored": False}
    flipped = pair.mirror_evidence(image[:, ::-1], "LL", _oracle_detections(labels, origin, spacing, ll, True))
    assert flipped["back_side"] == "left" and flipped["looks_mirrored"]
    assert not pair.mirror_evidence(image[:, ::-1], "RL", _oracle_detections(labels, origin, spacing, ll, True))[
        "looks_mirrored"]


# ---------------------------------------------------------------------- bad pairs: one line, nothing written
def _run(tmp_path, *argv):
    out = tmp_path / "out"
    rc = main(["reconstruct", *map(str, argv), "-o", str(out), "--device", "cpu", "--no-progress"])
    return rc, out


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in err if ln.startswith("x2br: error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_two_frontal_films_are_refused_by_the_tag_and_by_the_bones(tmp_path, detector, frontal_checked):
    frontal, dets = frontal_checked
    with pytest.raises(InputError, match=r"two frontal films: the --lateral film is a frontal film \(ViewPosition PA\)"):
        pair.prepare_lateral(frontal, dets, PA_FILM, detector, (256, 256))
    png = write_radiograph_png(tmp_path / "pa_copy.png", read_radiograph(PA_FILM).image)  # no tag left
    with pytest.raises(InputError, match="two frontal films: the --lateral film looks frontal .*left and right ribs"):
        pair.prepare_lateral(frontal, dets, png, detector, (256, 256))


def test_a_lateral_given_as_the_film_is_refused(tmp_path, sample_patient):
    lat = read_radiograph(_write_lateral(tmp_path / "lat.dcm", sample_patient), default_spacing_mm=None)
    with pytest.raises(InputError, match=r"is a lateral film \(ViewPosition LL\): give the PA or AP film as the film"):
        pair.check_main_film(lat)
    with pytest.raises(InputError, match="is a lateral film"):  # and the pair given the wrong way round
        pair.check_views(lat, read_radiograph(PA_FILM))


def test_a_lateral_png_given_as_the_main_film_is_warned_about(tmp_path, sample_patient, detector):
    """Without tags only the bones tell: the lateral's ribs of both sides overlap, and its bones do not
    fit the frontal layout (issue 14: a lateral film given as the frontal one)."""
    from X2BRLib.filmcheck import LAYOUT_MAX_RESIDUAL_MM, check_and_scale

    png = write_radiograph_png(tmp_path / "lat.png", sample_patient[3])
    out, _ = check_and_scale(read_radiograph(png, default_spacing_mm=None), detector)
    fc = out.meta["film_check"]
    assert not fc["refused"] and fc["rib_side_separation"] < 0.15 and fc["layout_residual_mm"] > LAYOUT_MAX_RESIDUAL_MM
    assert any("looks like a lateral film" in w for w in out.warnings)


@pytest.mark.parametrize("who, words", [({"patient_id": "SOMEONE-ELSE"}, "different patients (their PatientID differ)"),
                                        ({"study_uid": "1.2.3.4.5"}, "different studies (their StudyInstanceUID differ)")])
def test_films_of_different_patients_or_studies_are_refused(tmp_path, sample_patient, who, words):
    lat = pair.read_lateral(_write_lateral(tmp_path / "lat.dcm", sample_patient, **who))
    with pytest.raises(InputError) as info:
        pair.check_identity(read_radiograph(PA_FILM), lat)
    assert words in str(info.value) and str(info.value).count("\n") == 0


def test_the_command_says_one_line_and_writes_nothing_for_a_bad_pair(tmp_path, sample_patient, capsys):
    """The whole command (model, detector, both films): a lateral as the film, then a good pair
    with one-view weights named by the user: refused with one line, nothing written."""
    lat = _write_lateral(tmp_path / "lat.dcm", sample_patient)
    rc, out = _run(tmp_path, lat, "--lateral", PA_FILM)
    assert rc == 2 and not out.exists()
    assert "is a lateral film (ViewPosition LL): give the PA or AP film as the film" in _error_line(capsys)
    rc, out = _run(tmp_path, PA_FILM, "--lateral", lat, "--weights", ONE_VIEW_WEIGHTS)
    assert rc == 2 and not out.exists()
    assert "these weights read one film; a lateral film needs two-view weights" in _error_line(capsys)


def test_a_pair_reconstructs_with_the_shipped_two_view_model(tmp_path, sample_patient):
    """No --weights with --lateral: the shipped two-view weights (X2B v6) read both films; the report
    names both views and the model; fast quality keeps it short on 2 cores."""
    lat = _write_lateral(tmp_path / "lat.dcm", sample_patient)
    rc, out = _run(tmp_path, PA_FILM, "--lateral", lat, "--quality", "fast")
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["views"] == ["PA", "LL"]
    assert report["model"]["views"] == 2 and report["model"]["weights"] == str(DEFAULT_TWO_VIEW_WEIGHTS)
    assert sum(report["bone_volumes_ml"].values()) > 300  # a skeleton, not specks


def test_the_lateral_options_are_checked_before_any_work(tmp_path, capsys):
    rc, out = _run(tmp_path, PA_FILM, PA_FILM, "--lateral", PA_FILM)
    assert rc == 2 and "--lateral goes with one PA film, not 2 inputs" in _error_line(capsys)
    rc, out = _run(tmp_path, PA_FILM, "--lateral-view", "RL")
    assert rc == 2 and "need --lateral LAT_FILM" in _error_line(capsys) and not out.exists()
    with pytest.raises(SystemExit):
        main(["reconstruct", str(PA_FILM), "-o", str(tmp_path / "x"), "--lateral", str(PA_FILM),
              "--lateral-view", "AP"])
    with pytest.raises(InputError, match="lateral_view must be LL or RL"):
        from X2BRLib.pipeline import ReconstructOptions

        ReconstructOptions(lateral=PA_FILM, lateral_view="PA")


# ---------------------------------------------------------------------- outputs of a pair
def test_the_report_and_preview_of_a_pair_record_both_films(tmp_path, sample_patient, detector, frontal_checked):
    """A Reconstruction with its lateral as the pipeline returns it (the label volume is the
    virtual patient's: the writers are under test here, not the network)."""
    from PIL import Image

    from X2BRLib.pipeline import Reconstruction, write_outputs

    labels, origin, spacing, _, _ = sample_patient
    frontal, dets = frontal_checked
    lat = pair.prepare_lateral(frontal, dets, _write_lateral(tmp_path / "lat.dcm", sample_patient), detector,
                               (256, 256))
    image, geom = to_network_input(frontal, (256, 256))
    rec = Reconstruction(labels, origin, spacing, geom, image, frontal, lateral=lat)
    paths = write_outputs(rec, tmp_path / "out", meshes=False)
    report = json.loads(open(paths["report"]).read())
    assert report["views"] == ["PA", "LL"] and report["lateral"]["view"] == "LL"
    assert report["lateral"]["input"] == str(tmp_path / "lat.dcm") and report["input"] == str(PA_FILM)
    assert report["lateral"]["spacing"]["source"] == "file"
    assert report["pair"]["identity"]["same_study"] is True and report["pair"]["assumptions"]
    text = json.dumps(report)
    assert _study(PA_FILM)[0] not in text and "_sha256" not in text  # no PatientID, not even its digest
    assert Image.open(paths["preview"]).size[0] == 1500  # film, lateral, 3D view


# ---------------------------------------------------------------------- the Slicer module's input
def test_slicers_lateral_input_reaches_the_command_as_the_users(tmp_path, sample_patient):
    slicer = pytest.importorskip("slicer", reason="the slicer-core wheel gives the MRML scene")  # noqa: F841
    from X2BRLib import scene, scene_input, slicer_process
    from X2BRLib.cli import build_parser
    from X2BRLib.pipeline import ReconstructOptions

    mrml_scene, logics = scene.headless_scene()
    try:
        lat_path = _write_lateral(tmp_path / "lat.dcm", sample_patient)
        film = logics["Volumes"].AddArchetypeVolume(str(PA_FILM), "chest PA")
        lateral = logics["Volumes"].AddArchetypeVolume(str(lat_path), "chest LL")
        with pytest.raises(InputError, match="picked as the radiograph and as the lateral film"):
            scene_input.check_lateral_volume(film, film)
        assert scene_input.check_lateral_volume(film, lateral)["size_px"] == (256, 256)
        lateral.SetSpacing(1.5, 1.5, 1.0)  # corrected in the Volumes module: the user's spacing
        sent = scene_input.radiograph_input(lateral, tmp_path / "lateral")
        cmd = slicer_process.reconstruct_command("python", PA_FILM, tmp_path / "out", lateral=sent.path,
                                                 lateral_pixel_spacing=sent.pixel_spacing_mm)
        args = build_parser().parse_args(cmd[3:])
        opts = ReconstructOptions(lateral=args.lateral, lateral_pixel_spacing_mm=args.lateral_pixel_spacing)
        assert opts.lateral == sent.path and opts.lateral_pixel_spacing_mm == (1.5, 1.5)
        assert read_radiograph(sent.path).geometry.view == "LL"  # the DICOM copy keeps the view
        assert "--lateral" not in slicer_process.reconstruct_command("python", PA_FILM, tmp_path / "out")
    finally:
        mrml_scene.Clear(1)


# ---------------------------------------------------------------------- refinement: the lateral's boxes
def test_confident_lateral_boxes_move_each_bone_front_to_back_only(sample_patient):
    """Bones of the virtual patient moved 12 mm forward (and one 60 mm) are put back by their boxes
    on its LL film, along the antero-posterior axis only; unconfident boxes move nothing."""
    from X2BRLib.refine.lateral_fit import MAX_SHIFT_MM, lateral_ap_shifts

    labels, origin, spacing, _, ll = sample_patient
    idx = np.argwhere(labels > 0)
    points, lab = origin + idx * spacing, labels[tuple(idx.T)]
    truth = {int(b): points[lab == b].mean(0) for b in (3, 32, 39)}  # rib_left_3, T7, sternum
    moved = points.copy()
    for b, dy in ((3, -12.0), (32, -12.0), (39, -60.0)):  # LPS y: -12 mm is toward the front
        moved[lab == b, 1] += dy
    boxes = [d for d in _oracle_detections(labels, origin, spacing, ll) if d.label in truth]
    V, info = lateral_ap_shifts(moved, lab, ll, boxes)
    assert sorted(info) == [3, 32, 39] and ll.u_dir == (0.0, 1.0, 0.0)
    for b in (3, 32):
        assert info[b]["shift_mm"] == pytest.approx(12.0, abs=1.5)
        assert np.allclose(V[lab == b].mean(0), truth[b], atol=1.5)
        assert np.allclose(V[lab == b][:, [0, 2]], moved[lab == b][:, [0, 2]])  # x and z untouched
    assert info[39]["shift_mm"] == MAX_SHIFT_MM and info[39]["wanted_mm"] == pytest.approx(60.0, abs=2.0)
    assert np.array_equal(V[~np.isin(lab, [3, 32, 39])], moved[~np.isin(lab, [3, 32, 39])])
    from dataclasses import replace

    unsure = [replace(d, confidence=0.3) for d in boxes]
    V, info = lateral_ap_shifts(moved, lab, ll, unsure)
    assert info == {} and np.array_equal(V, moved)  # today's behaviour without confident boxes
