"""One piece per bone (X2BRLib.refine.pieces): the largest-piece rule on label volumes, the
closed-piece check on meshes, and the refiner keeping both for an input that breaks bones (a
skeleton shrunk as a film read at the wrong pixel spacing gives, issue 14)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from X2BRLib import anatomy, metrics
from X2BRLib.cli import REPO
from X2BRLib.dataset.builder import bone_boxes
from X2BRLib.errors import WeightsError
from X2BRLib.geometry import ProjectionGeometry
from X2BRLib.refine.pieces import check_template, is_one_closed_piece, keep_largest_piece
from X2BRLib.refine.template import SkeletonTemplate, is_closed_manifold, mesh_components

GT = REPO / "Resources" / "SampleData" / "sample_radiograph_gt.npz"
TET = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])


def test_keep_largest_piece_keeps_26_connected_bodies_and_clears_specks():
    lab = np.zeros((12, 12, 12), np.uint8)
    rib = anatomy.bone("rib_left_3").label
    lab[1:5, 1:5, 1:5] = rib          # body: 64 voxels
    lab[5, 5, 5] = rib                # touches the body only at a corner: 26-connected, kept
    lab[9, 9, 9] = rib                # a speck apart: dropped
    lab[8:10, 1:3, 1] = rib           # a 4-voxel piece apart: dropped
    hum = anatomy.bone("humerus_right").label
    lab[7:11, 5:7, 5:7] = hum         # another bone, one piece, untouched
    out, removed = keep_largest_piece(lab)
    expect = lab.copy()
    expect[9, 9, 9] = 0
    expect[8:10, 1:3, 1] = 0
    np.testing.assert_array_equal(out, expect)
    assert removed == {"rib_left_3": 5}
    assert lab[9, 9, 9] == rib        # the input is not modified
    assert all(c == 1 for c in metrics.connected_components_per_bone(out).values() if c)
    same, none = keep_largest_piece(expect)
    np.testing.assert_array_equal(same, expect)
    assert none == {}


def test_closed_piece_check_agrees_with_the_reference_checks():
    tpl = SkeletonTemplate.load()
    for lab in tpl.labels_present()[::4]:
        v, f = tpl.bone(lab)
        assert is_one_closed_piece(len(v), f)
        for bad in (f[1:], np.concatenate([f[:5, [0, 2, 1]], f[5:]]), np.concatenate([f, f[:1]])):
            ref = is_closed_manifold(bad) and mesh_components(len(v), bad) == 1
            assert is_one_closed_piece(len(v), bad) == ref is False
    assert is_one_closed_piece(4, TET)
    assert not is_one_closed_piece(4, TET[:, [0, 2, 1]][:3])
    pinched = np.concatenate([TET, np.where(TET == 0, 0, TET + 3)])   # two tetrahedra sharing vertex 0
    assert mesh_components(7, pinched) == 1 and not is_closed_manifold(pinched)
    assert not is_one_closed_piece(7, pinched)
    apart = np.concatenate([TET, TET + 4])                            # two closed pieces
    assert is_closed_manifold(apart) and not is_one_closed_piece(8, apart)


def test_the_refiner_refuses_a_template_with_an_open_bone():
    from X2BRLib.refine.refiner import Refiner

    tpl = SkeletonTemplate.load()
    assert check_template(tpl) == []
    lab = anatomy.bone("scapula_left").label
    first = np.flatnonzero(tpl.vertex_labels[tpl.faces[:, 0]] == lab)[0]
    holed = SkeletonTemplate(tpl.vertices, np.delete(tpl.faces, first, axis=0), tpl.vertex_labels, tpl.meta)
    with pytest.raises(WeightsError, match="scapula_left"):
        Refiner(template=holed, detector=object())


def test_a_shrunken_skeleton_still_gives_one_piece_per_bone():
    """Boxes and X2B bones of the sample's true skeleton shrunk to 0.35 of its size about the box
    centre, as a film read at a third of its real pixel spacing gives; the template placed on them
    (no CPD, to stay fast) voxelises into broken bones, which the refiner must not return."""
    from X2BRLib.pipeline import Reconstruction
    from X2BRLib.refine.refiner import RefineOptions, Refiner
    from X2BRLib.refine.template import voxelise
    from X2BRLib.x2b.evaluate import _detections_from_boxes

    z = np.load(GT)
    geom = ProjectionGeometry.from_json(str(z["geometry"]))
    _, origin, spacing = geom.box_grid(float(z["gt_voxel_mm"]))
    gt = z["gt_labels"]
    centre, scale = (np.array(gt.shape) - 1) / 2, 0.35
    small = ndimage.affine_transform(gt, np.eye(3) / scale, offset=centre - centre / scale, order=0)
    dets = _detections_from_boxes(bone_boxes(small, origin, spacing, geom))
    rec = Reconstruction(small, origin, spacing, geom, np.zeros((256, 256), np.float32), None)
    out = Refiner(device="cpu", detector=object(), options=RefineOptions(register=False)).refine(rec, dets)
    removed = out.stats["refine"]["voxels_outside_largest_piece"]
    # the case is a real one: voxelising the placed meshes alone breaks bones
    meshes = out.meshes
    v = np.concatenate([m[0] for m in meshes.values()])
    offsets = np.cumsum([0] + [len(m[0]) for m in meshes.values()])[:-1]
    f = np.concatenate([m[1] + o for m, o in zip(meshes.values(), offsets)])
    vl = np.concatenate([np.full(len(m[0]), anatomy.bone(n).label) for n, m in meshes.items()])
    raw = metrics.connected_components_per_bone(voxelise((v, f, vl), gt.shape, origin, spacing))
    broken = sorted(n for n, c in raw.items() if c > 1)
    assert broken and sorted(removed) == broken
    comps = metrics.connected_components_per_bone(out.labels_xyz)
    assert sum(c == 1 for c in comps.values()) >= 40 and all(c <= 1 for c in comps.values())
    for name, (verts, faces) in meshes.items():
        assert is_one_closed_piece(len(verts), faces), name
