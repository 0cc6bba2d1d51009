"""X2BRLib.refine.cpd: deformable CPD (Gaussian / geodesic kernel, labels, low rank, chunks)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from X2BRLib.refine import cpd


def _ellipsoid(n, rng, axes=(3.0, 2.0, 1.5)):
    u = rng.normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True) * np.asarray(axes)


def _deformed_pair(rng, m=150, n=200):
    Y = _ellipsoid(m, rng)
    X = _ellipsoid(n, rng)
    return Y, X + 0.3 * np.sin(X[:, [1, 2, 0]]) + 0.2


def _tube(center, n_theta=16, n_z=12, radius=1.0, length=6.0, theta0=0.0):
    """Cylinder grid mesh along z: points (n_theta*n_z, 3), edges (E, 2)."""
    t = theta0 + 2 * np.pi * np.arange(n_theta) / n_theta
    z = np.linspace(-length / 2, length / 2, n_z)
    T, Z = np.meshgrid(t, z, indexing="ij")
    pts = np.stack([radius * np.cos(T), radius * np.sin(T), Z], -1).reshape(-1, 3) + center
    idx = np.arange(n_theta * n_z).reshape(n_theta, n_z)
    edges = np.concatenate([np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),
                            np.stack([idx.ravel(), np.roll(idx, -1, 0).ravel()], 1)])
    return pts, edges


def _two_tubes(gap_center=1.6):
    a, ea = _tube(np.array([-gap_center, 0, 0]))
    b, eb = _tube(np.array([gap_center, 0, 0]))
    return np.concatenate([a, b]), np.concatenate([ea, eb + len(a)]), len(a)


def test_farthest_point_sample_is_the_greedy_rule():
    """Same indices as the plain rule (next = farthest from all chosen so far)."""
    from X2BRLib.refine.cpd import farthest_point_sample

    rng = np.random.default_rng(3)
    pts = rng.normal(size=(2000, 3)) * [80.0, 40.0, 20.0]
    idx = farthest_point_sample(pts, 300, start=7)
    d = ((pts - pts[7]) ** 2).sum(1)
    ref = [7]
    for _ in range(299):
        ref.append(int(np.argmax(d)))
        d = np.minimum(d, ((pts - pts[ref[-1]]) ** 2).sum(1))
    assert idx.tolist() == ref
    assert len(set(idx.tolist())) == 300
    assert sorted(farthest_point_sample(pts[:5], 10).tolist()) == [0, 1, 2, 3, 4]  # k capped at M
    assert len(farthest_point_sample(pts, 0)) == 0


def test_matches_pycpd_gaussian_float64():
    pycpd = pytest.importorskip("pycpd")
    Y, X = _deformed_pair(np.random.default_rng(0))
    size = np.ptp(X, axis=0).max()
    for w in (0.0, 0.1):
        reg = pycpd.DeformableRegistration(X=X, Y=Y, alpha=2.0, beta=2.0, w=w, max_iterations=30,
                                           tolerance=1e-5)
        TY, _ = reg.register()
        r = cpd.deformable_cpd(Y, X, beta=2.0, lam=2.0, w=w, max_iter=30, tol=1e-5, dtype=torch.float64)
        assert r.iterations == reg.iteration
        assert np.abs(r.points.numpy() - TY).max() < 1e-3 * size    # measured ~1e-13
        assert r.sigma2 == pytest.approx(reg.sigma2, rel=1e-6)
        # float32 working precision stays close too (measured ~5e-5)
        r32 = cpd.deformable_cpd(Y, X, beta=2.0, lam=2.0, w=w, max_iter=30, tol=1e-5)
        assert r32.points.dtype == torch.float32
        assert np.abs(r32.points.numpy() - TY).max() < 1e-3 * size


def test_chunked_e_step_equals_unchunked_and_dense_posterior():
    rng = np.random.default_rng(1)
    Y = torch.as_tensor(_ellipsoid(60, rng))
    X = torch.as_tensor(_ellipsoid(90, rng) + 0.1)
    ly = torch.as_tensor(rng.integers(0, 3, 60))
    lx = torch.as_tensor(rng.integers(0, 4, 90))              # label 3: no source points
    for labels in ((None, None), (ly, lx)):
        for w in (0.0, 0.2):
            full = cpd.e_step(Y, X, 0.3, w, *labels, chunk=90)
            part = cpd.e_step(Y, X, 0.3, w, *labels, chunk=7)
            P = cpd.posterior_dense(Y, X, 0.3, w, *labels)
            for a, b in ((full.P1, part.P1), (full.Pt1, part.Pt1), (full.PX, part.PX),
                         (full.P1, P.sum(1)), (full.Pt1, P.sum(0)), (full.PX, P @ X)):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
            assert full.nll == pytest.approx(part.nll, rel=1e-12)
            if labels[0] is not None:
                assert torch.all(full.Pt1[lx == 3] == 0)
                grouped = cpd.e_step_grouped(Y, X, 0.3, w, cpd.label_groups(ly, lx), chunk=11)
                for a, b in ((full.P1, grouped.P1), (full.Pt1, grouped.Pt1), (full.PX, grouped.PX)):
                    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
                assert full.nll == pytest.approx(grouped.nll, rel=1e-10)


def test_lowrank_nystrom_agrees_with_dense():
    Y, X = _deformed_pair(np.random.default_rng(2), m=300, n=300)
    size = np.ptp(X, axis=0).max()
    kw = dict(beta=2.0, lam=2.0, max_iter=30, dtype=torch.float64)
    dense = cpd.deformable_cpd(Y, X, **kw).points.numpy()
    exact = cpd.deformable_cpd(Y, X, nystrom_points=300, **kw).points.numpy()   # Nystrom with all points = G
    approx = cpd.deformable_cpd(Y, X, nystrom_points=80, **kw).points.numpy()
    assert np.abs(exact - dense).max() < 1e-6 * size
    assert np.abs(approx - dense).max() < 1e-2 * size
    # Woodbury M-step equals the dense solve with G = Q Q^T
    rng = np.random.default_rng(3)
    Q = torch.as_tensor(rng.normal(size=(50, 8)))
    P1 = torch.as_tensor(rng.uniform(0, 2, 50))
    B0 = torch.as_tensor(rng.normal(size=(50, 3)))
    z, W = cpd.m_step_lowrank(Q, P1, B0, 0.3)
    Wd = cpd.m_step_dense(Q @ Q.T, P1, B0, 0.3)
    torch.testing.assert_close(W, Wd)
    torch.testing.assert_close(Q @ z, Q @ Q.T @ Wd)


def test_geodesic_kernel_has_no_coupling_between_components():
    pts, edges, na = _two_tubes()
    sub = np.arange(len(pts))
    for lowrank in (False, True):                             # all points / 60 landmarks
        Q, Q_all, factored = cpd.build_kernel(pts, sub, "geodesic", 3.0, edges, lowrank=lowrank, landmarks=60)
        assert factored and np.all(Q[:na] @ Q[na:].T == 0)
        assert (Q @ Q.T)[0, 1] > 0.8
    G = cpd.geodesic_kernel_rows(cpd.mesh_graph(pts, edges), sub, 3.0)
    assert np.all(G[:na, na:] == 0) and np.all(G[na:, :na] == 0)
    G_sub = (Q @ Q.T)
    # the M-step of one component ignores everything of the other
    rng = np.random.default_rng(4)
    P1, B0 = torch.as_tensor(rng.uniform(0.5, 1, len(pts))), torch.as_tensor(rng.normal(size=(len(pts), 3)))
    P1b, B0b = P1.clone(), B0.clone()
    P1b[na:] *= 3
    B0b[na:] += 5
    for K, solve in ((torch.as_tensor(G_sub), cpd.m_step_dense), (torch.as_tensor(Q), cpd.m_step_lowrank)):
        v1 = solve(K, P1, B0, 0.1)
        v2 = solve(K, P1b, B0b, 0.1)
        v1, v2 = (v1[1], v2[1]) if isinstance(v1, tuple) else (v1, v2)
        torch.testing.assert_close(v1[:na], v2[:na], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("opts", [dict(), dict(nystrom_points=60), dict(downsample=200)])
def test_geodesic_two_bones_follow_their_own_targets(opts):
    pts, edges, na = _two_tubes()
    tgt, _, _ = _two_tubes()
    tgt = tgt + np.array([0.0, 0.0, 0.05])                  # a slightly different sampling
    shift_a, shift_b = np.array([0.0, 0.8, 0.0]), np.array([0.0, -0.8, 0.0])
    tgt[:na] += shift_a
    tgt[na:] += shift_b
    r = cpd.deformable_cpd(pts, tgt, kernel="geodesic", edges=edges, beta=3.0, lam=0.5, max_iter=80,
                           dtype=torch.float64, **opts)
    out = r.points.numpy()
    disp = out - pts
    np.testing.assert_allclose(disp[:na].mean(0), shift_a + [0, 0, 0.05], atol=0.1)
    np.testing.assert_allclose(disp[na:].mean(0), shift_b + [0, 0, 0.05], atol=0.1)
    for part, axis in ((out[:na], np.array([-1.6, 0.8])), (out[na:], np.array([1.6, -0.8]))):
        radius = np.linalg.norm(part[:, :2] - axis, axis=1)        # on the moved tube's surface
        assert np.abs(radius - 1.0).mean() < (0.1 if "downsample" in opts else 0.05)   # measured 0.064 / <0.01
    if "downsample" not in opts:                              # registered points hit target points
        assert cKDTree(tgt[:na]).query(out[:na])[0].mean() < 0.05
        assert cKDTree(tgt[na:]).query(out[na:])[0].mean() < 0.05


def test_labels_pull_swapped_clouds_to_their_own_target():
    rng = np.random.default_rng(5)
    a, b = _ellipsoid(120, rng, (1.5, 1.0, 1.0)), _ellipsoid(120, rng, (1.5, 1.0, 1.0))
    off = np.array([1.0, 0.0, 0.0])
    src = np.concatenate([a - off, b + off])                 # label 0 left, label 1 right (overlap)
    tgt = np.concatenate([_ellipsoid(150, rng, (1.5, 1.0, 1.0)) + off,
                          _ellipsoid(150, rng, (1.5, 1.0, 1.0)) - off])   # swapped
    ls, lt = np.repeat([0, 1], 120), np.repeat([0, 1], 150)
    # a kNN graph inside each label: two components, so the two clouds deform independently
    edges = np.concatenate([np.stack(np.nonzero(np.triu(np.linalg.norm(c[:, None] - c[None], axis=2) < 0.6, 1)), 1) + k * 120
                            for k, c in enumerate((a, b))])
    kw = dict(kernel="geodesic", edges=edges, beta=3.0, lam=0.5, max_iter=100, dtype=torch.float64)
    out = cpd.deformable_cpd(src, tgt, source_labels=ls, target_labels=lt, **kw).points.numpy()
    disp = out - src
    assert disp[:120, 0].mean() == pytest.approx(2.0, abs=0.15)
    assert disp[120:, 0].mean() == pytest.approx(-2.0, abs=0.15)
    assert cKDTree(tgt[:150]).query(out[:120])[0].mean() < 0.15
    plain = cpd.deformable_cpd(src, tgt, **kw).points.numpy()  # without labels: stays put
    assert abs((plain - src)[:120, 0].mean()) < 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    Y, X = _deformed_pair(np.random.default_rng(6))
    kw = dict(beta=2.0, lam=2.0, max_iter=20, dtype=torch.float64)
    cpu = cpd.deformable_cpd(Y, X, **kw).points
    for extra in (dict(), dict(nystrom_points=60)):
        gpu = cpd.deformable_cpd(torch.as_tensor(Y).cuda(), torch.as_tensor(X).cuda(), **kw, **extra).points
        assert gpu.is_cuda
        if not extra:
            torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-8, atol=1e-8)
