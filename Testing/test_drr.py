"""Tests of X2BRLib.drr: analytic phantoms with known line integrals.

Small volumes (48-64 voxels a side) so that the whole file runs in a few
seconds on two CPU cores.
"""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # noqa: E402 (repo root)

from X2BRLib.drr import MU_WATER_PER_MM, hu_to_mu, line_integral_to_image, render_drr
from X2BRLib.geometry import ProjectionGeometry
from X2BRLib.volume import Volume

MU = 0.02  # 1/mm, roughly water


def rot_z(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])


def make_volume(n=64, spacing=2.0, direction=np.diag([1.0, -1.0, 1.0]), center=(10.0, -20.0, 30.0)):
    """An empty (n, n, n) volume whose centre lies at `center` (LPS mm)."""
    direction = np.asarray(direction, float)
    sp = np.full(3, spacing)
    origin = np.asarray(center) - direction @ (sp * (n - 1) / 2)
    return Volume(np.zeros((n, n, n), np.float32), origin, sp, direction)


def voxel_centres_lps(vol):
    """(Z, Y, X, 3) LPS positions of the voxel centres."""
    z, y, x = vol.array.shape
    kk, jj, ii = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    ijk = np.stack([ii, jj, kk, np.ones_like(ii)], -1).astype(float)
    return (ijk @ vol.ijk_to_lps().T)[..., :3]


def sphere_volume(vol, c, r, mu=MU):
    """Sphere with partial-volume edges: occupancy ramps over one voxel across the surface."""
    dist = np.linalg.norm(voxel_centres_lps(vol) - np.asarray(c), axis=-1)
    h = float(vol.spacing_mm.min())
    occ = np.clip(0.5 - (dist - r) / h, 0.0, 1.0)
    return (mu * occ).astype(np.float32)


def sphere_chords(geom, c, r):
    """Exact chord length (mm) of each pixel's ray through the sphere, (H, W)."""
    o, d, _ = geom.rays()
    oc = o - np.asarray(c)
    b = np.einsum("ij,ij->i", d, oc)
    disc = b * b - (np.einsum("ij,ij->i", oc, oc) - r * r)
    chord = 2 * np.sqrt(np.clip(disc, 0, None))
    return chord.reshape(geom.height, geom.width)


def small_geometry(view, iso, size=48, field=200.0, **kw):
    return ProjectionGeometry.chest(view, size_px=(size, size), field_mm=field, isocenter_lps_mm=iso, **kw)


# ---------------------------------------------------------------------- hu_to_mu
def test_hu_to_mu_values_numpy_and_torch():
    hu = np.array([-2048.0, -1000.0, 0.0, 1000.0, 2000.0])
    expect = MU_WATER_PER_MM * np.array([0.0, 0.0, 1.0, 2.0, 3.0])
    mu = hu_to_mu(hu)
    assert isinstance(mu, np.ndarray) and mu.dtype == np.float32
    np.testing.assert_allclose(mu, expect, rtol=1e-6, atol=1e-9)
    mt = hu_to_mu(torch.tensor(hu))
    assert isinstance(mt, torch.Tensor) and mt.dtype == torch.float32
    np.testing.assert_allclose(mt.numpy(), expect, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(hu_to_mu(np.array([0.0]), mu_water_per_mm=0.03), [0.03], rtol=1e-6)


def test_hu_to_mu_bone_boost_continuous_and_stronger():
    hu = np.array([0.0, 299.0, 300.0, 301.0, 1300.0])
    plain, boosted = hu_to_mu(hu), hu_to_mu(hu, bone_boost=2.0, bone_threshold_hu=300.0)
    np.testing.assert_allclose(boosted[:3], plain[:3], rtol=1e-6)
    assert boosted[3] - boosted[2] == pytest.approx(2 * (plain[3] - plain[2]), rel=1e-3)
    assert boosted[4] == pytest.approx(MU_WATER_PER_MM * (1 + (300 + 2 * 1000) / 1000), rel=1e-6)
    tb = hu_to_mu(torch.tensor(hu), bone_boost=2.0)
    np.testing.assert_allclose(tb.numpy(), boosted, rtol=1e-6)
    with pytest.raises(ValueError):
        hu_to_mu(hu, bone_boost=-1.0)


# ---------------------------------------------------------------------- analytic sphere
@pytest.mark.parametrize("direction", [np.diag([1.0, -1.0, 1.0]), rot_z(30) @ np.diag([1.0, -1.0, 1.0])],
                         ids=["flipY", "oblique"])
@pytest.mark.parametrize("view", ["PA", "AP"])
def test_sphere_line_integrals_match_exact_chords(direction, view):
    vol = make_volume(direction=direction)
    c, r = np.array([14.0, -22.0, 25.0]), 40.0  # off the volume centre
    mu = sphere_volume(vol, c, r)
    geom = small_geometry(view, iso=(10.0, -20.0, 30.0))
    L = render_drr(mu, vol.ijk_to_lps(), geom, step_mm=1.0)
    assert L.shape == (1, geom.height, geom.width) and L.dtype == torch.float32
    assert torch.isfinite(L).all()
    expect = MU * sphere_chords(geom, c, r)
    got = L[0].numpy()
    core = expect > 0.5 * expect.max()  # rays through the central part of the sphere
    assert core.sum() > 100
    rel = np.abs(got[core] - expect[core]) / expect[core]
    # Discretisation: 2 mm voxels, a one-voxel partial-volume ramp, trilinear
    # interpolation and 1 mm midpoint sampling -> measured max 0.85 %, mean 0.2 %.
    assert rel.max() < 0.02, rel.max()
    assert rel.mean() < 0.005, rel.mean()
    # Everywhere (edges included) the error is a small fraction of the peak.
    assert np.abs(got - expect).mean() < 0.005 * expect.max()
    # At the silhouette the chord 2*sqrt(r^2 - b^2) has an infinite slope and the
    # voxelised surface is ~2 mm thick: up to ~8 % of the peak there (measured).
    assert np.abs(got - expect).max() < 0.12 * expect.max()
    # Rays that miss the voxelised sphere (ramp to r + 1 mm) by more than the
    # trilinear support (one voxel diagonal, 3.5 mm) see nothing.
    far = sphere_chords(geom, c, r + 5.0) == 0
    assert far.sum() > 100
    assert np.abs(got[far]).max() < 1e-6


def test_uniform_volume_integrates_to_exact_box_chord():
    """A constant volume is a box [-0.5, n-0.5] voxels wide: L = mu * chord through the box."""
    vol = make_volume(n=32, spacing=3.0, direction=rot_z(20) @ np.diag([1.0, -1.0, 1.0]), center=(0, 0, 0))
    mu = np.full(vol.array.shape, MU, np.float32)
    geom = small_geometry("PA", iso=(0, 0, 0), size=32, field=160.0)
    L = render_drr(mu, vol.ijk_to_lps(), geom, step_mm=2.0)[0].numpy()
    # exact chord by the slab method in LPS with the box's own axes
    o, d, _ = geom.rays()
    A = vol.lps_to_ijk()
    oi = o @ A[:3, :3].T + A[:3, 3]
    di = d @ A[:3, :3].T
    with np.errstate(divide="ignore"):
        t1, t2 = (-0.5 - oi) / di, (31.5 - oi) / di
    chord = np.clip(np.maximum(t1, t2).min(1) - np.minimum(t1, t2).max(1), 0, None)
    assert (chord > 0).sum() > 100 and (chord == 0).sum() > 10
    np.testing.assert_allclose(L, MU * chord.reshape(32, 32), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- projection consistency
@pytest.mark.parametrize("view", ["PA", "AP"])
def test_small_cube_appears_where_geometry_projects_it(view):
    vol = make_volume(n=48, spacing=2.0, direction=rot_z(15) @ np.diag([1.0, -1.0, 1.0]), center=(0, 0, 0))
    geom = small_geometry(view, iso=(0, 0, 0), size=64, field=160.0)
    wanted = np.array([[30.0, -10.0, 25.0], [-25.0, 15.0, -30.0]])  # left-superior, right-inferior
    pts = []
    for p in wanted:
        i, j, k = np.round(vol.lps_to_ijk() @ np.r_[p, 1])[:3].astype(int)
        vol.array[k - 1:k + 2, j - 1:j + 2, i - 1:i + 2] = 1.0  # 3x3x3 voxels, 6 mm
        pts.append((vol.ijk_to_lps() @ [i, j, k, 1.0])[:3])  # the cube's true centre
    pts = np.array(pts)
    assert np.abs(pts - wanted).max() < 2.0
    L = render_drr(vol.array, vol.ijk_to_lps(), geom)[0].numpy()
    uv, _ = geom.project(pts)
    cols, rows = np.meshgrid(np.arange(geom.width), np.arange(geom.height), indexing="xy")
    for (u, v) in uv:
        win = (np.abs(cols - u) < 8) & (np.abs(rows - v) < 8)
        w = np.where(win, L, 0.0)
        assert w.sum() > 0
        cu, cv = (w * cols).sum() / w.sum(), (w * rows).sum() / w.sum()
        assert abs(cu - u) < 1.0 and abs(cv - v) < 1.0, (view, cu, cv, u, v)
        r, cidx = np.unravel_index(np.argmax(w), w.shape)
        assert abs(cidx - u) <= 1.0 and abs(r - v) <= 1.0
    # display convention: patient's left -> larger column, superior -> smaller row (PA and AP)
    assert uv[0, 0] > geom.width / 2 > uv[1, 0]
    assert uv[0, 1] < geom.height / 2 < uv[1, 1]


# ---------------------------------------------------------------------- batches
def ap_symmetric_phantom():
    """Mirror-symmetric about the coronal plane y = 0 but not left-right or up-down."""
    vol = make_volume(n=48, spacing=2.5, direction=np.diag([1.0, -1.0, 1.0]), center=(0, 0, 0))
    mu = sphere_volume(vol, (0, 0, 0), 35.0)
    x = voxel_centres_lps(vol)
    blob = (np.abs(x[..., 0] - 30) < 8) & (np.abs(x[..., 1]) < 10) & (np.abs(x[..., 2] - 25) < 8)
    mu[blob] += 0.05
    return vol, mu


def test_batch_pa_ap_same_source_distance_gives_same_image():
    vol, mu = ap_symmetric_phantom()
    geoms = [small_geometry("PA", (0, 0, 0), size=40, field=180.0, sdd_mm=1000.0),
             small_geometry("AP", (0, 0, 0), size=40, field=180.0, sdd_mm=1000.0)]
    L = render_drr(torch.from_numpy(mu), vol.ijk_to_lps(), geoms)
    assert L.shape == (2, 40, 40) and L.dtype == torch.float32 and torch.isfinite(L).all()
    # PA and AP both display the patient's left on the right: for a phantom
    # symmetric front-to-back the two images coincide (no mirroring).
    scale = float(L.max())
    assert float((L[0] - L[1]).abs().max()) < 0.02 * scale
    assert float((L[0] - L[0].flip(-1)).abs().max()) > 0.1 * scale  # the phantom is not L-R symmetric


def test_batch_default_pa_ap_blob_on_same_side_and_matches_single_renders():
    vol, mu = ap_symmetric_phantom()
    geoms = [small_geometry("PA", (0, 0, 0), size=40, field=180.0),
             small_geometry("AP", (0, 0, 0), size=40, field=180.0)]
    L = render_drr(mu, vol.ijk_to_lps(), geoms)
    for b, g in enumerate(geoms):
        single = render_drr(mu, vol.ijk_to_lps(), g)[0]
        torch.testing.assert_close(L[b], single)
        # the centred sphere projects symmetrically: L minus its mirror image peaks on the blob
        uv, _ = g.project(np.array([[30.0, 0.0, 25.0]]))
        peak = np.unravel_index(int(torch.argmax(L[b] - L[b].flip(-1))), (40, 40))
        assert abs(peak[1] - uv[0, 0]) <= 2 and abs(peak[0] - uv[0, 1]) <= 2, (g.view, peak, uv)
        assert uv[0, 0] > 20 and uv[0, 1] < 20  # patient's left-superior: right, top
    # AP has the shorter SDD: stronger magnification of the sphere.
    width = [(Lb.max(0).values > 0.5 * Lb.max()).sum().item() for Lb in L]
    assert width[1] >= width[0]


def test_batched_volumes_chunks_and_out():
    vol, mu = ap_symmetric_phantom()
    g = small_geometry("PA", (0, 0, 0), size=32, field=180.0)
    mus = torch.stack([torch.from_numpy(mu), 2 * torch.from_numpy(mu)])
    L = render_drr(mus, vol.ijk_to_lps(), g)  # one geometry for both volumes
    assert L.shape == (2, 32, 32)
    torch.testing.assert_close(L[1], 2 * L[0], rtol=1e-5, atol=1e-6)
    out = torch.full((2, 32, 32), float("nan"))
    res = render_drr(mus, np.stack([vol.ijk_to_lps()] * 2), [g, g], chunk_rays=37, out=out)
    assert res is out
    torch.testing.assert_close(out, L)  # chunking does not change the result
    with pytest.raises(ValueError):
        render_drr(mus, vol.ijk_to_lps(), [g, g, g])
    with pytest.raises(ValueError):
        render_drr(mu, vol.ijk_to_lps(), [g, g.resized((16, 16))])


def test_rays_missing_the_volume_give_zero_and_gradient_flows():
    vol, mu = ap_symmetric_phantom()
    g = small_geometry("PA", (0, 0, 0), size=24, field=180.0).with_isocenter((500.0, 0.0, 0.0))
    assert float(render_drr(mu, vol.ijk_to_lps(), g).abs().max()) == 0.0
    t = torch.from_numpy(mu).requires_grad_(True)
    L = render_drr(t, vol.ijk_to_lps(), small_geometry("PA", (0, 0, 0), size=16, field=180.0))
    L.sum().backward()
    assert t.grad is not None and float(t.grad.abs().sum()) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    vol, mu = ap_symmetric_phantom()
    g = [small_geometry("PA", (0, 0, 0), size=32, field=180.0), small_geometry("AP", (0, 0, 0), size=32, field=180.0)]
    cpu = render_drr(mu, vol.ijk_to_lps(), g)
    gpu = render_drr(mu, vol.ijk_to_lps(), g, device="cuda")
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- display
def test_line_integral_to_image_range_kind_and_monotone():
    L = np.linspace(0, 5, 64, dtype=np.float32).reshape(8, 8)
    for exp in (False, True):
        img = line_integral_to_image(L, exponential=exp)
        assert isinstance(img, np.ndarray) and img.dtype == np.float32 and img.shape == (8, 8)
        assert img.min() == 0.0 and img.max() == 1.0
        assert np.all(np.diff(img.ravel()) >= 0)  # bone (large L) bright
    t = line_integral_to_image(torch.from_numpy(np.stack([L, 2 * L])), percentiles=None)
    assert isinstance(t, torch.Tensor) and t.shape == (2, 8, 8)
    torch.testing.assert_close(t[0], t[1])  # per-image normalisation
    np.testing.assert_allclose(t[0].numpy().ravel(), np.linspace(0, 1, 64), atol=1e-6)


def test_clip_to_detector_when_the_detector_plane_cuts_the_volume():
    vol = make_volume(n=32, spacing=3.0, direction=np.diag([1.0, -1.0, 1.0]), center=(0, 0, 0))  # +-48 mm
    mu = np.full(vol.array.shape, MU, np.float32)
    geom = small_geometry("PA", iso=(0, 0, 0), size=8, field=40.0, object_to_detector_mm=30.0)
    centre = (slice(3, 5), slice(3, 5))  # rays near the principal ray, ~ along -y
    clipped = render_drr(mu, vol.ijk_to_lps(), geom)[0].numpy()
    whole = render_drr(mu, vol.ijk_to_lps(), geom, clip_to_detector=False)[0].numpy()
    # detector 30 mm anterior of the centre: 48 + 30 = 78 mm of the 96 mm are in front of it
    np.testing.assert_allclose(clipped[centre], MU * 78.0, rtol=2e-3)
    np.testing.assert_allclose(whole[centre], MU * 96.0, rtol=2e-3)
