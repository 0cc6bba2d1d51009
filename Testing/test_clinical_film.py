"""The clinical film model (X2BRLib/dataset/clinical.py): each effect changes the film where it
should, none moves the bones, every view develops, and old film records still load."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from X2BRLib.dataset import clinical
from X2BRLib.dataset.film import FilmParams, default_film, develop, sample_film

SIZE = 128


@pytest.fixture(scope="module")
def drr(sample_source):
    """{view: (line integrals (H, W), GT boxes (K, 5), px_mm)} of the sample CT at SIZE px."""
    from X2BRLib.dataset.builder import bone_boxes, warped_volumes
    from X2BRLib.dataset.virtual import identity_variation
    from X2BRLib.drr import render_drr

    out = {}
    for view in ("PA", "LL"):
        geom = default_film(view).geometry((SIZE, SIZE))
        gt, mu, ijk = warped_volumes(sample_source, geom, identity_variation(), 3.0)
        _, origin, spacing = geom.box_grid(3.0)
        L = render_drr(mu, ijk, geom, step_mm=1.5, clip_to_detector=False)[0].cpu().numpy().astype(np.float64)
        out[view] = (L, bone_boxes(gt.cpu().numpy(), origin, spacing, geom),
                     min(geom.spacing_mm) / geom.magnification)
    return out


def only(effect: str, view: str = "PA", seed: int = 3) -> clinical.ClinicalParams:
    """Clinical parameters with one effect on (drawn from its range), every other off."""
    full = clinical.sample_clinical(np.random.default_rng(seed), view)
    for name in clinical.CLINICAL_RANGES:
        if name != effect:
            setattr(full, name, None)
    if getattr(full, effect) is None:  # drawn off: draw until on
        return only(effect, view, seed + 100)
    return full


def body_box(L):
    _, (r0, r1, c0, c1) = clinical._body(L)
    return r0, r1, c0, c1


def test_an_old_film_record_without_clinical_fields_loads_and_develops(drr):
    old = {"view": "PA", "sdd_mm": 1800.0, "object_to_detector_mm": 120.0, "photons": 1e4,
           "electronic_noise": 1.0, "gamma": 1.0, "clahe_clip": None, "unsharp_amount": None,
           "unsharp_sigma_px": 1.0, "noise_seed": 7}
    film = FilmParams(**json.loads(json.dumps(old)))
    assert film.clinical is None
    image = develop(drr["PA"][0], film)
    assert image.shape == (SIZE, SIZE) and 0.0 <= image.min() < image.max() <= 1.0
    # and a new record survives JSON
    new = sample_film(np.random.default_rng(1))
    assert FilmParams(**json.loads(json.dumps(new.to_dict()))) == new


def test_sampled_films_draw_the_clinical_model_reproducibly_with_each_effect_on_and_off():
    films = [sample_film(np.random.default_rng([5, i])) for i in range(300)]
    again = [sample_film(np.random.default_rng([5, i])) for i in range(300)]
    assert [f.to_dict() for f in films] == [f.to_dict() for f in again]
    with_model = [f.clinical for f in films if f.clinical]
    assert 0.75 < len(with_model) / len(films) < 0.95
    for name in clinical.CLINICAL_RANGES:
        on = [c[name] is not None for c in with_model]
        if name == "dose":
            assert all(on)
        else:
            assert 0 < sum(on) < len(on), name


def test_the_body_is_continued_beyond_the_cropped_ct_and_left_alone_inside(drr):
    L = drr["PA"][0]
    r0, r1, c0, c1 = body_box(L)
    out = clinical.attenuate(L, only("extend"), "PA", drr["PA"][2])
    k = int(0.15 * SIZE)  # the continuation blends in over 1.5 x 6 % of the film inside a (tilted) cut
    core = (slice(r0 + k, r1 - k), slice(c0 + k, c1 - k))
    np.testing.assert_array_equal(out[core], L[core])
    assert out[:r0].sum() > 0 or out[r1 + 1:].sum() > 0  # the cut chest goes on (neck or abdomen)
    assert (out >= L - 1e-9).all()  # tissue is only added


def test_arms_lie_beside_the_chest_and_breasts_over_its_lower_half(drr):
    L, _, px_mm = drr["PA"]
    r0, r1, c0, c1 = body_box(L)
    arms = clinical.attenuate(L, only("arms"), "PA", px_mm) - L
    assert arms[:, :c0].sum() + arms[:, c1 + 1:].sum() > 0.5 * arms.sum() > 0
    breasts = clinical.attenuate(L, only("breasts"), "PA", px_mm) - L
    thickest_row = np.unravel_index(np.argmax(breasts), breasts.shape)[0]
    assert breasts.max() > 0.1 and thickest_row > r0 + 0.5 * (r1 - r0)  # over the lower chest
    assert not breasts[: r0 + int(0.1 * (r1 - r0))].any()  # fading out above, nothing at the top


def test_a_lateral_film_has_one_breast_shadow_at_the_front(drr):
    L, _, px_mm = drr["LL"]
    _, _, c0, c1 = body_box(L)
    added = clinical.attenuate(L, only("breasts", "LL"), "LL", px_mm) - L
    cols = np.argwhere(added > 1e-3)[:, 1]
    assert len(cols) and np.median(cols) < 0.5 * (c0 + c1)  # LL: the front is toward low columns


def test_ecg_leads_are_thin_bright_lines_and_disks(drr):
    L, _, px_mm = drr["PA"]
    added = clinical.attenuate(L, only("ecg"), "PA", px_mm) - L
    assert added.max() > 0.1 and 0 < (added > 1e-3).mean() < 0.15


def test_bedside_effects_thicken_the_chest_hide_its_contrast_and_leave_the_air(drr):
    """habitus and lungs add tissue inside the body only (lungs: mostly where the lungs are);
    scatter compresses the chest's range of line integrals and keeps air at L = 0; portable
    blur smooths without moving anything."""
    L, _, px_mm = drr["PA"]
    mask, _ = clinical._body(L)
    far = ~ndimage.binary_dilation(mask, iterations=int(0.1 * SIZE))
    thick = clinical.attenuate(L, only("habitus"), "PA", px_mm) - L
    assert thick[mask].mean() > 0.3 and np.abs(thick[far]).max() < 1e-3
    cp = only("lungs")
    cp.lungs["effusion_mm"] = 0.0
    dense = clinical.attenuate(L, cp, "PA", px_mm) - L
    lungs = mask & (ndimage.gaussian_filter(L, 0.03 * SIZE) < np.median(L[mask]))
    assert dense[lungs].mean() > 3.0 * dense[mask & ~lungs].mean() > 0 and np.abs(dense[far]).max() < 1e-3
    cp = only("scatter")
    hazy = clinical.attenuate(L, cp, "PA", px_mm)
    spread = np.percentile(L[mask], 95) - np.percentile(L[mask], 5)
    assert np.percentile(hazy[mask], 95) - np.percentile(hazy[mask], 5) < 0.8 * spread
    assert np.abs(hazy[0, 0] - L[0, 0]) < 0.05  # air (the corner) stays air
    cp = only("portable")
    cp.portable["blur"] = 0.006
    blurred = clinical.attenuate(L, cp, "PA", px_mm)
    assert np.std(np.diff(blurred, axis=1)) < np.std(np.diff(L, axis=1))
    assert abs(blurred.sum() / L.sum() - 1.0) < 0.01


def test_the_portable_branch_lowers_the_dose_and_brings_a_thick_hazy_chest_on_frontal_films_only():
    draws = [clinical.sample_clinical(np.random.default_rng([9, i]), "AP") for i in range(400)]
    portable = [c for c in draws if c.portable]
    other = [c for c in draws if not c.portable]
    assert 0.2 < len(portable) / len(draws) < 0.4
    for name in ("habitus", "lungs", "scatter"):
        share = [np.mean([getattr(c, name) is not None for c in group]) for group in (portable, other)]
        assert share[0] > share[1] + 0.3, name
    # the same draws without the branch: what the dose was before the portable factor and exposure control
    for c in portable[:20]:
        added = (c.habitus["tissue_mm"] if c.habitus else 0.0) + (0.5 * c.lungs["lung_mm"] if c.lungs else 0.0)
        base = c.dose["gain"] / c.portable["dose_factor"] / np.exp(clinical.MU_WATER_PER_MM * added)
        assert 3.0 - 1e-6 <= base <= 30.0 + 1e-6
    for view in ("LL", "RL"):
        lateral = [clinical.sample_clinical(np.random.default_rng([9, i]), view) for i in range(100)]
        assert not any(c.portable or c.scatter or c.arms for c in lateral)


def test_collimation_and_markers_stay_off_the_chest_and_processing_sharpens(drr):
    L, boxes, _ = drr["PA"]
    image = develop(L, default_film("PA"))
    r0, r1, c0, c1 = body_box(L)
    cp = only("collimation")
    cp.collimation.update(fill="white", margin=0.0, sides=[True] * 4)  # white: the surround is black air
    coll = clinical.finish(image, cp, L)
    m = int(0.05 * SIZE)
    inner = (slice(r0 + m, r1 - m), slice(c0 + m, c1 - m))
    np.testing.assert_allclose(coll[inner], image[inner], atol=1e-3)
    assert np.abs(coll - image).max() > 0.1
    marked = clinical.finish(image, only("markers"), L)
    assert 0 < (np.abs(marked - image) > 0.05).mean() < 0.1
    from scipy import ndimage

    def detail(x):
        return np.std(x - ndimage.gaussian_filter(x, 2)) / np.std(ndimage.gaussian_filter(x, 8))

    assert detail(clinical.finish(image, only("multiscale"), L)) > detail(image)


@pytest.mark.parametrize("view", ["PA", "LL"])
def test_every_effect_together_leaves_the_bones_under_their_projections(drr, view):
    """No shift (phase correlation of the clinical film against the plain one) and, inside the
    bones' boxes, the clinical film still follows the plain film."""
    from skimage.registration import phase_cross_correlation

    L, boxes, _ = drr[view]
    plain = develop(L, default_film(view))
    film = default_film(view)
    cp = clinical.sample_clinical(np.random.default_rng(11), view)
    for name, (_, ranges) in clinical.CLINICAL_RANGES.items():  # everything on
        if getattr(cp, name) is None and not (name in clinical.FRONTAL_ONLY and view == "LL"):
            setattr(cp, name, only(name, view).__dict__[name])
    film.clinical = cp.to_dict()
    image = develop(L, film)
    shift, _, _ = phase_cross_correlation(plain, image, upsample_factor=4)
    assert np.abs(shift).max() <= 0.5
    corr = []
    for _, u0, v0, u1, v1 in boxes:
        sl = (slice(int(v0), int(v1) + 1), slice(int(u0), int(u1) + 1))
        a, b = plain[sl].ravel(), image[sl].ravel()
        if a.size > 20 and a.std() > 0 and b.std() > 0:
            corr.append(np.corrcoef(a, b)[0, 1])
    assert np.median(corr) > 0.5


@pytest.mark.parametrize("view", ["PA", "AP", "LL", "RL"])
def test_a_sampled_clinical_film_develops_in_every_view(drr, view):
    L = drr["LL" if view in ("LL", "RL") else "PA"][0]
    for seed in range(3):
        film = default_film(view)
        film.clinical = clinical.sample_clinical(np.random.default_rng(seed), view).to_dict()
        image = develop(L, film)
        assert image.shape == L.shape and np.isfinite(image).all() and 0 <= image.min() < image.max() <= 1
