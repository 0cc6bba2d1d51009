"""A pair's lateral film in the Slicer scene (issue 15), on a REAL MRML scene (slicer-core wheel):
placed by the same rule as the PA film with its own geometry (sagittal plane through the shared
isocentre, at the scale the reconstruction used), named apart from the user's nodes, reused only
when the very same, turned as the pair check turned it.

The run is the pipeline's own writer on the bundled sample patient (its true bones stand for the
network's: the scene code is under test here): the sample PA DICOM, an LL DRR of the sample CT
written into the same study (~10 s, once), ``pair.prepare_lateral`` with the shipped detector,
``write_outputs`` -> bones.seg.nrrd + report.json, loaded as the module loads a run.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (requirements-test.txt) gives the MRML scene")

from X2BRLib import pair, scene, scene_results  # noqa: E402
from X2BRLib.cli import SAMPLE_DIR  # noqa: E402
from X2BRLib.geometry import ProjectionGeometry  # noqa: E402
from X2BRLib.io.radiograph import read_radiograph, to_network_input, write_radiograph_png  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::X2BRLib.io.radiograph.RadiographWarning",
                                        "ignore:.*mirrored:UserWarning")
PA_FILM = SAMPLE_DIR / "sample_radiograph.dcm"


@pytest.fixture()
def mrml():
    mrml_scene, logics = scene.headless_scene()
    yield mrml_scene
    mrml_scene.Clear(1)


@pytest.fixture(scope="module")
def patient(sample_patient):
    """conftest's sample patient: labels (X, Y, Z), origin, spacing (LPS mm), its LL film, that film's geometry."""
    return sample_patient


def _run(folder, patient, detector, frontal_path, lateral_path, **lateral_kw):
    """A run's outputs (bones.seg.nrrd, report.json) as `x2br reconstruct FRONTAL --lateral LAT` writes them."""
    from X2BRLib import filmcheck
    from X2BRLib.io.outputs import write_report_json, write_segmentation_nrrd
    from X2BRLib.pipeline import Reconstruction

    labels, origin, spacing, _, _ = patient
    frontal, dets = filmcheck.check_and_scale(read_radiograph(frontal_path, default_spacing_mm=None), detector)
    lat = pair.prepare_lateral(frontal, dets, lateral_path, detector, (256, 256), **lateral_kw)
    image, geom = to_network_input(frontal, (256, 256))
    rec = Reconstruction(labels, origin, spacing, geom, image, frontal, lateral=lat)
    folder.mkdir(parents=True, exist_ok=True)
    seg = write_segmentation_nrrd(folder / "bones.seg.nrrd", labels, origin, spacing)  # write_outputs' writers,
    return seg, write_report_json(folder / "report.json", rec.report()), lat  # without the preview


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory, patient, detector):
    import pydicom

    from X2BRLib.io.dicom_writer import write_radiograph_dicom

    folder = tmp_path_factory.mktemp("pair")
    ds = pydicom.dcmread(str(PA_FILM), stop_before_pixels=True)
    lat_path = write_radiograph_dicom(folder / "lat.dcm", patient[3], patient[4], patient_id=str(ds.PatientID),
                                      study_uid=str(ds.StudyInstanceUID))
    seg, report, lat = _run(folder / "out", patient, detector, PA_FILM, lat_path)
    return seg, report, lat


def _segment_voxels_ras(seg_node) -> np.ndarray:
    """(N, 3) RAS mm centres of every segment's voxels as stored in the node."""
    import vtk
    from vtkmodules.util import numpy_support

    out = []
    segmentation = seg_node.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetSegment(segmentation.GetNthSegmentID(i))
        labelmap = segment.GetRepresentation("Binary labelmap")
        dims, extent = labelmap.GetDimensions(), labelmap.GetExtent()
        values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[::-1])
        ijk = np.argwhere(values == segment.GetLabelValue())[:, ::-1] + [extent[0], extent[2], extent[4]]
        m = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(m)
        m = scene._numpy_matrix(m)
        out.append(ijk @ m[:3, :3].T + m[:3, 3])
    return np.concatenate(out)


# ---------------------------------------------------------------------- placement
def test_the_lateral_film_is_placed_on_the_sagittal_plane_through_the_isocentre(mrml, dicom_run):
    seg_path, report_path, lat = dicom_run
    film, seg, notes = scene_results.load_result(mrml, seg_path, PA_FILM, "chest", report=report_path)
    assert notes == []
    node = scene_results.lateral_film_of(seg)
    assert node is not None and node is not film
    assert node.GetName() == "chest lateral (X2BR lateral film)"
    assert node.GetAttribute("X2BR.role") == scene.LATERAL_FILM_ROLE
    assert film.GetAttribute("X2BR.role") == scene.FILM_ROLE
    placement = lat.record["pair"]["placement"]  # the camera the run used: moved by the bones' height estimate
    g = pair.place_lateral(lat.radiograph.geometry, placement)  # full resolution, PA isocentre, chosen spacing
    off = placement["offset_si_mm"] if placement.get("applied") else 0.0
    assert ProjectionGeometry.from_json(node.GetAttribute("X2BR.geometry")) == g
    m = scene.volume_ijk_to_ras(node)
    s = g.spacing_mm[0] / g.magnification
    assert np.allclose(m[:3, 0], [0, -s, 0])  # LL: columns toward the back (RAS -A)
    assert np.allclose(m[:3, 1], [0, 0, -s])  # rows toward the feet
    w, h = g.size_px
    centre = m @ [(w - 1) / 2, (h - 1) / 2, 0, 1]
    pa_iso = json.loads(open(report_path).read())["geometry"]["isocenter_lps_mm"]  # the PA film's: shared
    iso_ras = scene.LPS_TO_RAS[:3, :3] @ np.array(pa_iso)
    # the film's centre lies on the central ray, which the placement moved along S by -offset
    assert np.allclose(g.isocenter_lps_mm, pa_iso) and np.allclose(centre[:3], iso_ras - [0, 0, off], atol=1e-6)
    point, normal = scene.film_plane_ras(node)
    assert abs(normal[0]) == pytest.approx(1.0) and point[0] == pytest.approx(iso_ras[0])  # sagittal
    assert np.allclose(scene.film_array(node), lat.radiograph.image)
    assert (node.GetDisplayNode().GetWindow(), node.GetDisplayNode().GetLevel()) == (1.0, 0.5)


def test_the_bones_overlay_the_placed_lateral_film(mrml, dicom_run):
    """Every bone voxel, projected from the lateral's source onto the placed lateral's plane, lands
    on the pixel the lateral's ProjectionGeometry gives, inside the film, and on bone (brighter)."""
    seg_path, report_path, lat = dicom_run
    _, seg, _ = scene_results.load_result(mrml, seg_path, PA_FILM, "chest", report=report_path)
    node = scene_results.lateral_film_of(seg)
    g = pair.place_lateral(lat.radiograph.geometry, lat.record["pair"]["placement"])  # the camera the run used
    source_ras = scene.LPS_TO_RAS[:3, :3] @ g.source
    point, normal = scene.film_plane_ras(node)
    p = _segment_voxels_ras(seg)
    d = p - source_ras
    hit = source_ras + (((point - source_ras) @ normal) / (d @ normal))[:, None] * d
    ijk = (np.c_[hit, np.ones(len(hit))] @ np.linalg.inv(scene.volume_ijk_to_ras(node)).T)[:, :3]
    uv, _ = g.project(p @ scene.LPS_TO_RAS[:3, :3].T)
    assert np.allclose(uv, ijk[:, :2], atol=1e-5) and np.allclose(ijk[:, 2], 0, atol=1e-6)
    image = scene.film_array(node)
    h, w = image.shape
    assert ((ijk[:, 0] > -0.5) & (ijk[:, 0] < w - 0.5) & (ijk[:, 1] > -0.5) & (ijk[:, 1] < h - 0.5)).mean() > 0.99
    cols, rows = np.clip(np.rint(ijk[:, :2]), 0, [w - 1, h - 1]).astype(int).T
    assert image[rows, cols].mean() > image.mean() + 0.1


# ---------------------------------------------------------------------- runs and the user's nodes
def test_a_rerun_reuses_the_same_lateral_and_another_lateral_gets_its_own_node(mrml, dicom_run, patient, detector,
                                                                               tmp_path):
    seg_path, report_path, _ = dicom_run
    mine = mrml.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "chest lateral (X2BR lateral film)")  # the user's
    _, seg1, _ = scene_results.load_result(mrml, seg_path, PA_FILM, "chest", report=report_path)
    lat1 = scene_results.lateral_film_of(seg1)
    assert lat1 is not mine and lat1.GetName() != mine.GetName() and mine.GetImageData() is None
    before = (lat1.GetAttribute("X2BR.geometry"), scene.volume_ijk_to_ras(lat1))
    _, seg2, _ = scene_results.load_result(mrml, seg_path, PA_FILM, "chest", report=report_path)
    assert seg2 is not seg1 and scene_results.lateral_film_of(seg2) is lat1  # the very same film: shown once
    # the same lateral file read with another spacing (--lateral-pixel-spacing): a new node, the first kept
    other_seg, other_report, _ = _run(tmp_path / "out", patient, detector, PA_FILM, lat1.GetAttribute("X2BR.source"),
                                      pixel_spacing_mm=1.6)
    _, seg3, _ = scene_results.load_result(mrml, other_seg, PA_FILM, "chest", report=other_report)
    lat3 = scene_results.lateral_film_of(seg3)
    assert lat3 is not lat1 and lat1.GetAttribute("X2BR.geometry") == before[0]
    assert np.allclose(scene.volume_ijk_to_ras(lat1), before[1])
    assert mrml.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 4  # the user's, the PA film, two laterals


def test_a_run_without_a_lateral_places_none_and_replacing_a_chosen_output_drops_its_old_reference(
        mrml, dicom_run, tmp_path):
    seg_path, report_path, _ = dicom_run
    _, seg, _ = scene_results.load_result(mrml, seg_path, PA_FILM, "chest", report=report_path)
    assert scene_results.lateral_film_of(seg) is not None
    single = json.loads(open(report_path).read())
    single["lateral"] = None
    choice = scene_results.choose_output(mrml, "chest", seg)  # unedited: replaced without asking
    assert choice.question is None
    _, same, notes = scene_results.load_result(mrml, seg_path, PA_FILM, "chest", choice, report=single)
    assert same is seg and notes == [] and scene_results.lateral_film_of(seg) is None


def test_a_mirrored_untagged_lateral_is_placed_as_the_run_turned_it_at_the_pa_films_spacing(
        mrml, patient, detector, tmp_path):
    """PNG films (no spacing, no tags): the PA film's spacing is the scale estimate's and the lateral
    takes it; the lateral was stored mirrored and the pair turned it: both are placed as reconstructed."""
    pa_png = write_radiograph_png(tmp_path / "pa.png", read_radiograph(PA_FILM).image)
    lat_png = write_radiograph_png(tmp_path / "lat.png", patient[3][:, ::-1])
    seg_path, report_path, lat = _run(tmp_path / "out", patient, detector, pa_png, lat_png)
    report = json.loads(open(report_path).read())
    assert lat.record["mirror_check"]["corrected"] and report["scale"]["source"] != "file"
    film, seg, notes = scene_results.load_result(mrml, seg_path, pa_png, "chest", report=report_path)
    node = scene_results.lateral_film_of(seg)
    assert notes == [] and np.allclose(scene.film_array(node), lat.radiograph.image)  # turned: back on the right
    assert not np.allclose(scene.film_array(node), read_radiograph(lat_png).image)
    lat_g, pa_g = lat.radiograph.geometry, ProjectionGeometry.from_json(film.GetAttribute("X2BR.geometry"))
    assert lat_g.spacing_mm == pytest.approx(tuple(report["scale"]["spacing_mm"]))
    assert pa_g.spacing_mm == pytest.approx(tuple(report["scale"]["spacing_mm"]))  # the bones' scale, not 0.143
    assert np.allclose(scene.volume_ijk_to_ras(film)[:3, 0], [-pa_g.spacing_mm[0] / pa_g.magnification, 0, 0])


def test_a_lateral_file_gone_since_the_run_is_said_and_the_bones_still_load(mrml, dicom_run, tmp_path):
    seg_path, report_path, _ = dicom_run
    report = json.loads(open(report_path).read())
    report["lateral"]["input"] = str(tmp_path / "gone.dcm")  # a temporary copy, removed since
    film, seg, notes = scene_results.load_result(mrml, seg_path, PA_FILM, "chest", report=report)
    assert film is not None and seg.GetSegmentation().GetNumberOfSegments() > 30
    assert scene_results.lateral_film_of(seg) is None
    assert len(notes) == 1 and notes[0].startswith("the lateral film could not be placed in the scene: ")
