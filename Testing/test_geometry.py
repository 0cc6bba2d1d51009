"""The one projection model: conventions every component relies on."""
import numpy as np
import pytest
import torch

from X2BRLib.geometry import ProjectionGeometry, project_points, uv_to_grid_sample


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_a_chest_film_shows_the_patients_left_on_the_right_and_the_head_on_top(view):
    g = ProjectionGeometry.chest(view)
    (u_left, v_left), (u_head, v_head) = g.project([[50.0, 0, 0], [0, 0, 50.0]])[0]
    centre = (g.width - 1) / 2
    assert u_left > centre and abs(v_left - centre) < 1e-6
    assert v_head < centre and abs(u_head - centre) < 1e-6


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_the_source_sits_behind_the_patient_for_pa_and_in_front_for_ap(view):
    g = ProjectionGeometry.chest(view)
    # LPS: +y is posterior
    assert (g.source[1] > 0) == (view == "PA")
    assert g.magnification == pytest.approx(g.sdd_mm / g.sod_mm) and g.magnification > 1


def test_points_on_a_ray_project_to_its_pixel():
    g = ProjectionGeometry.chest("PA", size_px=(300, 200), sdd_mm=1700, object_to_detector_mm=100)
    uv = np.array([[0, 0], [299, 199], [12.5, 170.25]])
    o, d, length = g.rays(uv)
    for frac in (0.3, 0.9, 1.0):
        got, depth = g.project(o + d * (length[:, None] * frac))
        np.testing.assert_allclose(got, uv, atol=1e-6)
        assert np.all(depth > 0)


def test_the_isocentre_is_magnified_by_sdd_over_sod():
    g = ProjectionGeometry.chest("PA", size_px=(256, 256), field_mm=430)
    uv, _ = g.project([[0, 0, 0], [10, 0, 0]])
    assert (uv[1, 0] - uv[0, 0]) * g.spacing_mm[0] == pytest.approx(10 * g.magnification)


def test_numpy_and_batched_torch_projection_agree():
    gs = [ProjectionGeometry.chest("PA"), ProjectionGeometry.chest("AP", sdd_mm=1100)]
    P = torch.tensor(np.stack([g.projection_matrix() for g in gs]), dtype=torch.float64)
    pts = np.random.default_rng(0).uniform(-150, 150, (2, 50, 3))
    uv_t, depth_t = project_points(P, torch.tensor(pts))
    for b, g in enumerate(gs):
        uv, depth = g.project(pts[b])
        np.testing.assert_allclose(uv_t[b].numpy(), uv, atol=1e-8)
        np.testing.assert_allclose(depth_t[b].numpy(), depth, atol=1e-8)


def test_grid_sample_coordinates_hit_pixel_centres():
    img = torch.zeros(1, 1, 4, 6)
    img[0, 0, 2, 5] = 1.0
    grid = uv_to_grid_sample(torch.tensor([[[[5.0, 2.0]]]]), (6, 4))
    val = torch.nn.functional.grid_sample(img, grid, align_corners=False)
    assert val.item() == pytest.approx(1.0)


def test_geometry_survives_json_and_resizing_keeps_the_field():
    g = ProjectionGeometry.chest("AP", size_px=(512, 400), spacing_mm=(0.5, 0.6))
    assert ProjectionGeometry.from_json(g.to_json()) == g
    r = g.resized((256, 200))
    assert r.spacing_mm == pytest.approx((1.0, 1.2))
    np.testing.assert_allclose(r.pixel_to_lps([[-0.5, -0.5]]), g.pixel_to_lps([[-0.5, -0.5]]), atol=1e-9)


def test_the_box_grid_is_centred_on_the_isocentre():
    g = ProjectionGeometry.chest("PA").with_isocenter((10, -5, 3))
    shape, origin, spacing = g.box_grid(4.0)
    centre = origin + (np.array(shape) - 1) / 2 * spacing
    np.testing.assert_allclose(centre, [10, -5, 3])
    assert shape == (96, 72, 96)


@pytest.mark.parametrize("bad", [dict(spacing_mm=(0, 1)), dict(size_px=(0, 10)), dict(view="LAT")])
def test_nonsense_geometry_is_refused(bad):
    with pytest.raises(ValueError):
        ProjectionGeometry.chest(**{"view": "PA", **bad})


def test_lateral_views_follow_the_display_convention():
    """LL: beam right -> left, columns toward the back; RL: beam left -> right, columns toward the
    front; rows toward the feet in both; a point nearer the detector is magnified less."""
    from X2BRLib.geometry import ProjectionGeometry

    for view, back_sign, near_x in (("LL", 1, 50.0), ("RL", -1, -50.0)):
        g = ProjectionGeometry.chest(view, size_px=(256, 256))
        assert g.is_lateral and g.view == view
        assert np.allclose(g.normal, [1 if view == "LL" else -1, 0, 0])
        (c0, r0), (c_back, _), (_, r_up) = g.project(np.array([[0, 0, 0], [0, 40.0, 0], [0, 0, 40.0]]))[0]
        assert np.sign(c_back - c0) == back_sign
        assert r_up < r0
        uv_near = g.project(np.array([[near_x, 40.0, 0.0]]))[0][0]
        uv_far = g.project(np.array([[-near_x, 40.0, 0.0]]))[0][0]
        assert abs(uv_near[0] - c0) < abs(uv_far[0] - c0)
        assert np.isclose(g.sdd_mm, 1800.0) and np.isclose(g.sdd_mm - g.sod_mm, 170.0)
        assert ProjectionGeometry.from_json(g.to_json()) == g
    with pytest.raises(ValueError, match="view must be one of"):
        ProjectionGeometry.chest("LAT")
