"""MISE: same labels as a dense grid on analytic occupancy, with far fewer queries."""
from __future__ import annotations

import numpy as np
import pytest

from X2BRLib.geometry import ProjectionGeometry
from X2BRLib.x2b.mise import MISE, dense_labels, extract_labels, lattice_plan


def sphere_and_ribs(points):
    """Analytic multi-class phantom (LPS mm): a sphere split into two touching bones
    (labels 25 / 26 at x = 11.3 mm, off the lattice), a thin ring 'rib' of 9 mm
    diameter split left/right into labels 3 / 15."""
    p = np.asarray(points, float)
    sph = np.linalg.norm(p - [10.0, 5.0, 30.0], axis=1) < 60.0
    rho = np.hypot(p[:, 0], p[:, 1])
    ring = np.hypot(rho - 130.0, p[:, 2] + 60.0) < 4.5
    lab = np.where(sph, np.where(p[:, 0] > 11.3, 26, 25), np.where(p[:, 0] > 0, 3, 15)).astype(np.uint8)
    return (sph | ring).astype(np.float32), lab


def smooth_sphere_probs(points):
    """(M, C) probabilities: smooth (logistic) sphere occupancy, bone class 7."""
    r = np.linalg.norm(np.asarray(points, float) - [3.0, -7.0, 11.0], axis=1)
    p = 1.0 / (1.0 + np.exp((r - 70.0) / 3.0))
    out = np.zeros((len(r), 46), np.float32)
    out[:, 0] = 1 - p
    out[:, 7] = p * 0.8
    out[:, 8] = p * 0.2
    return out


@pytest.mark.parametrize("start", [4.0, 8.0])
def test_mise_matches_dense(start):
    g = ProjectionGeometry.chest()
    counter = {"n": 0}

    def fn(p):
        counter["n"] += len(p)
        return sphere_and_ribs(p)

    labels, st = extract_labels(fn, g, voxel_mm_final=2.0, start_voxel_mm=start, batch_points=50000)
    dense, sd = dense_labels(sphere_and_ribs, g, voxel_mm=2.0, batch_points=200000)
    shape, origin, spacing = g.box_grid(2.0)
    assert labels.shape == dense.shape == shape and labels.dtype == np.uint8
    assert st["grid_shape"] == shape and np.allclose(st["origin_lps_mm"], origin)
    assert set(np.unique(dense)) == {0, 3, 15, 25, 26}
    assert np.array_equal(labels, dense)
    assert counter["n"] == st["queries"] < sd["queries"] / 4


def test_mise_smooth_probabilities_multiclass():
    g = ProjectionGeometry.chest(box_size_mm=(200.0, 160.0, 200.0))
    labels, st = extract_labels(smooth_sphere_probs, g, voxel_mm_final=2.0, start_voxel_mm=8.0)
    dense, sd = dense_labels(smooth_sphere_probs, g, voxel_mm=2.0)
    assert set(np.unique(labels)) == {0, 7}
    agree = (labels == dense).mean()
    assert agree > 0.9999, agree
    assert st["queries"] < sd["queries"] / 3


def test_mise_class_loop_and_interpolation():
    """Pure-numpy MISE on a plane: unrefined values are trilinear interpolations."""
    m = MISE(4, 2, threshold=0.5, dilate=0)
    assert m.shape == (17, 17, 17)
    f = lambda p: (p[:, 0] + 0.3 * p[:, 1]) / 16.0  # noqa: E731  linear field: interpolation exact
    pts = m.query()
    assert len(pts) == 125 and (pts % 4 == 0).all()
    n = 0
    while len(pts):
        m.update(pts, f(pts))
        n += len(pts)
        pts = m.query()
    dense = m.to_dense()
    idx = np.stack(np.meshgrid(*[np.arange(17)] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert np.allclose(dense.reshape(-1), f(idx), atol=1e-6)
    assert n < 17 ** 3 / 2 and m.level_queries[0] == 125


def test_lattice_plan_aligns_with_box_grid():
    g = ProjectionGeometry.chest(box_size_mm=(100.0, 70.0, 130.0))
    shape, origin, spacing, steps, r0 = lattice_plan(g, 2.0, 8.0)
    assert steps == 2 and shape == g.box_grid(2.0)[0]
    assert all(r * 4 >= n - 1 for r, n in zip(r0, shape))
    assert np.allclose(origin, g.box_grid(2.0)[1])
