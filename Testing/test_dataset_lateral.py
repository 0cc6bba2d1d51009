"""Lateral films in the training data (issue 15): each case's second exposure of the same
virtual patient, rendered from its warped volume on the bundled 3 mm sample CT. The film
and the geometry the network is given agree on test cases; train films show a patient who
moved between the exposures, and their boxes follow the film."""
import json

import numpy as np
import pytest

from X2BRLib import anatomy
from X2BRLib.dataset.builder import BuildConfig, build_dataset, make_case
from X2BRLib.dataset.lateral import ERROR_RANGES, NO_ERROR, rendering_geometry, sample_lateral
from X2BRLib.geometry import DEFAULT_LATERAL_OBJECT_TO_DETECTOR_MM, ProjectionGeometry

SMALL = dict(image_size=64, gt_voxel_mm=6.0, n_points=2048, drr_step_mm=3.0, progress=False)
TINY = dict(image_size=32, gt_voxel_mm=12.0, n_points=512, drr_step_mm=6.0, progress=False)
PA_KEYS = ("image", "geometry", "points_lps_mm", "point_labels", "gt_labels", "boxes")


def _lateral_stream(split_id: int, index: int, seed: int = 0):
    return np.random.default_rng([seed, split_id, index, 2])  # the builder's lateral stream


@pytest.fixture(scope="module")
def cases(sample_source) -> dict:
    lat, pa = BuildConfig(out="unused", lateral=True, **SMALL), BuildConfig(out="unused", **SMALL)
    # a train case whose patient moved a lot between the exposures (> 2 px at 64 px)
    moved = next(i for i in range(200)
                 if abs(sample_lateral(_lateral_stream(0, i), True)[1]["offset_si_mm"]) > 14)
    return {"train": make_case(sample_source, lat, "train", 1), "train_pa": make_case(sample_source, pa, "train", 1),
            "test0": make_case(sample_source, lat, "test", 0), "test1": make_case(sample_source, lat, "test", 1),
            "moved": make_case(sample_source, lat, "train", moved)}


def _bone_density(gt, geom: ProjectionGeometry, voxel_mm: float) -> np.ndarray:
    """(H, W) count of ground-truth bone voxels projecting to each pixel."""
    _, origin, spacing = geom.box_grid(voxel_mm)
    uv, _ = geom.project(origin + np.argwhere(gt > 0) * spacing)
    h, _, _ = np.histogram2d(uv[:, 1], uv[:, 0], bins=(geom.height, geom.width),
                             range=((-0.5, geom.height - 0.5), (-0.5, geom.width - 0.5)))
    return h


def _best_shift(image, density, r: int = 5) -> tuple[int, int]:
    """(du, dv) px: the shift of the bone density that correlates best with the film."""
    H, W = image.shape
    a = image[r:H - r, r:W - r].ravel()
    score = {(du, dv): np.corrcoef(a, density[r - dv:H - r - dv, r - du:W - r - du].ravel())[0, 1]
             for dv in range(-r, r + 1) for du in range(-r, r + 1)}
    return max(score, key=score.get)


def test_a_lateral_case_adds_its_film_and_keeps_the_pa_case_as_it_was(cases):
    case, pa = cases["train"], cases["train_pa"]
    for key in PA_KEYS:
        np.testing.assert_array_equal(case[key], pa[key], err_msg=key)
    assert case["image_lat"].shape == case["image"].shape and case["image_lat"].dtype == np.float16
    assert 0 <= case["image_lat"].min() and case["image_lat"].max() <= 1
    geom, lat = (ProjectionGeometry.from_json(str(case[k])) for k in ("geometry", "geometry_lat"))
    assert lat.view in ("LL", "RL") and lat.size_px == geom.size_px
    assert lat.isocenter_lps_mm == geom.isocenter_lps_mm and lat.box_size_mm == geom.box_size_mm
    assert case["boxes_lat"].dtype == np.float32 and case["boxes_lat"].shape[1] == 5
    assert len(case["boxes_lat"]) >= 30
    params = json.loads(str(case["params"]))
    assert params["film_lat"]["view"] == lat.view
    assert 1500 <= params["film_lat"]["sdd_mm"] <= 2000 and 140 <= params["film_lat"]["object_to_detector_mm"] <= 200
    err = params["lat_error"]
    assert err != NO_ERROR and abs(err["offset_si_mm"]) <= 20 and 0.96 <= err["magnification"] <= 1.04


def test_the_lateral_film_and_the_geometry_the_network_is_given_agree_on_test_cases(cases):
    for case in (cases["test0"], cases["test1"]):
        assert json.loads(str(case["params"]))["lat_error"] == NO_ERROR
        geom = ProjectionGeometry.from_json(str(case["geometry_lat"]))
        # bone voxels projected through geometry_lat fall where the film is bright: no shift fits better
        density = _bone_density(case["gt_labels"], geom, SMALL["gt_voxel_mm"])
        assert _best_shift(case["image_lat"].astype(np.float32), density) == (0, 0)
        # LL: the spine (back) on the right of the film, the sternum (front) on the left; RL mirrored
        boxes = {int(r[0]): (r[1] + r[3]) / 2 for r in case["boxes_lat"]}
        spine = np.mean([u for lab, u in boxes.items() if anatomy.bone(lab).name.startswith("vertebra")])
        sternum = boxes[anatomy.bone("sternum").label]
        assert (spine > sternum) == (geom.view == "LL"), geom.view


def test_a_train_film_shows_the_patient_moved_and_its_boxes_follow_the_film(cases):
    case = cases["moved"]
    err = json.loads(str(case["params"]))["lat_error"]
    told = ProjectionGeometry.from_json(str(case["geometry_lat"]))
    real = rendering_geometry(told, **err)
    image = case["image_lat"].astype(np.float32)
    assert _best_shift(image, _bone_density(case["gt_labels"], real, SMALL["gt_voxel_mm"])) == (0, 0)
    # the geometry the network is told misses the move: its bones sit -dz higher on the film (rows go down)
    du, dv = _best_shift(image, _bone_density(case["gt_labels"], told, SMALL["gt_voxel_mm"]))
    expected_dv = -err["offset_si_mm"] * told.magnification / told.spacing_mm[1]
    assert du == 0 and dv != 0 and abs(dv - expected_dv) <= 1.0, (dv, expected_dv)
    # boxes come from the film's own geometry: each holds its bone's voxels projected through it
    _, origin, spacing = real.box_grid(SMALL["gt_voxel_mm"])
    for label, u0, v0, u1, v1 in case["boxes_lat"]:
        uv, _ = real.project(origin + np.argwhere(case["gt_labels"] == int(label)) * spacing)
        uv = np.clip(uv, -0.5, [real.width - 0.5, real.height - 0.5])  # boxes end at the film's edge
        assert np.all(uv >= [u0 - 1e-3, v0 - 1e-3]) and np.all(uv <= [u1 + 1e-3, v1 + 1e-3]), label


def test_the_rendering_geometry_moves_the_patient_up_and_scales_the_isocentre():
    told = ProjectionGeometry.chest("LL", size_px=(128, 128), sdd_mm=1800, object_to_detector_mm=170)
    pts = np.array([[0.0, 0.0, 0.0], [0.0, 40.0, -60.0], [30.0, -50.0, 80.0]])
    moved = rendering_geometry(told, offset_si_mm=12.0)
    np.testing.assert_allclose(moved.project(pts)[0], told.project(pts + [0, 0, 12.0])[0], atol=1e-9)
    scaled = rendering_geometry(told, magnification=1.03)
    assert scaled.sdd_mm == pytest.approx(told.sdd_mm) and scaled.magnification == pytest.approx(
        1.03 * told.magnification)
    span = [np.ptp(g.project(np.array([[0, 0, -50.0], [0, 0, 50.0]]))[0][:, 1]) for g in (told, scaled)]
    assert span[1] / span[0] == pytest.approx(1.03)
    same = rendering_geometry(told, **NO_ERROR)
    np.testing.assert_allclose(same.projection_matrix(), told.projection_matrix())


def test_laterals_are_mostly_left_laterals_and_only_train_and_val_carry_an_exposure_error():
    draws = [sample_lateral(_lateral_stream(0, i), True) for i in range(400)]
    views = [f.view for f, _ in draws]
    assert set(views) == {"LL", "RL"} and 0.72 <= views.count("LL") / 400 <= 0.88
    dz = np.array([e["offset_si_mm"] for _, e in draws])
    m = np.array([e["magnification"] for _, e in draws])
    assert np.abs(dz).max() <= ERROR_RANGES["offset_si_clip_mm"] and 6 <= dz.std() <= 10
    assert m.min() >= 0.96 and m.max() <= 1.04
    assert all(sample_lateral(_lateral_stream(2, i), False)[1] == NO_ERROR for i in range(20))
    clean, err = sample_lateral(_lateral_stream(2, 0), False, clean=True)
    assert clean.view == "LL" and clean.object_to_detector_mm == DEFAULT_LATERAL_OBJECT_TO_DETECTOR_MM
    assert err == NO_ERROR


def test_a_lateral_dataset_exports_both_films_to_yolo_and_its_folds_carry_the_laterals(sample_ct_paths, tmp_path):
    from X2BRLib.dataset.folds import derive_fold

    sources = [{**sample_ct_paths, "name": n} for n in ("anna", "bert")]
    pool = tmp_path / "pool"
    cfg = BuildConfig(out=str(pool), counts={"train": 2, "val": 0, "test": 2}, lateral=True, **TINY)
    manifest = build_dataset(cfg, sources, log=lambda *_: None)
    assert manifest["lateral"] is True
    for split in ("train", "test"):
        for i in range(2):
            labels = (pool / "yolo" / "labels" / split / f"case_{i:05d}_lat.txt").read_text().splitlines()
            with np.load(pool / split / f"case_{i:05d}.npz") as z:
                assert len(labels) == len(z["boxes_lat"]) > 0
            assert (pool / "yolo" / "images" / split / f"case_{i:05d}_lat.png").is_file()
    with pytest.raises(ValueError, match="lateral"):  # a PA-only build into a lateral folder is refused
        build_dataset(BuildConfig(out=str(pool), counts={"train": 2, "val": 0, "test": 2}, **TINY), sources,
                      log=lambda *_: None)
    fold = derive_fold(pool, tmp_path / "fold", ["anna"])
    assert fold["lateral"] is True and fold["splits"]["test"] and fold["splits"]["train"]
    for split, names in fold["splits"].items():
        for n in names:
            with np.load(tmp_path / "fold" / split / n) as z:
                assert {"image_lat", "geometry_lat", "boxes_lat"} <= set(z.files)
