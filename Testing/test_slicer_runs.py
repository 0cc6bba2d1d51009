"""The Slicer module's runs on a REAL MRML scene (slicer-core wheel): where each result goes
(X2BRLib.scene_results: nothing earlier is destroyed, edits are asked about) and which file the
reconstruction reads (X2BRLib.scene_input: a spacing corrected in Slicer wins over the DICOM file).

Small label volumes written by X2BR's own .seg.nrrd writer stand for the command's output, so
these tests take seconds; the real film is the bundled sample DICOM.
"""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (requirements-test.txt) gives the MRML scene")

from X2BRLib import anatomy, scene, scene_input, scene_results  # noqa: E402
from X2BRLib.cli import SAMPLE_DIR  # noqa: E402
from X2BRLib.io.outputs import write_segmentation_nrrd  # noqa: E402
from X2BRLib.io.radiograph import read_radiograph  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::X2BRLib.io.radiograph.RadiographWarning")
FILM = SAMPLE_DIR / "sample_radiograph.dcm"


@pytest.fixture()
def mrml():
    mrml_scene, logics = scene.headless_scene()
    yield mrml_scene, logics
    mrml_scene.Clear(1)


def _bones_file(path, bones=("sternum", "rib_left_3", "vertebra_T7"), shift=0):
    """A small .seg.nrrd (32 x 24 x 40 voxels of 4 mm) with one block per bone, as the command writes."""
    labels = np.zeros((32, 24, 40), np.uint8)
    for n, name in enumerate(bones):
        labels[4 + 8 * n + shift: 10 + 8 * n + shift, 6:18, 10:30] = anatomy.bone(name).label
    return write_segmentation_nrrd(path, labels, (-64.0, -48.0, -80.0), (4.0, 4.0, 4.0))


def _segment_ids(node):
    s = node.GetSegmentation()
    return [s.GetNthSegmentID(i) for i in range(s.GetNumberOfSegments())]


def _paint(node, segment_id, value=None):
    """Change a segment's voxels the way a Segment Editor stroke does: edit the labelmap in place."""
    from vtkmodules.util import numpy_support

    segment = node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation("Binary labelmap")
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    voxels[np.flatnonzero(voxels == segment.GetLabelValue())[:50]] = 0 if value is None else value
    image.Modified()


# ---------------------------------------------------------------------- where results go
def test_each_run_makes_a_new_segmentation_and_keeps_the_earlier_ones(mrml, tmp_path):
    mrml_scene, _ = mrml
    first_choice = scene_results.choose_output(mrml_scene, "chest")
    assert first_choice.node is None and first_choice.question is None
    film1, seg1, notes = scene_results.load_result(mrml_scene, _bones_file(tmp_path / "a.seg.nrrd"), FILM, "chest",
                                                   first_choice)
    assert notes == [] and seg1.GetName() == "chest bones (X2BR run 1)"
    before = scene_results.segmentation_fingerprint(seg1)

    second_choice = scene_results.choose_output(mrml_scene, "chest")  # what the module does on the next click
    film2, seg2, _ = scene_results.load_result(mrml_scene, _bones_file(tmp_path / "b.seg.nrrd", ("sternum",), 2),
                                               FILM, "chest", second_choice)
    assert seg2 is not seg1 and seg2.GetName() == "chest bones (X2BR run 2)"
    assert mrml_scene.GetNodeByID(seg1.GetID()) is seg1
    assert sorted(_segment_ids(seg1)) == ["rib_left_3", "sternum", "vertebra_T7"]
    assert scene_results.segmentation_fingerprint(seg1) == before
    assert film2 is film1  # the very same film and placement: shown once, nothing lost
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2


def test_the_film_of_an_earlier_run_for_another_radiograph_is_never_overwritten(mrml, tmp_path):
    mrml_scene, _ = mrml
    other = scene_input.dicom_with_spacing(FILM, (0.2, 0.2), tmp_path / "other.dcm")  # another film
    film1, _, _ = scene_results.load_result(mrml_scene, _bones_file(tmp_path / "a.seg.nrrd"), FILM, "chest")
    geometry1, matrix1 = film1.GetAttribute("X2BR.geometry"), scene.volume_ijk_to_ras(film1)
    film2, seg2, _ = scene_results.load_result(mrml_scene, _bones_file(tmp_path / "b.seg.nrrd"), other, "other")
    assert film2 is not film1 and film1.GetAttribute("X2BR.source") == str(FILM)
    assert film1.GetAttribute("X2BR.geometry") == geometry1
    assert np.allclose(scene.volume_ijk_to_ras(film1), matrix1)
    assert seg2.GetName() == "other bones (X2BR run 1)"
    assert seg2.GetNodeReference(seg2.GetReferenceImageGeometryReferenceRole()) is film2


def test_a_chosen_output_is_replaced_without_asking_only_while_unedited(mrml, tmp_path):
    mrml_scene, _ = mrml
    _, seg, _ = scene_results.load_result(mrml_scene, _bones_file(tmp_path / "a.seg.nrrd"), FILM, "chest")
    choice = scene_results.choose_output(mrml_scene, "chest", chosen=seg)
    assert choice.node is seg and choice.question is None  # an X2BR result as loaded: nothing to lose
    scene.create_closed_surfaces(seg)  # showing it in 3D is not an edit
    assert scene_results.content_at_risk(seg) is None

    _paint(seg, "sternum")  # a Segment Editor edit
    question = scene_results.choose_output(mrml_scene, "chest", chosen=seg).question
    assert question and "edited since X2BR loaded it" in question and "Replace" in question
    _, same, _ = scene_results.load_result(mrml_scene, _bones_file(tmp_path / "b.seg.nrrd", ("sternum",)), FILM,
                                           "chest", scene_results.choose_output(mrml_scene, "chest", chosen=seg))
    assert same is seg and _segment_ids(seg) == ["sternum"]  # the user said yes: replaced
    assert scene_results.content_at_risk(seg) is None  # and it is an unedited result again

    seg.GetSegmentation().GetSegment("sternum").SetName("my sternum")  # renaming is an edit too
    assert "edited" in scene_results.content_at_risk(seg)


def test_a_segmentation_x2br_did_not_make_is_never_replaced_without_asking(mrml):
    mrml_scene, _ = mrml
    empty = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    assert scene_results.choose_output(mrml_scene, "chest", chosen=empty).question is None  # nothing to lose
    mine = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my work")
    mine.GetSegmentation().AddEmptySegment("tumour")
    question = scene_results.choose_output(mrml_scene, "chest", chosen=mine).question
    assert question.startswith("'my work' holds 1 segment that X2BR did not make")


def test_edits_made_while_the_reconstruction_runs_are_kept(mrml, tmp_path):
    mrml_scene, _ = mrml
    _, seg, _ = scene_results.load_result(mrml_scene, _bones_file(tmp_path / "a.seg.nrrd"), FILM, "chest")
    choice = scene_results.choose_output(mrml_scene, "chest", chosen=seg)  # chosen, unedited: no question
    _paint(seg, "rib_left_3")  # ...then edited before the result arrives
    edited = scene_results.segmentation_fingerprint(seg)
    _, result, notes = scene_results.load_result(mrml_scene, _bones_file(tmp_path / "b.seg.nrrd"), FILM, "chest",
                                                 choice)
    assert result is not seg and scene_results.segmentation_fingerprint(seg) == edited
    assert len(notes) == 1 and "changed while X2BR was running" in notes[0]


# ---------------------------------------------------------------------- which file the command reads
def _as_dicom_module_loads(logics, path):
    """A film as the DICOM module leaves it: read by Slicer's archetype reader, no storage node kept
    (the module knows the file only through the DICOM database)."""
    node = logics["Volumes"].AddArchetypeVolume(str(path), "chest DX")
    node.SetAndObserveStorageNodeID(None)
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3")
    return node


def test_a_spacing_corrected_in_slicer_wins_over_the_dicom_file(mrml, tmp_path):
    mrml_scene, logics = mrml
    node = _as_dicom_module_loads(logics, FILM)
    unchanged = scene_input.radiograph_input(node, tmp_path, dicom_file=FILM)
    assert unchanged.path == str(FILM) and unchanged.note is None

    node.SetSpacing(0.2, 0.25, 1.0)  # the user corrects it in the Volumes module
    corrected = scene_input.radiograph_input(node, tmp_path, dicom_file=FILM)
    assert corrected.path != str(FILM) and "0.2 x 0.25 mm from the volume" in corrected.note
    original, sent = read_radiograph(FILM), read_radiograph(corrected.path)
    assert sent.geometry.spacing_mm == pytest.approx((0.2, 0.25))  # columns (i), rows (j)
    assert sent.meta["spacing_source"] == "ImagerPixelSpacing"
    assert (sent.meta["view"], sent.geometry.sdd_mm) == (original.meta["view"], original.geometry.sdd_mm)
    assert np.array_equal(sent.image, original.image)
    assert FILM.read_bytes() == (SAMPLE_DIR / "sample_radiograph.dcm").read_bytes()  # the user's file untouched


def test_a_dicom_film_with_a_storage_node_follows_the_same_rule(mrml, tmp_path):
    mrml_scene, logics = mrml
    node = logics["Volumes"].AddArchetypeVolume(str(FILM), "chest DX")
    assert scene_input.radiograph_input(node, tmp_path).path == str(FILM)
    node.SetSpacing(0.3, 0.3, 1.0)
    sent = read_radiograph(scene_input.radiograph_input(node, tmp_path).path)
    assert sent.geometry.spacing_mm == pytest.approx((0.3, 0.3))


def test_changed_pixels_send_the_volume_itself(mrml, tmp_path):
    from vtkmodules.util import numpy_support

    mrml_scene, logics = mrml
    node = _as_dicom_module_loads(logics, FILM)
    voxels = numpy_support.vtk_to_numpy(node.GetImageData().GetPointData().GetScalars())
    voxels[:1000] = voxels.max()  # e.g. a filter or an annotation burnt into the volume
    node.GetImageData().Modified()
    sent = scene_input.radiograph_input(node, tmp_path, dicom_file=FILM)
    assert sent.source == "volume" and sent.path.endswith(".nrrd")
    assert read_radiograph(sent.path).image.shape == read_radiograph(FILM).image.shape


def _command_options(film_input, tmp_path):
    """The reconstruct options the command Slicer would run for ``film_input`` ends up with."""
    from X2BRLib import slicer_process
    from X2BRLib.cli import build_parser
    from X2BRLib.pipeline import ReconstructOptions

    cmd = slicer_process.reconstruct_command("python", film_input.path, tmp_path / "out",
                                             pixel_spacing=film_input.pixel_spacing_mm)
    args = build_parser().parse_args(cmd[3:])
    return cmd, ReconstructOptions(pixel_spacing_mm=args.pixel_spacing)


def test_a_spacing_corrected_in_slicer_is_the_users_and_no_estimate_replaces_it(mrml, tmp_path):
    from X2BRLib.detect.detector import Detector
    from X2BRLib.filmcheck import check_and_scale

    mrml_scene, logics = mrml
    node = _as_dicom_module_loads(logics, FILM)
    cmd, opts = _command_options(scene_input.radiograph_input(node, tmp_path, dicom_file=FILM), tmp_path)
    assert "--pixel-spacing" not in cmd and opts.pixel_spacing_mm is None  # the file's own spacing

    node.SetSpacing(0.05, 0.05, 1.0)  # a spacing the bones say is wrong (a chest a third of an adult's)
    corrected = scene_input.radiograph_input(node, tmp_path, dicom_file=FILM)
    cmd, opts = _command_options(corrected, tmp_path)
    assert cmd[cmd.index("--pixel-spacing") + 1] == "0.05" and opts.pixel_spacing_mm == (0.05, 0.05)
    detector = Detector(device="cpu")
    film = read_radiograph(corrected.path)
    as_file, _ = check_and_scale(film, detector)  # the same spacing as a file's: replaced by the estimate
    assert as_file.meta["scale"]["source"] == "estimate"
    as_user, _ = check_and_scale(film, detector, opts.pixel_spacing_mm)  # as the user's: kept
    assert as_user.meta["scale"]["source"] == "user" and as_user.geometry.spacing_mm == (0.05, 0.05)


def test_a_film_file_without_dicom_tags_whose_spacing_was_set_in_slicer_sends_it_as_the_users(mrml, tmp_path):
    mrml_scene, logics = mrml
    dicom = logics["Volumes"].AddArchetypeVolume(str(FILM), "chest DX")
    dicom.SetSpacing(1.0, 1.0, 1.0)  # as Slicer shows a file without spacing (PNG, JPEG)
    nrrd = scene.write_volume_file(dicom, tmp_path / "film.nrrd")  # (slicer-core's wheel reads no PNG)
    node = logics["Volumes"].AddArchetypeVolume(str(nrrd), "chest PNG")
    as_loaded = scene_input.radiograph_input(node, tmp_path)
    assert as_loaded.path == str(nrrd) and as_loaded.pixel_spacing_mm is None  # the file's 1 mm: estimated
    node.SetSpacing(1.2, 1.25, 1.0)
    corrected = scene_input.radiograph_input(node, tmp_path)
    assert corrected.source == "volume" and corrected.pixel_spacing_mm == pytest.approx((1.2, 1.25))
    cmd, opts = _command_options(corrected, tmp_path)
    assert cmd[cmd.index("--pixel-spacing") + 1] == "1.2,1.25" and opts.pixel_spacing_mm == (1.2, 1.25)


# ---------------------------------------------------------------------- the refinement's closed meshes
def test_the_refinements_closed_meshes_are_the_closed_surfaces_shown(mrml, tmp_path):
    """With --refine the command writes one closed mesh per bone (meshes/<bone>.stl, LPS mm): those
    are loaded as the segments' closed surfaces, not Slicer's surfaces of the voxel labels."""
    import vtk
    from vtkmodules.util import numpy_support

    from X2BRLib.io.outputs import write_stl

    mrml_scene, _ = mrml
    sphere = vtk.vtkSphereSource()
    sphere.SetCenter(-36.0, 0.0, -0.0)  # LPS mm, on the sternum block of _bones_file
    sphere.SetRadius(10.0)
    sphere.SetThetaResolution(24)
    sphere.SetPhiResolution(16)
    sphere.Update()
    poly = sphere.GetOutput()
    verts_lps = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    faces = numpy_support.vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    (tmp_path / "meshes").mkdir()
    write_stl(tmp_path / "meshes" / "sternum.stl", verts_lps, faces)

    _, seg, _ = scene_results.load_result(mrml_scene, _bones_file(tmp_path / "a.seg.nrrd"), FILM, "chest",
                                          meshes_dir=tmp_path / "meshes")
    shown = numpy_support.vtk_to_numpy(scene.closed_surface(seg, "sternum").GetPoints().GetData())
    assert scene.closed_surface(seg, "sternum").GetNumberOfPolys() == len(faces)
    expected_ras = verts_lps * [-1, -1, 1]
    assert np.allclose(np.unique(np.round(shown, 3), axis=0), np.unique(np.round(expected_ras, 3), axis=0), atol=1e-3)
    rib = scene.closed_surface(seg, "rib_left_3")  # no mesh for it: Slicer's surface of its labels
    assert rib.GetNumberOfPoints() > 0 and not np.allclose(rib.GetBounds(), scene.closed_surface(seg, "sternum").GetBounds())
    assert seg.GetSegmentation().GetSourceRepresentationName() == scene.BINARY_LABELMAP  # labels stay what is edited
    assert scene_results.content_at_risk(seg) is None
    _paint(seg, "sternum")  # after an edit, Slicer's surface of the edited labels replaces the mesh
    assert seg.GetSegmentation().GetSegment("sternum").GetRepresentation(scene.CLOSED_SURFACE) is None
    assert scene.create_closed_surfaces(seg)
    assert scene.closed_surface(seg, "sternum").GetNumberOfPolys() != len(faces)


def test_a_placed_film_is_reconstructed_from_its_source_never_from_its_display_pixels(mrml, tmp_path):
    from X2BRLib.errors import InputError

    mrml_scene, _ = mrml
    copy = scene_input.dicom_with_spacing(FILM, (0.3, 0.3), tmp_path / "copy.dcm")  # as a run's temporary film
    film, _, _ = scene_results.load_result(mrml_scene, _bones_file(tmp_path / "a.seg.nrrd"), copy, "chest")
    assert scene_input.radiograph_input(film, tmp_path).path == str(copy)
    copy.unlink()  # the run's temporary folder is deleted after loading
    with pytest.raises(InputError, match="is a film X2BR placed in the patient.*pick the radiograph you loaded"):
        scene_input.radiograph_input(film, tmp_path)
