"""The training-data builder on the bundled sample CT: deterministic, resumable,
consistent between samples, ground truth, film and boxes."""
import json

import numpy as np
import pytest
import torch

from X2BRLib import anatomy
from X2BRLib.dataset.builder import BuildConfig, build_dataset, case_rng, make_case
from X2BRLib.dataset.virtual import identity_variation, sample_variation
from X2BRLib.geometry import ProjectionGeometry

SMALL = dict(image_size=64, gt_voxel_mm=6.0, n_points=2048, drr_step_mm=3.0, progress=False)


def _case(src, split="train", index=0):
    return make_case(src, BuildConfig(out="unused", **SMALL), split, index)


def test_the_same_seed_builds_the_same_case(sample_source):
    a, b = _case(sample_source, index=3), _case(sample_source, index=3)
    for key in ("image", "points_lps_mm", "point_labels", "gt_labels", "boxes", "params"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    c = _case(sample_source, index=4)
    assert not np.array_equal(a["image"], c["image"])


def test_a_case_holds_what_training_needs(sample_source):
    case = _case(sample_source)
    geom = ProjectionGeometry.from_json(str(case["geometry"]))
    assert case["image"].shape == (64, 64) and case["image"].dtype == np.float16
    assert 0 <= case["image"].min() and case["image"].max() <= 1
    assert case["points_lps_mm"].shape == (2048, 3) and case["point_labels"].shape == (2048,)
    assert case["gt_labels"].shape == geom.box_grid(6.0)[0]
    lo, hi = geom.box_bounds_lps_mm()
    uniform = case["points_lps_mm"][:1024]
    assert np.all(uniform >= lo) and np.all(uniform <= hi)
    # near-surface half is mostly within a few mm of bone, so it holds many bone labels
    assert (case["point_labels"][1024:] > 0).mean() > 0.25
    assert (case["point_labels"][:1024] > 0).mean() < 0.2
    present = set(np.unique(case["gt_labels"])) - {0}
    assert len(present) >= 30 and present <= {b.label for b in anatomy.BONES}


def test_point_labels_agree_with_the_ground_truth_volume(sample_source):
    """Occupancy samples and GT come from one warp: at voxel centres they agree."""
    from X2BRLib.dataset.builder import warped_volumes

    params = sample_variation(np.random.default_rng(7))
    geom = ProjectionGeometry.chest("PA", size_px=(32, 32))
    gt, _, _ = warped_volumes(sample_source, geom, params, 6.0)
    shape, origin, spacing = geom.box_grid(6.0)
    idx = np.argwhere(gt.numpy() > 0)[::5]
    pts = torch.tensor(origin + idx * spacing, dtype=torch.float32)
    iso = torch.tensor(geom.isocenter_lps_mm, dtype=torch.float32)
    lab = sample_source.sample_labels(sample_source.warp(pts - iso, params)).numpy()
    assert (lab == gt.numpy()[tuple(idx.T)]).mean() > 0.999


def test_boxes_surround_each_bone_on_the_film(sample_source):
    case = _case(sample_source)
    geom = ProjectionGeometry.from_json(str(case["geometry"]))
    shape, origin, spacing = geom.box_grid(6.0)
    for label, u0, v0, u1, v1 in case["boxes"]:
        idx = np.argwhere(case["gt_labels"] == int(label))
        uv, _ = geom.project(origin + idx * spacing)
        assert np.all(uv[:, 0] >= u0 - 1e-3) and np.all(uv[:, 0] <= u1 + 1e-3)
        assert np.all(uv[:, 1] >= v0 - 1e-3) and np.all(uv[:, 1] <= v1 + 1e-3)
    # the left clavicle lies on the right half of the film, superior half
    row = case["boxes"][case["boxes"][:, 0] == anatomy.bone("clavicle_left").label][0]
    assert (row[1] + row[3]) / 2 > 32 and (row[2] + row[4]) / 2 < 32


def test_splits_never_share_seeds_and_the_test_split_has_held_out_variation():
    draws = {s: {tuple(case_rng(0, s, i).integers(0, 2**62, 2)) for i in range(50)} for s in ("train", "val", "test")}
    assert not (draws["train"] & draws["val"]) and not (draws["train"] & draws["test"])
    held = sample_variation(np.random.default_rng(1), held_out=True)
    assert abs(held.rot_z_deg) >= 8.0 and abs(held.scoliosis_mm) >= 10.0 and held.scale >= 1.08
    assert identity_variation().scale == 1.0


def test_build_dataset_writes_shards_yolo_files_and_resumes(sample_ct_paths, tmp_path):
    cfg = BuildConfig(out=str(tmp_path / "ds"), counts={"train": 2, "val": 1, "test": 1}, **SMALL)
    m = build_dataset(cfg, sample_ct_paths, log=lambda *_: None)
    assert {s: len(v) for s, v in m["splits"].items()} == {"train": 2, "val": 1, "test": 1}
    assert m["last_build"]["cases"] == 4
    first = (tmp_path / "ds" / "train" / "case_00000.npz").read_bytes()
    lines = (tmp_path / "ds" / "yolo" / "labels" / "train" / "case_00000.txt").read_text().splitlines()
    assert len(lines) >= 30
    cls, cx, cy, w, h = lines[0].split()
    assert 0 <= int(cls) < len(anatomy.BONES) and all(0 < float(x) <= 1 for x in (cx, cy, w, h))
    assert (tmp_path / "ds" / "yolo" / "images" / "test" / "case_00000.png").exists()
    assert "names:" in (tmp_path / "ds" / "yolo" / "data.yaml").read_text()
    # resume: nothing rebuilt, files untouched
    m2 = build_dataset(cfg, sample_ct_paths, log=lambda *_: None)
    assert m2["last_build"]["cases"] == 0
    assert (tmp_path / "ds" / "train" / "case_00000.npz").read_bytes() == first
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["version"] == 7  # 3: clinical film model; 4: bedside (portable) films; 5: their scatter capped; 6: v3 gaps; 7: --scoliosis


def test_a_dataset_folder_built_with_other_settings_is_not_mixed(sample_ct_paths, tmp_path):
    cfg = BuildConfig(out=str(tmp_path / "ds"), counts={"train": 1}, **SMALL)
    build_dataset(cfg, sample_ct_paths, log=lambda *_: None)
    cfg.image_size = 96
    with pytest.raises(ValueError, match="other settings"):
        build_dataset(cfg, sample_ct_paths, log=lambda *_: None)
