"""The lateral film's boxes in the refinement (X2BRLib.refine.lateral_fit): with ``match_extent`` a
box gives a bone's front-to-back size as well as its place. The bones are the bundled sample
patient's true ones (2 mm labels), their boxes on an LL film the dataset's (``bone_boxes``)."""
from __future__ import annotations

import numpy as np
import pytest

from X2BRLib.cli import SAMPLE_DIR
from X2BRLib.geometry import ProjectionGeometry


@pytest.fixture(scope="module")
def bones():
    """(points (N, 3) LPS mm, labels (N,), LL geometry, true boxes as detections) of the sample patient."""
    from X2BRLib.dataset.builder import bone_boxes
    from X2BRLib.x2b.evaluate import _detections_from_boxes

    with np.load(SAMPLE_DIR / "sample_radiograph_gt.npz") as z:
        labels, voxel = z["gt_labels"], float(z["gt_voxel_mm"])
    ll = ProjectionGeometry.chest("LL", size_px=(256, 256))
    shape, origin, spacing = ll.box_grid(voxel)  # the sample's grid: the box around the isocentre
    assert labels.shape == tuple(shape)
    idx = np.argwhere(labels > 0)
    return origin + idx * spacing, labels[tuple(idx.T)], ll, _detections_from_boxes(
        bone_boxes(labels, origin, spacing, ll))


def test_a_bone_too_deep_and_out_of_place_gets_its_size_and_place_back_front_to_back_only(bones):
    """Every bone stretched 1.25 x front to back about its centroid and moved 10 mm back: with
    match_extent its boxes on the LL film bring its centroid back (mean error < 1 mm) and its depth
    to the truth's; left-right and head-feet coordinates are untouched."""
    from X2BRLib.refine.lateral_fit import lateral_ap_shifts

    points, lab, ll, boxes = bones
    ap = np.array(ll.u_dir)  # LL: columns toward the back (LPS +y)
    truth = {int(b): points[lab == b].mean(0) for b in np.unique(lab)}
    wrong = points.copy()
    for b, c in truth.items():
        m = lab == b
        wrong[m] += 0.25 * ((points[m] - c) @ ap)[:, None] * ap[None] + 10.0 * ap
    V, info = lateral_ap_shifts(wrong, lab, ll, boxes, 0.5, 30.0, match_extent=True)
    assert sorted(info) == sorted(truth)
    errors = [abs(float((V[lab == b].mean(0) - c) @ ap)) for b, c in truth.items()]
    assert np.mean(errors) < 1.0 and np.max(errors) < 3.0
    depth = [np.ptp(V[lab == b] @ ap) / np.ptp(points[lab == b] @ ap) for b in truth]
    assert np.median(depth) == pytest.approx(1.0, abs=0.03)
    assert np.median([m["extent_scale"] for m in info.values()]) == pytest.approx(0.8, abs=0.03)
    assert np.array_equal(V[:, [0, 2]], wrong[:, [0, 2]])


def test_without_match_extent_the_size_is_kept_and_the_box_centres_meet(bones):
    from X2BRLib.refine.lateral_fit import lateral_ap_shifts

    points, lab, ll, boxes = bones
    ap = np.array(ll.u_dir)
    V, info = lateral_ap_shifts(points + 10.0 * ap, lab, ll, boxes, 0.5, 30.0, match_extent=False)
    assert all(m["extent_scale"] == 1.0 for m in info.values())
    assert np.median([m["shift_mm"] for m in info.values()]) == pytest.approx(-10.0, abs=0.5)
    for b in np.unique(lab):
        assert np.ptp(V[lab == b] @ ap) == pytest.approx(np.ptp(points[lab == b] @ ap))  # size kept
