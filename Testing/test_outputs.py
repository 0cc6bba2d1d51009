"""Result writers: .seg.nrrd read back by slicerio, STL by VTK, preview PNG, report JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest

from X2BRLib.anatomy import bone
from X2BRLib.errors import InputError
from X2BRLib.geometry import ProjectionGeometry
from X2BRLib.io.outputs import (labels_to_meshes, write_preview_png, write_report_json,
                                write_segmentation_nrrd, write_stl)

BOX = (128.0, 96.0, 128.0)


@pytest.fixture(scope="module")
def case():
    """Labels on a 4 mm box grid: a ball (sternum), a bar (left 3rd rib), a ball (T4)."""
    g = ProjectionGeometry.chest("PA", size_px=(64, 64), field_mm=200.0, box_size_mm=BOX)
    shape, origin, spacing = g.box_grid(4.0)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    p = origin + idx * spacing
    lab = np.zeros(shape, np.uint8)
    lab[np.linalg.norm(p - [0, -20, 0], axis=-1) < 20] = bone("sternum").label
    lab[(np.abs(p[..., 0] - 35) < 20) & (np.abs(p[..., 1]) < 6) & (np.abs(p[..., 2] - 30) < 6)] = bone("rib_left_3").label
    lab[np.linalg.norm(p - [0, 30, -20], axis=-1) < 14] = bone("vertebra_T4").label
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    return g, lab, origin, spacing, img


def test_segmentation_nrrd_roundtrip(case, tmp_path):
    import slicerio

    g, lab, origin, spacing, _ = case
    path = write_segmentation_nrrd(tmp_path / "bones.seg.nrrd", lab, origin, spacing)
    seg = slicerio.read_segmentation(str(path))
    assert np.array_equal(seg["voxels"], lab)
    expect = np.eye(4)
    expect[:3, :3] = np.diag(spacing)
    expect[:3, 3] = origin
    assert np.allclose(seg["ijkToLPS"], expect)
    segs = {s["id"]: s for s in seg["segments"]}
    assert set(segs) == {"sternum", "rib_left_3", "vertebra_T4"}
    for name, s in segs.items():
        b = bone(name)
        assert s["name"] == b.display_name and s["labelValue"] == b.label
        assert np.allclose(s["color"], b.color_rgb, atol=1e-6)
        assert s["terminology"]["type"][1] == b.sct_code
    assert segs["rib_left_3"]["terminology"]["typeModifier"][2] == "Left"
    header = path.read_bytes()[:4000].decode("latin1")
    assert "space: left-posterior-superior" in header
    with pytest.raises(InputError, match="bones.seg.nrrd"):
        write_segmentation_nrrd(path, lab, origin, spacing)
    write_segmentation_nrrd(path, lab, origin, spacing, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["bones.seg.nrrd"]  # no temp files left


def test_meshes_and_stl_roundtrip(case, tmp_path):
    import vtk

    g, lab, origin, spacing, _ = case
    meshes = labels_to_meshes(lab, origin, spacing, smooth_sigma_vox=0.7)
    assert set(meshes) == {"sternum", "rib_left_3", "vertebra_T4"}
    verts, faces = meshes["sternum"]
    assert np.allclose(verts.mean(0), [0, -20, 0], atol=2.0)  # LPS mm, not voxel indices
    r = np.linalg.norm(verts - verts.mean(0), axis=1)
    assert 15 < r.mean() < 23
    a, b, c = (verts[faces[:, i]].astype(float) for i in range(3))
    assert np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6 > 0  # outward normals
    path = write_stl(tmp_path / "sternum.stl", verts, faces)
    reader = vtk.vtkSTLReader()
    reader.SetFileName(str(path))
    reader.Update()
    poly = reader.GetOutput()
    assert poly.GetNumberOfCells() == len(faces)
    clean = vtk.vtkCleanPolyData()
    clean.SetInputData(poly)
    clean.Update()
    assert clean.GetOutput().GetNumberOfPoints() == len(np.unique(verts, axis=0))
    assert np.allclose(poly.GetBounds()[::2], verts.min(0), atol=1e-3)
    with pytest.raises(InputError):
        write_stl(path, verts, faces)


def test_preview_and_report(case, tmp_path):
    from PIL import Image

    g, lab, origin, spacing, img = case
    png = write_preview_png(tmp_path / "preview.png", img, g, lab, origin, spacing, title="test")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 100
    rep = write_report_json(tmp_path / "report.json", {"a": np.float32(1.5), "b": np.arange(3),
                                                     "c": tmp_path})
    assert json.loads(rep.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": str(tmp_path)}
    with pytest.raises(InputError, match="report.json"):
        write_report_json(rep, {})


def test_segmentation_loads_in_slicer_core(case, tmp_path):
    """Slicer's own segmentation reader (slicer-core, headless MRML) gets names, labels, RAS geometry."""
    slicer = pytest.importorskip("slicer")
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    g, lab, origin, spacing, _ = case
    path = write_segmentation_nrrd(tmp_path / "bones.seg.nrrd", lab, origin, spacing)
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    seg = node.GetSegmentation()
    got = {seg.GetNthSegmentID(i): seg.GetNthSegment(i) for i in range(seg.GetNumberOfSegments())}
    assert set(got) == {"sternum", "rib_left_3", "vertebra_T4"}
    for sid, s in got.items():
        b = bone(sid)
        assert s.GetName() == b.display_name and s.GetLabelValue() == b.label
        assert np.allclose(s.GetColor(), b.color_rgb, atol=1e-6)
        image = s.GetRepresentation("Binary labelmap")
        m = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(m)
        ras = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(3)])
        assert np.allclose(ras[:, :3], np.diag([-1, -1, 1]) * spacing)  # LPS -> RAS
        assert np.allclose(ras[:, 3], [-origin[0], -origin[1], origin[2]])
        assert (vtk_to_numpy(image.GetPointData().GetScalars()) == b.label).sum() == (lab == b.label).sum()


def test_overwrite_leaves_no_mesh_of_an_earlier_run_and_keeps_what_is_not_ours(case, tmp_path):
    from X2BRLib.pipeline import Reconstruction, write_outputs

    g, lab, origin, spacing, img = case
    first = Reconstruction(lab, origin, spacing, g, img, None)
    out = tmp_path / "out"
    write_outputs(first, out)
    assert {p.name for p in (out / "meshes").iterdir()} == {"sternum.stl", "rib_left_3.stl", "vertebra_T4.stl"}
    (out / "meshes" / "my_notes.txt").write_text("mine")
    second = Reconstruction(np.where(lab == bone("rib_left_3").label, 0, lab).astype(np.uint8),
                            origin, spacing, g, img, None)
    with pytest.raises(InputError, match="--overwrite"):
        write_outputs(second, out)
    write_outputs(second, out, overwrite=True)
    assert {p.name for p in (out / "meshes").iterdir()} == {"sternum.stl", "vertebra_T4.stl", "my_notes.txt"}
    assert json.loads((out / "report.json").read_text())["outputs"]["meshes"] == 2
    write_outputs(second, out, overwrite=True, meshes=False)  # no meshes asked: none of ours stays
    assert [p.name for p in (out / "meshes").iterdir()] == ["my_notes.txt"]
    (out / "meshes" / "my_notes.txt").unlink()
    write_outputs(second, out, overwrite=True, meshes=False)
    assert not (out / "meshes").exists()
