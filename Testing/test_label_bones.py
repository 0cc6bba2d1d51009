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
