"""Tests of X2BRLib.metrics: small synthetic volumes with known answers."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # noqa: E402 (repo root)

from X2BRLib import metrics as M
from X2BRLib.anatomy import BONES, bone
from X2BRLib.errors import InputError
from X2BRLib.geometry import ProjectionGeometry

RIB = bone("rib_left_3").label
STERNUM = bone("sternum").label


def sphere(shape, center, radius, spacing=1.0):
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1) * spacing
    return np.linalg.norm(idx - np.asarray(center, float), axis=-1) <= radius


def two_bone_volume():
    v = np.zeros((40, 30, 30), np.uint8)
    v[5:15, 5:15, 5:25] = RIB
    v[22:35, 10:20, 8:20] = STERNUM
    return v


def test_identical_volumes():
    v = two_bone_volume()
    r = M.evaluate_case(v, v.copy(), (1.0, 1.0, 1.0), (0, 0, 0), 384.0, n_points=4000)
    assert r["iou_all_bone"] == 1.0 and r["iou_mean_per_bone"] == 1.0
    assert r["iou/rib_left_3"] == 1.0 and r["iou/sternum"] == 1.0
    assert r["chamfer_l1_mm"] == 0.0 and r["hd95_mm"] == 0.0 and r["chamfer_l1_unit"] == 0.0
    assert r["chamfer_l1_mm/rib_left_3"] == 0.0 and r["hd95_mm/sternum"] == 0.0
    assert r["missing_bones"] == 0 and r["extra_bones"] == 0 and r["n_bones_gt"] == 2
    assert math.isnan(r["iou/rib_left_1"]) and math.isnan(r["chamfer_l1_mm/rib_left_1"])


def test_iou_half_overlapping_boxes():
    a = np.zeros((30, 20, 20), np.uint8)
    b = np.zeros_like(a)
    a[0:10, 0:10, 0:10] = RIB
    b[5:15, 0:10, 0:10] = RIB  # overlap 500 voxels, union 1500
    assert M.iou_per_bone(a, b, labels=[RIB])[RIB] == pytest.approx(1 / 3)
    assert M.iou_all_bone(a, b) == pytest.approx(1 / 3)
    ious = M.iou_per_bone(a, b)
    assert set(ious) == {x.label for x in BONES}
    assert math.isnan(ious[STERNUM])


def test_iou_all_bone_ignores_label_identity():
    a = np.zeros((10, 10, 10), np.uint8)
    a[2:6, 2:6, 2:6] = RIB
    b = np.where(a > 0, STERNUM, 0).astype(np.uint8)
    assert M.iou_all_bone(a, b) == 1.0
    assert M.iou_per_bone(a, b, [RIB, STERNUM]) == {RIB: 0.0, STERNUM: 0.0}


def test_surface_points_placement_and_determinism():
    m = np.zeros((20, 20, 20), bool)
    m[5:15, 4:10, 2:18] = True
    spacing, origin = np.array([2.0, 1.0, 0.5]), np.array([-10.0, 3.0, 7.0])
    p = M.surface_points(m, spacing, origin, n=5000, seed=3)
    assert p.shape == (5000, 3)
    # the surface runs half-way between inside and outside voxel centres
    lo = origin + (np.array([5, 4, 2]) - 0.5) * spacing
    hi = origin + (np.array([14, 9, 17]) + 0.5) * spacing
    np.testing.assert_allclose(p.min(0), lo, atol=1e-2)
    np.testing.assert_allclose(p.max(0), hi, atol=1e-2)
    np.testing.assert_array_equal(p, M.surface_points(m, spacing, origin, n=5000, seed=3))
    assert not np.array_equal(p, M.surface_points(m, spacing, origin, n=5000, seed=4))
    assert M.surface_points(np.zeros((4, 4, 4), bool), spacing, origin).shape == (0, 3)


def test_chamfer_on_analytic_point_sets():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(20000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    d = 3.0
    a, b = 20.0 * u, (20.0 + d) * rng.permutation(u)
    assert M.chamfer_l1(a, b) == pytest.approx(d, abs=0.05)
    assert M.hausdorff95(a, b) == pytest.approx(d, abs=0.2)
    assert M.chamfer_l1(a, a) == 0.0
    # the definition: half the sum of the two mean directed (unsquared) distances
    pa, pb = np.array([[0.0, 0, 0]]), np.array([[3.0, 4, 0], [0, 0, 1]])
    assert M.chamfer_l1(pa, pb) == pytest.approx(0.5 * (1.0 + (5.0 + 1.0) / 2))
    assert math.isnan(M.chamfer_l1(pa, np.zeros((0, 3))))
    assert math.isnan(M.hausdorff95(np.zeros((0, 3)), pb))


def test_concentric_spheres_distance_equals_radius_gap():
    # every point of one surface is d mm from the other: chamfer = hd95 = d
    shape, c, d = (64, 64, 64), (32.0, 32.0, 32.0), 4.0
    gt = sphere(shape, c, 16.0).astype(np.uint8) * STERNUM
    pred = sphere(shape, c, 16.0 + d).astype(np.uint8) * STERNUM
    r = M.evaluate_case(pred, gt, (1, 1, 1), (0, 0, 0), 100.0, n_points=20000)
    assert r["chamfer_l1_mm"] == pytest.approx(d, abs=0.25)
    assert r["hd95_mm"] == pytest.approx(d, abs=0.5)
    assert r["chamfer_l1_mm/sternum"] == pytest.approx(r["chamfer_l1_mm"], abs=0.05)


def test_shifted_spheres_anisotropic_spacing():
    # a sphere moved by d: the distance at polar angle t is about d*|cos t|, so
    # chamfer ~ d/2 (mean of |cos t| over the sphere) and hd95 ~ 0.95 d
    spacing, d = np.array([0.5, 1.0, 1.0]), 4.0
    shape, c = (128, 64, 64), np.array([30.0, 32.0, 32.0])
    gt = sphere(shape, c, 18.0, spacing).astype(np.uint8) * RIB
    pred = sphere(shape, c + [d, 0, 0], 18.0, spacing).astype(np.uint8) * RIB
    r = M.evaluate_case(pred, gt, spacing, (0, 0, 0), 384.0, n_points=20000)
    assert r["chamfer_l1_mm"] == pytest.approx(d / 2, abs=0.25)
    assert r["hd95_mm"] == pytest.approx(0.95 * d, abs=0.4)
    assert r["chamfer_l1_unit"] == pytest.approx(r["chamfer_l1_mm"] / 384.0, rel=1e-12)


def test_unit_box_scale_from_geometry():
    g = ProjectionGeometry.chest(box_size_mm=(300.0, 200.0, 350.0))
    assert M.unit_box_scale_mm(g) == 350.0
    v = two_bone_volume()
    w = np.roll(v, 2, axis=0)
    r = M.evaluate_case(w, v, (1.5, 1.5, 1.5), (0, 0, 0), M.unit_box_scale_mm(g), n_points=3000,
                        per_bone_surface=False)
    assert r["chamfer_l1_mm"] > 0
    assert r["chamfer_l1_unit"] == pytest.approx(r["chamfer_l1_mm"] / 350.0, rel=1e-12)
    # unit-box distances equal distances between points mapped by to_unit_box
    pa = M.surface_points(w > 0, (1.5,) * 3, (0, 0, 0), 3000, 0)
    pb = M.surface_points(v > 0, (1.5,) * 3, (0, 0, 0), 3000, 0)
    assert M.chamfer_l1(g.to_unit_box(pa), g.to_unit_box(pb)) == pytest.approx(r["chamfer_l1_unit"])


def test_keys_use_catalog_names_and_are_stable():
    v = two_bone_volume()
    r = M.evaluate_case(v, v, (1, 1, 1), (0, 0, 0), 384.0, n_points=500)
    names = {b.name for b in BONES}
    for prefix in ("iou", "chamfer_l1_mm", "hd95_mm"):
        assert {k.split("/", 1)[1] for k in r if k.startswith(prefix + "/")} == names
    for k in ("iou_all_bone", "iou_mean_per_bone", "chamfer_l1_unit", "chamfer_l1_mm", "hd95_mm",
              "chamfer_l1_mm_mean_per_bone", "hd95_mm_mean_per_bone", "n_bones_gt",
              "missing_bones", "extra_bones"):
        assert k in r
    r2 = M.evaluate_case(v, v, (1, 1, 1), (0, 0, 0), 384.0, n_points=500, per_bone_surface=False)
    assert not any(k.startswith(("chamfer_l1_mm/", "hd95_mm/")) for k in r2)
    json.loads(json.dumps(M.json_safe(r), allow_nan=False))


def test_missing_and_extra_bones():
    gt = two_bone_volume()
    pred = np.where(gt == STERNUM, 0, gt).astype(np.uint8)  # sternum not predicted
    pred[0:3, 0:3, 0:3] = bone("clavicle_left").label      # a bone GT lacks
    r = M.evaluate_case(pred, gt, (1, 1, 1), (0, 0, 0), 384.0, n_points=2000)
    assert r["missing_bones"] == 1 and r["extra_bones"] == 1 and r["n_bones_gt"] == 2
    assert r["iou/sternum"] == 0.0 and r["iou/clavicle_left"] == 0.0
    assert math.isnan(r["chamfer_l1_mm/sternum"]) and math.isnan(r["hd95_mm/sternum"])
    assert math.isnan(r["chamfer_l1_mm/clavicle_left"])
    assert r["iou_mean_per_bone"] == pytest.approx(0.5)  # rib 1, sternum 0
    assert r["chamfer_l1_mm/rib_left_3"] == 0.0
    assert r["chamfer_l1_mm_mean_per_bone"] == 0.0


def test_empty_prediction():
    gt = two_bone_volume()
    r = M.evaluate_case(np.zeros_like(gt), gt, (1, 1, 1), (0, 0, 0), 384.0, n_points=500)
    assert r["iou_all_bone"] == 0.0 and r["iou_mean_per_bone"] == 0.0
    assert math.isnan(r["chamfer_l1_mm"]) and math.isnan(r["hd95_mm"]) and math.isnan(r["chamfer_l1_unit"])
    assert r["missing_bones"] == 2


def test_bad_input():
    with pytest.raises(InputError):
        M.iou_all_bone(np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3, 4), np.uint8))
    with pytest.raises(InputError):
        M.iou_per_bone(-np.ones((3, 3, 3), np.int16), np.zeros((3, 3, 3), np.int16))
    with pytest.raises(InputError):
        v = two_bone_volume()
        M.evaluate_case(v, v, (1, 1, 1), (0, 0, 0), 0.0)


def test_aggregate_ignores_nan():
    cases = [{"a": 1.0, "b": math.nan, "name": "x"}, {"a": 3.0, "b": 2.0}, {"a": 5.0, "b": None},
             {"a": math.nan, "c": math.nan}]
    s = M.aggregate(cases)
    assert s["n_cases"] == 4
    assert s["mean"]["a"] == 3.0 and s["std"]["a"] == pytest.approx(np.std([1, 3, 5]))
    assert s["mean"]["b"] == 2.0 and s["std"]["b"] == 0.0 and s["count"]["b"] == 1
    assert math.isnan(s["mean"]["c"]) and s["count"]["c"] == 0
    assert "name" not in s["mean"]
    assert M.aggregate([])["n_cases"] == 0


def test_connected_components_and_watertight():
    v = np.zeros((20, 20, 20), np.uint8)
    v[2:5, 2:5, 2:5] = RIB
    v[10:12, 10:12, 10:12] = RIB          # a second, separate piece
    v[15, 15, 15] = STERNUM
    v[16, 16, 16] = STERNUM               # touches only at a corner: 26-connected
    cc = M.connected_components_per_bone(v)
    assert cc["rib_left_3"] == 2 and cc["sternum"] == 1 and cc["rib_left_1"] == 0
    assert set(cc) == {b.name for b in BONES}
    verts, faces = M.surface_mesh(v == RIB)
    assert M.is_watertight(faces)
    assert not M.is_watertight(faces[1:])
    assert not M.is_watertight(np.zeros((0, 3), int))


# ---------------------------------------------------------------------------- consistency
@pytest.fixture(scope="module")
def gt_volume(sample_source):
    """Ground truth of the nominal virtual patient of the bundled 3 mm sample CT, 3 mm grid."""
    from X2BRLib.dataset.builder import warped_volumes
    from X2BRLib.dataset.virtual import identity_variation

    geom = ProjectionGeometry.chest("PA")
    shape, origin, spacing = geom.box_grid(3.0)
    return warped_volumes(sample_source, geom, identity_variation(), 3.0)[0].numpy(), spacing, origin


def _consistency(vol, spacing, origin):
    return M.consistency_metrics(vol, spacing, origin)


def _rib_azimuth(vol, label, spacing, origin):
    idx = np.argwhere(vol == label)
    p = origin + idx * spacing
    ribs = origin + np.argwhere((vol >= 1) & (vol <= 24)) * spacing
    axis = 0.5 * (ribs[:, :2].min(0) + ribs[:, :2].max(0))
    return idx, np.degrees(np.arctan2(p[:, 1] - axis[1], p[:, 0] - axis[0]))


def test_consistency_of_ground_truth(gt_volume):
    r = _consistency(*gt_volume)
    keys = {"n_bones_present", "frac_bones_single_component", "mean_components_per_bone",
            "frac_bones_watertight", "n_ribs_present", "rib_turning_deg_per_cm_mean",
            "rib_turning_deg_per_cm_max", "frac_ribs_unbroken", "n_vertebrae_missing",
            "frac_vertebra_pairs_ordered", "frac_vertebra_pairs_overlapping"}
    assert set(r) == keys
    json.loads(json.dumps(M.json_safe(r), allow_nan=False))
    assert r["n_bones_present"] == 45 and r["n_ribs_present"] == 24 and r["n_vertebrae_missing"] == 0
    assert r["frac_vertebra_pairs_ordered"] == 1.0 and r["frac_vertebra_pairs_overlapping"] == 0.0
    # the 3 mm sample CT's own labels leave a few thin ribs in pieces (the full CT: all whole)
    assert r["frac_bones_single_component"] > 0.75 and r["frac_ribs_unbroken"] > 0.6
    assert r["frac_bones_watertight"] > 0.9
    assert 5.0 < r["rib_turning_deg_per_cm_mean"] < 16.0


def test_consistency_detects_a_rib_cut_in_two(gt_volume):
    vol, spacing, origin = gt_volume
    gt = _consistency(vol, spacing, origin)
    rib = bone("rib_left_6").label
    assert M.connected_components_per_bone(vol)["rib_left_6"] == 1
    idx, az = _rib_azimuth(vol, rib, spacing, origin)
    cut = idx[np.abs(az - np.median(az)) < 7.0]
    broken = vol.copy()
    broken[tuple(cut.T)] = 0
    r = _consistency(broken, spacing, origin)
    assert r["frac_ribs_unbroken"] == pytest.approx(gt["frac_ribs_unbroken"] - 1 / 24)
    assert r["frac_bones_single_component"] < gt["frac_bones_single_component"]


def test_consistency_detects_jagged_ribs(gt_volume):
    vol, spacing, origin = gt_volume
    gt = _consistency(vol, spacing, origin)
    bad = vol.copy()
    for n in range(3, 9):  # left ribs 3-8: alternate 12 deg segments moved 9 mm up
        rib = bone(f"rib_left_{n}").label
        idx, az = _rib_azimuth(bad, rib, spacing, origin)
        bad[tuple(idx.T)] = 0
        step = np.where((np.floor(az / 12.0) % 2) == 0, 3, 0)
        bad[tuple((idx + np.c_[np.zeros((len(idx), 2), int), step]).T)] = rib
    r = _consistency(bad, spacing, origin)
    assert r["rib_turning_deg_per_cm_mean"] > gt["rib_turning_deg_per_cm_mean"] + 2.0


def test_consistency_detects_swapped_and_overlapping_vertebrae(gt_volume):
    vol, spacing, origin = gt_volume
    t5, t6 = bone("vertebra_T5").label, bone("vertebra_T6").label
    swapped = vol.copy()
    swapped[vol == t5], swapped[vol == t6] = t6, t5
    r = _consistency(swapped, spacing, origin)
    assert r["frac_vertebra_pairs_ordered"] == pytest.approx(12 / 13)
    # labels mixed up: two thirds of T7's voxels (at random) called T8
    t7, t8 = bone("vertebra_T7").label, bone("vertebra_T8").label
    mixed = vol.copy()
    idx = np.argwhere(vol == t7)
    pick = idx[np.random.default_rng(0).random(len(idx)) < 2 / 3]
    mixed[tuple(pick.T)] = t8
    r = _consistency(mixed, spacing, origin)
    assert r["frac_vertebra_pairs_overlapping"] >= 1 / 13
    gone = np.where(vol == bone("vertebra_L1").label, 0, vol).astype(np.uint8)
    assert _consistency(gone, spacing, origin)["n_vertebrae_missing"] == 1


def test_consistency_detects_a_bone_in_fragments(gt_volume):
    vol, spacing, origin = gt_volume
    gt = _consistency(vol, spacing, origin)
    frag = vol.copy()
    for name in ("humerus_left", "sternum"):
        lab = bone(name).label
        idx = np.argwhere(vol == lab)
        zmid = np.percentile(idx[:, 2], [33, 66]).astype(int)
        cut = idx[np.isin(idx[:, 2], zmid)]
        frag[tuple(cut.T)] = 0  # two slabs out: three pieces
    cc = M.connected_components_per_bone(frag)
    assert cc["humerus_left"] >= 3 and cc["sternum"] >= 3
    r = _consistency(frag, spacing, origin)
    assert r["frac_bones_single_component"] == pytest.approx(gt["frac_bones_single_component"] - 2 / 45)
    assert r["mean_components_per_bone"] >= gt["mean_components_per_bone"] + 4 / 45 - 1e-9
