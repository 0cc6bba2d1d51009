"""Training data and evaluation from several patients: catalog-valued label maps, compact
prepared CTs (cropped to the chest, contrast recorded), patient-level splits and
per-patient evaluation. Patients here are the bundled 3 mm sample CT under several names
(and a copy of it with a field of view grown by a skull-like block and without contrast)."""
import json

import numpy as np
import pytest

from X2BRLib import anatomy
from X2BRLib.cli import main
from X2BRLib.errors import InputError
from X2BRLib.io.ct import LabelledCT, read_labelled_ct
from X2BRLib.volume import Volume

TINY = dict(image_size=32, gt_voxel_mm=12.0, n_points=512, drr_step_mm=6.0, progress=False)


@pytest.fixture(scope="module")
def sample_ct(sample_ct_paths) -> LabelledCT:
    return read_labelled_ct(sample_ct_paths["ct"], sample_ct_paths["labels"], name="sample")


@pytest.fixture(scope="module")
def prepared(sample_ct, tmp_path_factory) -> dict:
    """Three prepared 'patients' (the sample CT under three names), as x2br prepare-ct writes them."""
    from X2BRLib.dataset.prepare import prepare

    folder = tmp_path_factory.mktemp("prepared")
    out = {}
    for name in ("anna", "bert", "carl"):
        ct = LabelledCT(sample_ct.hu, sample_ct.labels, name)
        prepare(ct, contrast=None, spacing_mm=3.0).save_npz(folder / f"{name}.npz")
        out[name] = str(folder / f"{name}.npz")
    return out


def _write(vol: Volume, path):
    import SimpleITK as sitk

    sitk.WriteImage(vol.to_sitk(), str(path))
    return str(path)


def test_a_catalog_label_map_is_read_as_catalog_values_and_a_totalsegmentator_map_is_translated(
        sample_ct, sample_ct_paths, tmp_path):
    cat_path = _write(sample_ct.labels, tmp_path / "labels.nii.gz")  # catalog values 1..45
    auto = read_labelled_ct(sample_ct_paths["ct"], cat_path)
    explicit = read_labelled_ct(sample_ct_paths["ct"], cat_path, label_values="catalog")
    np.testing.assert_array_equal(auto.labels.array, sample_ct.labels.array)
    np.testing.assert_array_equal(explicit.labels.array, sample_ct.labels.array)
    assert len(auto.bones_present()) == len(anatomy.BONES)
    # the same values read as TotalSegmentator ids are another map: the rule matters
    as_ts = read_labelled_ct(sample_ct_paths["ct"], cat_path, label_values="totalseg")
    assert not np.array_equal(as_ts.labels.array, sample_ct.labels.array)
    # the bundled map holds TotalSegmentator ids (up to 116): auto translates it
    ts = read_labelled_ct(sample_ct_paths["ct"], sample_ct_paths["labels"])
    np.testing.assert_array_equal(ts.labels.array, sample_ct.labels.array)
    # the rule: catalog values hold a rib (1..24); a TotalSegmentator map cut to vertebrae (27-44) holds none
    from X2BRLib.io.ct import catalog_values_rule

    assert catalog_values_rule([0, 3, 30, 45]) == "catalog"
    assert catalog_values_rule([0, 35, 36, 37]) == "totalseg"
    assert catalog_values_rule([0, 3, 30], structure_table={}) == "totalseg"
    with pytest.raises(InputError, match="catalog values end at 45"):
        read_labelled_ct(sample_ct_paths["ct"], sample_ct_paths["labels"], label_values="catalog")


def test_a_cohort_folder_names_patients_by_folder_and_is_prepared_in_one_command(sample_ct, sample_ct_paths, tmp_path):
    from X2BRLib.dataset.cohort import cohort_members

    for name in ("p2", "p1"):
        (tmp_path / "c" / name).mkdir(parents=True)
        _write(sample_ct.hu, tmp_path / "c" / name / "ct.nii.gz")
        _write(sample_ct.labels, tmp_path / "c" / name / "labels.nii.gz")
    members = cohort_members(tmp_path / "c")
    assert [m["name"] for m in members] == ["p1", "p2"]
    out = tmp_path / "prepared"
    args = ["prepare-ct", "--cohort", str(tmp_path / "c"), "-o", str(out), "--spacing-mm", "4", "--contrast", "no"]
    assert main(args) == 0
    assert sorted(f.name for f in out.iterdir()) == ["p1.npz", "p2.npz"]
    p1 = LabelledCT.load_npz(out / "p1.npz")
    assert p1.name == "p1" and p1.contrast is False and np.allclose(p1.hu.spacing_mm, 4.0)
    assert main(args) == 2  # exists: not replaced without --overwrite
    (tmp_path / "c" / "p3").mkdir()
    _write(sample_ct.hu, tmp_path / "c" / "p3" / "ct.nii.gz")
    with pytest.raises(InputError, match="patient p3: no labels"):
        cohort_members(tmp_path / "c")
    assert main(args[:4] + [str(tmp_path / "other")]) == 2
    assert not (tmp_path / "other").exists()  # nothing written when one patient fails


def test_cropping_to_the_chest_keeps_every_bone_and_drops_the_rest(sample_ct):
    from X2BRLib.dataset.prepare import bone_bounds_lps_mm, crop_and_resample

    # grow the field of view by 120 mm above the chest holding a dense unlabelled block (a "skull")
    hu = sample_ct.hu.array
    extra = np.full((40,) + hu.shape[1:], -1000.0, np.float32)
    extra[15:30, 40:80, 40:80] = 1200.0
    big = LabelledCT(Volume(np.concatenate([hu, extra]), sample_ct.hu.origin_lps_mm, sample_ct.hu.spacing_mm,
                            sample_ct.hu.direction),
                     Volume(np.concatenate([sample_ct.labels.array, np.zeros(extra.shape, np.uint8)]),
                            sample_ct.hu.origin_lps_mm, sample_ct.hu.spacing_mm, sample_ct.hu.direction), "big")
    out = crop_and_resample(big, spacing_mm=3.0, margin_mm=(20, 20, 20))
    lo_b, hi_b = bone_bounds_lps_mm(big)
    lo, hi = out.hu.bounds_lps_mm()
    assert np.all(lo <= lo_b) and np.all(hi >= hi_b - 3.0)  # every bone voxel lies inside the crop
    block_z0 = (big.hu.ijk_to_lps() @ [0, 0, hu.shape[0] + 15, 1])[2]
    assert hi[2] <= hi_b[2] + 20 + 1e-6 and hi[2] < block_z0  # the block above is gone
    assert np.allclose(out.hu.direction, np.eye(3)) and np.allclose(out.hu.spacing_mm, 3.0)
    # every bone keeps its voxels: labels at the original bone voxels' centres agree
    idx = np.argwhere(big.labels.array > 0)
    pts = np.c_[idx[:, ::-1], np.ones(len(idx))] @ big.labels.ijk_to_lps().T
    ijk = np.rint(pts @ out.labels.lps_to_ijk().T)[:, :3].astype(int)
    got = out.labels.array[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    assert (got == big.labels.array[tuple(idx.T)]).mean() > 0.97
    counts_in = np.bincount(big.labels.array.ravel(), minlength=46)[1:]
    counts_out = np.bincount(out.labels.array.ravel(), minlength=46)[1:]
    assert np.all(counts_out > 0.8 * counts_in) and np.all(counts_out < 1.25 * counts_in)


def test_contrast_is_measured_recorded_and_removed_only_where_it_was_given(sample_ct, prepared):
    import torch

    from X2BRLib.dataset.prepare import contrast_test
    from X2BRLib.dataset.virtual import AnatomySource, identity_variation

    enhanced = contrast_test(sample_ct)
    assert enhanced["contrast"] is True and enhanced["mediastinum_median_hu"] > 150
    plain_hu = np.where((sample_ct.labels.array == 0) & (sample_ct.hu.array > 100), 40.0, sample_ct.hu.array)
    plain = LabelledCT(Volume(plain_hu.astype(np.float32), sample_ct.hu.origin_lps_mm, sample_ct.hu.spacing_mm,
                              sample_ct.hu.direction), sample_ct.labels, "plain")
    assert contrast_test(plain)["contrast"] is False
    loaded = LabelledCT.load_npz(prepared["bert"])
    assert loaded.name == "bert" and loaded.contrast is True and loaded.meta["contrast_test"]["contrast"]
    # an unlabelled dense voxel (an arm's shaft) stays bone without contrast, becomes blood with it
    loaded.hu.array[:] = 600.0
    params = identity_variation()
    src = AnatomySource(loaded)
    p_ct = src.warp(torch.from_numpy(np.random.default_rng(0).uniform(-100, 100, (400, 3))).float(), params)
    outside_catalog = src.sample_labels(p_ct) == 0
    assert outside_catalog.sum() > 50
    enh = src.sample_hu(p_ct, params)[outside_catalog]
    loaded.contrast = False
    non = AnatomySource(loaded).sample_hu(p_ct, params)[outside_catalog]
    assert np.allclose(enh.numpy(), 45.0) and np.all(non.numpy() > 600.0)


def test_patient_level_splits_never_leak_a_patient(prepared, tmp_path):
    from X2BRLib.dataset.builder import BuildConfig, assign_patients, build_dataset

    cfg = BuildConfig(out=str(tmp_path / "ds"), counts={"train": 3, "val": 1, "test": 1},
                      test_patients=("carl",), **TINY)
    m = build_dataset(cfg, [{"prepared": p} for p in prepared.values()], log=lambda *_: None)
    assert m["patients"] == ["anna", "bert", "carl"] and m["test_patients"] == ["carl"]
    cp = m["case_patients"]
    assert list(cp["train"].values()) == ["anna", "bert", "anna"]  # spread evenly, in turn
    assert set(cp["val"].values()) == {"anna"} and set(cp["test"].values()) == {"carl"}
    for split, names in m["splits"].items():
        for name in names:
            with np.load(tmp_path / "ds" / split / name) as z:
                assert str(z["patient"]) == cp[split][name]
                assert json.loads(str(z["params"]))["source"] == cp[split][name]
    # resuming with another held-out patient would mix two splittings: refused
    cfg.test_patients = ("bert",)
    with pytest.raises(ValueError, match="other settings"):
        build_dataset(cfg, [{"prepared": p} for p in prepared.values()], log=lambda *_: None)
    assert assign_patients({"test": 3}, ["a", "b"]) == {"test": ["a", "b", "a"]}
    with pytest.raises(InputError, match="not among the sources"):
        assign_patients({"train": 1}, ["a", "b"], ["z"])
    with pytest.raises(InputError, match="no patient left for the train split"):
        assign_patients({"train": 1, "test": 1}, ["a"], ["a"])


def test_a_fold_of_a_pool_holds_out_its_patients_without_building_again(prepared, tmp_path):
    from X2BRLib.dataset.builder import BuildConfig, build_dataset
    from X2BRLib.dataset.folds import derive_fold

    sources = [{"prepared": p} for p in prepared.values()]
    for k in (0, 1):  # two processes' parts, then the manifest of the whole
        build_dataset(BuildConfig(out=str(tmp_path / "pool"), counts={"train": 4, "val": 0, "test": 3},
                                  part=(k, 2), **TINY), sources, log=lambda *_: None)
    pool = build_dataset(BuildConfig(out=str(tmp_path / "pool"), counts={"train": 4, "val": 0, "test": 3}, **TINY),
                         sources, log=lambda *_: None)
    assert pool["last_build"]["cases"] == 0 and len(pool["splits"]["train"]) == 4
    fold = derive_fold(tmp_path / "pool", tmp_path / "fold", ["anna"])
    assert set(fold["case_patients"]["train"].values()) == {"bert", "carl"}
    assert set(fold["case_patients"]["test"].values()) == {"anna"} and fold["splits"]["test"] == ["case_00000.npz"]
    assert fold["splits"]["train"] == ["case_00001.npz", "case_00002.npz"]
    a, b = tmp_path / "pool" / "train" / "case_00001.npz", tmp_path / "fold" / "train" / "case_00001.npz"
    assert a.read_bytes() == b.read_bytes() and not (tmp_path / "fold" / "train" / "case_00000.npz").exists()
    with pytest.raises(InputError, match="is a fold of"):
        build_dataset(BuildConfig(out=str(tmp_path / "fold"), counts={"train": 4}, **TINY), sources,
                      log=lambda *_: None)
    with pytest.raises(InputError, match="not among the pool's patients"):
        derive_fold(tmp_path / "pool", tmp_path / "fold2", ["zoe"])
    few = derive_fold(tmp_path / "pool", tmp_path / "fold_few", ["anna"], train_patients=["carl"])
    assert set(few["case_patients"]["train"].values()) == {"carl"} and few["train_patients"] == ["carl"]
    assert few["splits"]["test"] == fold["splits"]["test"]  # the same held-out films, fewer people
    with pytest.raises(InputError, match="exists and is another dataset"):
        derive_fold(tmp_path / "pool", tmp_path / "fold_few", ["anna"])
    with pytest.raises(InputError, match="not held out"):
        derive_fold(tmp_path / "pool", tmp_path / "fold3", ["anna"], train_patients=["anna", "bert"])


def test_evaluate_reports_per_patient_and_several_weights_on_the_same_films(prepared, tmp_path):
    """Real shipped weights, given twice (as x2b and as x2b_again): identical numbers on the same
    films; each patient's summary is that of its cases; the baseline names its patients."""
    from X2BRLib.pipeline import DEFAULT_WEIGHTS
    from X2BRLib.x2b.evaluate import HEADLINE

    ds = tmp_path / "ds"
    assert main(["build-dataset", "--prepared", prepared["anna"], "--prepared", prepared["bert"], "-o", str(ds),
                 "--train", "2", "--val", "0", "--test", "2", "--voxel-mm", "4", "--image-size", "128",
                 "--points", "2048", "--no-progress"]) == 0
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--data", str(ds), "-o", str(out), "--device", "cpu",
                 "--also-weights", f"again={DEFAULT_WEIGHTS}"]) == 0
    r = json.loads(out.read_text())
    assert set(r["methods"]) == {"x2b", "x2b_again", "mean_skeleton"}
    assert [row["patient"] for row in r["per_case"]] == ["anna", "bert"]
    assert set(r["per_patient"]) == {"anna", "bert"} and r["baseline_patients"] == ["anna", "bert"]
    for row in r["per_case"]:
        assert row["x2b"] == row["x2b_again"]
        for method in r["methods"]:
            summary = r["per_patient"][row["patient"]][method]
            assert summary["n_cases"] == 1
            for key in HEADLINE:
                assert summary["mean"][key] == pytest.approx(row[method][key])
    assert main(["evaluate", "--data", str(ds), "-o", str(tmp_path / "x.json"), "--also-weights", "bad"]) == 2


def test_merged_parts_pool_each_patient_apart():
    from X2BRLib import metrics
    from X2BRLib.x2b.evaluate import merge_reports

    rng = np.random.default_rng(0)
    rows = [{"iou_all_bone": float(x)} for x in rng.uniform(0, 1, 7)]
    who = ["a", "b", "a", "a", "b", "c", "a"]

    def report(idx):
        per = {p: {"x2b": metrics.aggregate([rows[i] for i in idx if who[i] == p])} for p in {who[i] for i in idx}}
        return {"split": "test", "voxel_mm": 2.0, "methods": {"x2b": metrics.aggregate([rows[i] for i in idx])},
                "per_case": [{"case": f"case_{i}", "patient": who[i], "x2b": rows[i]} for i in idx],
                "per_patient": per, "timings_s": {"total": 1.0}}

    merged = merge_reports([report([0, 1, 2]), report([3, 4, 5, 6])])
    assert set(merged["per_patient"]) == {"a", "b", "c"}
    for p in "abc":
        whole = metrics.aggregate([r for r, q in zip(rows, who) if q == p])
        got = merged["per_patient"][p]["x2b"]
        assert got["count"] == whole["count"]
        assert got["mean"]["iou_all_bone"] == pytest.approx(whole["mean"]["iou_all_bone"], rel=1e-12)
        assert got["std"]["iou_all_bone"] == pytest.approx(whole["std"]["iou_all_bone"], rel=1e-9, abs=1e-12)


def test_a_patient_drawn_toward_a_larger_one_takes_its_proportions(sample_ct):
    """Blend (item 5): the sample CT toward itself scaled by 1.15 widens the rib cage by ~15% at t=1."""
    import dataclasses

    from X2BRLib.dataset.builder import warped_volumes
    from X2BRLib.dataset.virtual import AnatomySource, identity_variation
    from X2BRLib.geometry import ProjectionGeometry

    anna = AnatomySource(sample_ct)
    big = LabelledCT(Volume(sample_ct.hu.array, sample_ct.hu.origin_lps_mm, sample_ct.hu.spacing_mm * 1.15,
                            sample_ct.hu.direction), Volume(sample_ct.labels.array, sample_ct.hu.origin_lps_mm,
                                                            sample_ct.hu.spacing_mm * 1.15, sample_ct.hu.direction))
    anna.others = {"big": AnatomySource(big).layout}
    geom = ProjectionGeometry.chest("PA", size_px=(32, 32))
    left, right = anatomy.bone("rib_left_7").label, anatomy.bone("rib_right_7").label

    def width(t):
        params = dataclasses.replace(identity_variation(), toward="big" if t else "", toward_t=t)
        gt = warped_volumes(anna, geom, params, 4.0)[0].numpy()
        return abs(np.argwhere(gt == left)[:, 0].mean() - np.argwhere(gt == right)[:, 0].mean())

    assert width(1.0) / width(0.0) == pytest.approx(1.15, abs=0.04)
    assert width(0.5) / width(0.0) == pytest.approx(1.075, abs=0.03)


def test_blended_cases_toward_a_held_out_patient_stay_out_of_its_fold(prepared, tmp_path):
    from X2BRLib.dataset.builder import BuildConfig, build_dataset
    from X2BRLib.dataset.folds import derive_fold

    cfg = BuildConfig(out=str(tmp_path / "pool"), counts={"train": 6, "val": 0, "test": 1}, blend=1.0, **TINY)
    pool = build_dataset(cfg, [{"prepared": p} for p in prepared.values()], log=lambda *_: None)
    toward = pool["case_toward"]["train"]
    assert len(toward) == 6 and all(toward[n] != pool["case_patients"]["train"][n] for n in toward)
    for n, who in toward.items():
        with np.load(tmp_path / "pool" / "train" / n) as z:
            assert json.loads(str(z["params"]))["anatomy"]["toward"] == who
    fold = derive_fold(tmp_path / "pool", tmp_path / "fold", ["carl"])
    kept = fold["splits"]["train"]
    assert kept == sorted(n for n, who in toward.items()
                          if who != "carl" and pool["case_patients"]["train"][n] != "carl")
    cfg.blend = 0.0
    with pytest.raises(ValueError, match="other settings"):
        build_dataset(cfg, [{"prepared": p} for p in prepared.values()], log=lambda *_: None)
