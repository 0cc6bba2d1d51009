"""The Slicer module's scene logic (X2BRLib.scene) and its out-of-process runner
(X2BRLib.slicer_process) against a REAL MRML scene from the slicer-core wheel.

The bundled sample radiograph (a DICOM DX) is reconstructed once with the shipped
X2B weights (CPU, quality "fast"); the tests load it the way the module does and
check the nodes.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (requirements-test.txt) gives the MRML scene")

from X2BRLib import anatomy, scene  # noqa: E402
from X2BRLib.errors import InputError  # noqa: E402
from X2BRLib.io.radiograph import read_radiograph  # noqa: E402
from X2BRLib import slicer_process as sp  # noqa: E402
from X2BRLib.cli import SAMPLE_DIR  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::X2BRLib.io.radiograph.RadiographWarning")  # written NRRDs: no view
FILM_PX = (256, 256)  # (width, height) of the sample radiograph


# ---------------------------------------------------------------------- fixtures
@pytest.fixture()
def mrml():
    """A real MRML scene with Slicer's module logics (scene.headless_scene: no GUI, no stand-ins)."""
    mrml_scene, logics = scene.headless_scene()
    yield mrml_scene, logics
    mrml_scene.Clear(1)


@pytest.fixture(scope="module")
def film_path():
    """The bundled sample radiograph: a PA DICOM DX (256 x 256 px, ImagerPixelSpacing, SDD and
    source-to-patient distance, ViewPosition) of a held-out virtual patient."""
    path = SAMPLE_DIR / "sample_radiograph.dcm"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the sample radiograph is part of the repository")
    return path


@pytest.fixture(scope="module")
def reconstruction(film_path):
    """The shipped X2B model on the film (CPU, quality 'fast'), through pipeline.Reconstructor."""
    from X2BRLib.pipeline import ReconstructOptions, Reconstructor

    t0 = time.perf_counter()
    rec = Reconstructor(ReconstructOptions(quality="fast", device="cpu")).reconstruct(film_path)
    rec.timings_s["test_total"] = time.perf_counter() - t0
    return rec


@pytest.fixture(scope="module")
def loaded(film_path, reconstruction):
    """Film placed in a scene and bones loaded as the module does after a reconstruction
    (shared by the tests that only look at them)."""
    mrml_scene, logics = scene.headless_scene()
    film = scene.add_radiograph_volume(mrml_scene, film_path, "chest_pa film")
    seg = scene.load_segmentation(mrml_scene, reconstruction, name="chest_pa bones", source_volume=film)
    yield mrml_scene, film, seg, reconstruction
    mrml_scene.Clear(1)


def _segment_ids(seg_node) -> list[str]:
    s = seg_node.GetSegmentation()
    return [s.GetNthSegmentID(i) for i in range(s.GetNumberOfSegments())]


def _surface_points_ras(seg_node, segment_id) -> np.ndarray:
    from vtkmodules.util import numpy_support

    poly = scene.closed_surface(seg_node, segment_id)
    return numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(float)


def _segment_voxels_ras(seg_node, segment_id) -> np.ndarray:
    """(N, 3) RAS mm centres of a segment's voxels, from its binary labelmap as stored in the node."""
    import vtk
    from vtkmodules.util import numpy_support

    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    labelmap = segment.GetRepresentation("Binary labelmap")
    dims, extent = labelmap.GetDimensions(), labelmap.GetExtent()
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[::-1])
    kji = np.argwhere(values == segment.GetLabelValue())
    ijk = kji[:, ::-1] + [extent[0], extent[2], extent[4]]
    m = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(m)
    m = scene._numpy_matrix(m)
    return ijk @ m[:3, :3].T + m[:3, 3]


def _bounds_ras(seg_node) -> np.ndarray:
    b = [0.0] * 6
    seg_node.GetRASBounds(b)
    return np.array(b).reshape(3, 2)


# ---------------------------------------------------------------------- input checks
def test_a_ct_like_volume_is_refused_with_a_clear_message(mrml):
    import vtk

    mrml_scene, _ = mrml
    ct = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "chest CT")
    image = vtk.vtkImageData()
    image.SetDimensions(128, 128, 40)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    ct.SetAndObserveImageData(image)
    with pytest.raises(InputError, match=r"'chest CT' is a 3D volume \(128 x 128 x 40 voxels, 40 slices\).*"
                                         r"ONE 2D chest radiograph.*CT"):
        scene.check_radiograph_volume(ct)
    with pytest.raises(InputError, match="no radiograph selected"):
        scene.check_radiograph_volume(None)
    labels = mrml_scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    with pytest.raises(InputError, match="label map"):
        scene.check_radiograph_volume(labels)


def test_an_rgb_film_loaded_by_slicer_is_converted_to_luminance(mrml, tmp_path):
    import SimpleITK as sitk

    mrml_scene, logics = mrml
    grey = np.linspace(0, 255, 200 * 160).reshape(200, 160).astype(np.uint8)
    rgb = np.stack([grey, grey // 2, grey // 4], -1)
    itk = sitk.GetImageFromArray(rgb, isVector=True)
    itk.SetSpacing((0.2, 0.2))
    sitk.WriteImage(itk, str(tmp_path / "colour.nrrd"))
    node = logics["Volumes"].AddArchetypeVolume(str(tmp_path / "colour.nrrd"), "colour film")
    assert node.IsA("vtkMRMLVectorVolumeNode")
    info = scene.check_radiograph_volume(node)
    assert info["size_px"] == (160, 200) and info["components"] == 3
    assert any("converted to luminance" in w for w in info["warnings"])
    lum = scene.film_array(node)
    assert lum.shape == (200, 160)
    assert np.allclose(lum, rgb[..., :3].astype(float) @ [0.299, 0.587, 0.114], atol=1e-3)
    # grey stored as RGB (a typical JPEG): used as is, no colour warning
    itk = sitk.GetImageFromArray(np.stack([grey] * 3, -1), isVector=True)
    sitk.WriteImage(itk, str(tmp_path / "grey_rgb.nrrd"))
    node = logics["Volumes"].AddArchetypeVolume(str(tmp_path / "grey_rgb.nrrd"), "grey film")
    assert not any("colour" in w for w in scene.check_radiograph_volume(node)["warnings"])
    assert np.allclose(scene.film_array(node), grey, atol=1e-3)


def test_a_dicom_radiograph_loaded_by_slicer_is_read_from_its_file_until_changed(mrml, film_path, tmp_path):
    mrml_scene, logics = mrml
    node = logics["Volumes"].AddArchetypeVolume(str(film_path), "sample_radiograph")
    info = scene.check_radiograph_volume(node)  # a film as Slicer loads it: W x H x 1
    assert info["size_px"] == FILM_PX and info["warnings"] == []
    assert scene.source_file(node) == str(film_path)
    node.SetSpacing(1.5, 1.5, 1.0)  # the user corrects the spacing in the Volumes module
    assert scene.source_file(node) is None
    written = scene.write_volume_file(node, tmp_path / "input.nrrd")
    assert node.GetStorageNode().GetFileName() == str(film_path)  # the node's own file is untouched
    film = read_radiograph(written)
    assert film.geometry.spacing_mm == pytest.approx((1.5, 1.5))
    assert film.image.shape == (FILM_PX[1], FILM_PX[0])


# ---------------------------------------------------------------------- the placed film
def test_the_film_is_placed_on_the_isocentre_plane_facing_the_viewer(mrml, film_path):
    mrml_scene, _ = mrml
    radiograph = read_radiograph(film_path)
    g = radiograph.geometry
    node = scene.add_radiograph_volume(mrml_scene, radiograph, "film")
    assert node.GetImageData().GetDimensions() == (FILM_PX[0], FILM_PX[1], 1)
    m = scene.volume_ijk_to_ras(node)
    s = g.spacing_mm[0] / g.magnification  # detector spacing / magnification
    assert np.allclose(m[:3, 0], [-s, 0, 0])  # columns -> patient's left (RAS -x)
    assert np.allclose(m[:3, 1], [0, 0, -s])  # rows -> feet
    centre = m @ [(FILM_PX[0] - 1) / 2, (FILM_PX[1] - 1) / 2, 0, 1]
    iso_ras = scene.LPS_TO_RAS[:3, :3] @ g.isocenter_lps_mm
    assert np.allclose(centre[:3], iso_ras, atol=1e-6)  # the isocentre projects to the film centre
    point, normal = scene.film_plane_ras(node)
    assert abs(normal[1]) == pytest.approx(1.0) and point[1] == pytest.approx(iso_ras[1])  # coronal plane
    assert np.allclose(scene.film_array(node), radiograph.image)
    display = node.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == (1.0, 0.5)


# ---------------------------------------------------------------------- the segmentation
def test_a_reconstruction_loads_as_one_named_coloured_segment_per_bone(loaded):
    import vtk

    _, film, seg, rec = loaded
    present = [int(v) for v in np.unique(rec.labels_xyz) if v]
    expected = [anatomy.bone(v).name for v in present]
    assert len(expected) >= 30, f"only {len(expected)} bones reconstructed: {expected}"
    assert sorted(_segment_ids(seg)) == sorted(expected)
    tag = slicer.vtkSegment.GetTerminologyEntryTagName()
    assert tag == "TerminologyEntry"
    for name in expected:
        b = anatomy.bone(name)
        segment = seg.GetSegmentation().GetSegment(name)
        assert segment.GetName() == b.display_name
        assert np.allclose(segment.GetColor(), b.color_rgb, atol=1e-6)
        value = vtk.reference("")
        assert segment.GetTag(tag, value) and value.get() == b.slicer_terminology_string()
    assert seg.GetStorageNode() is None  # Save proposes a new file, not the temporary one
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is film


def test_closed_surfaces_exist_and_are_not_empty(loaded):
    _, _, seg, _ = loaded
    assert scene.all_surfaces_non_empty(seg)
    assert seg.GetDisplayNode().GetPreferredDisplayRepresentationName3D() == "Closed surface"
    for segment_id in _segment_ids(seg):
        poly = scene.closed_surface(seg, segment_id)
        assert poly.GetNumberOfPoints() > 20 and poly.GetNumberOfPolys() > 20, segment_id


def test_the_labels_keep_the_reconstruction_grid_in_mm(loaded):
    _, _, seg, rec = loaded
    sl = slicer
    geometry = seg.GetSegmentation().GetConversionParameter(
        sl.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    grid = sl.vtkOrientedImageData()
    sl.vtkSegmentationConverter.DeserializeImageGeometry(geometry, grid, False)
    assert grid.GetDimensions() == tuple(rec.labels_xyz.shape)  # the whole box, editable anywhere
    import vtk

    m = vtk.vtkMatrix4x4()
    grid.GetImageToWorldMatrix(m)
    ijk_to_ras = scene._numpy_matrix(m)
    expect = np.eye(4)
    expect[:3, :3] = np.diag(rec.spacing_mm)
    expect[:3, 3] = rec.origin_lps_mm
    assert np.allclose(ijk_to_ras, scene.LPS_TO_RAS @ expect, atol=1e-4)  # LPS -> RAS, nothing else


def test_bones_overlay_the_film_they_were_reconstructed_from(loaded):
    """Each closed-surface point, projected from the X-ray source onto the placed film's plane,
    lands inside the film; it lands on the pixel ProjectionGeometry gives; bones are brighter
    than the film's average where they project."""
    _, film, seg, rec = loaded
    geometry = read_radiograph(film.GetAttribute("X2BR.source")).geometry
    source_ras = scene.LPS_TO_RAS[:3, :3] @ geometry.source
    point, normal = scene.film_plane_ras(film)
    ras_to_ijk = np.linalg.inv(scene.volume_ijk_to_ras(film))
    image = scene.film_array(film)
    h, w = image.shape
    on_bone = []
    for segment_id in _segment_ids(seg):
        p = _surface_points_ras(seg, segment_id)
        d = p - source_ras
        t = ((point - source_ras) @ normal) / (d @ normal)
        hit = source_ras + t[:, None] * d
        ijk = (np.c_[hit, np.ones(len(hit))] @ ras_to_ijk.T)[:, :3]
        assert np.allclose(ijk[:, 2], 0, atol=1e-6)
        inside = (ijk[:, 0] > -0.5) & (ijk[:, 0] < w - 0.5) & (ijk[:, 1] > -0.5) & (ijk[:, 1] < h - 0.5)
        assert inside.mean() > 0.99, f"{segment_id}: {inside.mean():.3f} of its surface projects onto the film"
        uv, _ = geometry.project(p @ scene.LPS_TO_RAS[:3, :3].T)  # RAS -> LPS, the library's own camera
        assert np.allclose(uv, ijk[:, :2], atol=1e-5)
        cols, rows = np.clip(np.rint(ijk[:, :2]), 0, [w - 1, h - 1]).astype(int).T
        on_bone.append(image[rows, cols])
    assert np.concatenate(on_bone).mean() > image.mean() + 0.1


def test_the_film_plane_cuts_through_the_bones_inside_the_reconstruction_box(loaded):
    _, film, seg, rec = loaded
    geometry = read_radiograph(film.GetAttribute("X2BR.source")).geometry  # PA: source posterior
    bounds = _bounds_ras(seg)  # rows R, A, S: (min, max)
    point, _ = scene.film_plane_ras(film)
    assert (scene.LPS_TO_RAS[:3, :3] @ geometry.source)[1] < bounds[1, 0]  # the source is behind the patient
    assert bounds[1, 0] < point[1] < bounds[1, 1]  # the film's plane cuts through the chest
    lo, hi = geometry.box_bounds_lps_mm()
    box_ras = np.sort(np.stack([scene.LPS_TO_RAS[:3, :3] @ lo, scene.LPS_TO_RAS[:3, :3] @ hi]), axis=0).T
    tol = 0.5 * max(rec.spacing_mm)  # smoothed surfaces may bulge past a voxel at the box's edge
    assert np.all(bounds[:, 0] >= box_ras[:, 0] - tol) and np.all(bounds[:, 1] <= box_ras[:, 1] + tol)


def test_bones_sit_where_the_sample_patient_has_them(loaded):
    """Per-bone centroids of the segmentation in the scene (RAS -> LPS) against the sample's
    ground truth (LPS, 2 mm box grid): a flipped side, a wrong scale or a missed LPS/RAS
    conversion moves them by centimetres."""
    _, _, seg, _ = loaded
    with np.load(SAMPLE_DIR / "sample_radiograph_gt.npz") as z:
        gt, voxel = z["gt_labels"], float(z["gt_voxel_mm"])
    gt_origin = -np.array(gt.shape) * voxel / 2 + voxel / 2  # box centred on the isocentre (0, 0, 0)
    errors = {}
    for segment_id in _segment_ids(seg):
        b = anatomy.bone(segment_id)
        truth = np.argwhere(gt == b.label)
        if len(truth) == 0:
            continue
        mine_lps = _segment_voxels_ras(seg, segment_id) @ scene.LPS_TO_RAS[:3, :3].T
        errors[segment_id] = np.linalg.norm(mine_lps.mean(0) - (gt_origin + truth * voxel).mean(0))
        if b.laterality:
            assert np.sign(mine_lps[:, 0].mean()) == (1 if b.laterality == "left" else -1), segment_id
    assert len(errors) >= 30 and np.median(list(errors.values())) < 15.0, errors


def test_a_segmentation_saves_as_seg_nrrd_and_reads_back_with_slicerio(loaded, tmp_path):
    import slicerio

    _, _, seg, rec = loaded
    path = scene.save_segmentation(seg, tmp_path / "bones.seg.nrrd")
    back = slicerio.read_segmentation(str(path))
    assert "left-posterior-superior" in path.read_bytes()[:2000].decode("latin1")
    segments = {s["id"]: s for s in back["segments"]}
    assert set(segments) == set(_segment_ids(seg))
    voxels, ijk_to_lps = back["voxels"], back["ijkToLPS"]
    for name, s in segments.items():
        b = anatomy.bone(name)
        assert s["name"] == b.display_name
        assert np.allclose(s["color"], b.color_rgb, atol=1e-6)
        assert s["terminology"]["type"][1] == b.sct_code
        # the same voxels, in LPS mm, as the reconstruction's labels
        mine = np.argwhere(voxels == s["labelValue"]) if voxels.ndim == 3 else np.argwhere(voxels[..., s["layer"]] == s["labelValue"])
        mine_lps = mine @ ijk_to_lps[:3, :3].T + ijk_to_lps[:3, 3]
        theirs_lps = np.argwhere(rec.labels_xyz == b.label) * rec.spacing_mm + rec.origin_lps_mm
        assert len(mine_lps) == len(theirs_lps)
        assert np.allclose(np.sort(mine_lps, 0), np.sort(theirs_lps, 0), atol=1e-3)


def test_loading_into_an_existing_node_replaces_its_segments(mrml, reconstruction, tmp_path):
    from X2BRLib.io.outputs import write_segmentation_nrrd

    mrml_scene, _ = mrml
    rec = reconstruction
    seg = scene.load_segmentation(mrml_scene, rec, closed_surfaces=False)
    assert len(_segment_ids(seg)) > 1

    lab = np.where(rec.labels_xyz == anatomy.bone("sternum").label, rec.labels_xyz, 0).astype(np.uint8)
    path = write_segmentation_nrrd(tmp_path / "only_sternum.seg.nrrd", lab, rec.origin_lps_mm, rec.spacing_mm)
    same = scene.load_segmentation(mrml_scene, path, node=seg)
    assert same is seg and _segment_ids(seg) == ["sternum"]
    with pytest.raises(InputError, match="not found"):
        scene.load_segmentation(mrml_scene, tmp_path / "missing.seg.nrrd")


# ---------------------------------------------------------------------- out of process
def test_the_command_line_is_one_the_x2br_command_accepts(tmp_path):
    from X2BRLib.cli import build_parser

    cmd = sp.reconstruct_command("/usr/bin/python3", tmp_path / "film.dcm", tmp_path / "out", "cpu", "fast")
    assert cmd[:4] == ["/usr/bin/python3", "-m", "X2BRLib.cli", "reconstruct"]
    args = build_parser().parse_args(cmd[3:])
    assert (args.device, args.quality, args.overwrite, args.no_meshes) == ("cpu", "fast", True, True)
    assert args.inputs == [str(tmp_path / "film.dcm")] and args.output == str(tmp_path / "out")
    refined = build_parser().parse_args(sp.reconstruct_command("py", "f.dcm", "out", refine=True)[3:])
    assert refined.refine and not refined.no_meshes  # the refinement's closed meshes are loaded as surfaces
    with pytest.raises(ValueError, match="quality"):
        sp.reconstruct_command("python", "f.png", "out", quality="best")
    square = build_parser().parse_args(sp.reconstruct_command("py", "f.png", "out", pixel_spacing=(0.2, 0.2))[3:])
    oblong = build_parser().parse_args(sp.reconstruct_command("py", "f.png", "out", pixel_spacing=(0.2, 0.3))[3:])
    assert (square.pixel_spacing, oblong.pixel_spacing) == (0.2, (0.2, 0.3))  # column, row
    for bad in ("0", "-0.1", "nan", "0.1,0.2,0.3", "a"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["reconstruct", "f.png", "-o", "out", "--pixel-spacing", bad])
    env = sp.subprocess_environment({"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(sp.library_root()), "/x"]


def test_progress_lines_are_understood():
    assert sp.parse_line("x2br: reconstructing /tmp/a.png\n").kind == "stage"
    e = sp.parse_line("x2br: error: /tmp/a.png: constant image (every pixel is 0): nothing to reconstruct")
    assert e.kind == "error" and e.message.startswith("/tmp/a.png: constant image")
    w = sp.parse_line("/x/pipeline.py:143: SpacingWarning: /tmp/a.png: no valid pixel spacing (PNG files carry "
                      "no detector pixel spacing); using the default 0.143 mm")
    assert w.kind == "warning" and w.message.startswith("/tmp/a.png: no valid pixel spacing")
    r = sp.parse_line(json.dumps({"reconstructed": [{"bones_found": 44, "seconds": 9.5}], "failed": []}))
    assert r.kind == "result" and r.data["reconstructed"][0]["bones_found"] == 44 and "44 bones" in r.message
    assert sp.parse_line("Traceback (most recent call last):").kind == "log"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cancel_kills_the_whole_process_tree():
    child = "import time; time.sleep(120)"
    parent = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {child!r}]); "
              "print('child', p.pid, flush=True); time.sleep(120)")
    job = sp.ReconstructionProcess([sys.executable, "-c", parent]).start()
    deadline = time.monotonic() + 20
    while not any(ln.startswith("child") for ln in job.log) and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.05)
    child_pid = int(next(ln for ln in job.log if ln.startswith("child")).split()[1])
    assert _alive(job.proc.pid) and _alive(child_pid)
    job.cancel()
    assert job.wait(timeout=10) is not None and job.cancelled
    assert job.failure_message() == "Cancelled."
    time.sleep(0.2)
    assert not _alive(child_pid)


def test_the_out_of_process_command_gives_the_bones_the_module_loads(mrml, film_path, reconstruction, tmp_path):
    """The module's real path: `python -m X2BRLib.cli reconstruct` in a subprocess, read without
    blocking, then OUT/bones.seg.nrrd loaded into a segmentation node. It imports torch and the
    detector's ultralytics (the film check and the scale estimate run on every film; the module
    installs it for every reconstruction): `-X importtime` lists every module the command imported."""
    mrml_scene, _ = mrml
    out = tmp_path / "out"
    command = sp.reconstruct_command(sys.executable, film_path, out, "cpu", "fast")
    job = sp.ReconstructionProcess(command[:1] + ["-X", "importtime"] + command[1:],
                                   env=sp.subprocess_environment()).start()
    stages = []
    assert job.wait(timeout=240, callback=lambda ev: stages.extend(e.kind for e in ev)) == 0, job.failure_message()
    assert "stage" in stages and "result" in stages
    summary = job.result()
    assert summary["failed"] == [] and summary["reconstructed"][0]["bones_found"] >= 30
    assert job.warnings() == []  # a DICOM DX says its spacing, distances and view: nothing assumed
    seg = scene.load_segmentation(mrml_scene, out / "bones.seg.nrrd", name="from the command")
    assert scene.all_surfaces_non_empty(seg)
    direct = [anatomy.bone(int(v)).name for v in np.unique(reconstruction.labels_xyz) if v]
    ids = _segment_ids(seg)
    assert len(set(ids) ^ set(direct)) <= 2  # same model, same film: (nearly) the same bones
    imported = {ln.split("|")[-1].strip().split(".")[0] for ln in job.log if ln.startswith("import time:")}
    assert {"torch", "ultralytics"} <= imported
    report = json.loads((out / "report.json").read_text())
    assert report["grid"]["frame"] == "LPS" and not (out / "meshes").exists()
