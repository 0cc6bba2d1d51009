"""Detector v3's gaps in the film model (dataset version 6): framed (magnified, off-centre)
films with boxes that follow, flat portable films under dense leads, spinal implants; each
where it should be, deterministic per seed, and leaving the other draws as they were."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from X2BRLib import anatomy
from X2BRLib.dataset import clinical
from X2BRLib.dataset.builder import BuildConfig, bone_boxes, make_case, warped_volumes
from X2BRLib.dataset.film import default_film, develop, sample_film
from X2BRLib.dataset.film_devices import spine_track
from X2BRLib.dataset.framing import draw_framing, framed
from X2BRLib.dataset.virtual import identity_variation
from X2BRLib.drr import render_drr
from X2BRLib.geometry import ProjectionGeometry
from X2BRLib.imaging import robust_normalise

SIZE = 96
NAMES = {b.label: b.name for b in anatomy.BONES}
FRAMING = {"zoom": 1.5, "shift_u": 0.15, "shift_v": -0.1}


@pytest.fixture(scope="module")
def pa(sample_source):
    """The sample CT's PA film at SIZE px: (line integrals, GT boxes, px_mm, labels, origin, spacing, geometry)."""
    geom = default_film("PA").geometry((SIZE, SIZE))
    gt, mu, ijk = warped_volumes(sample_source, geom, identity_variation(), 3.0)
    _, origin, spacing = geom.box_grid(3.0)
    L = render_drr(mu, ijk, geom, step_mm=1.5, clip_to_detector=False)[0].cpu().numpy().astype(np.float64)
    gt = gt.cpu().numpy()
    return L, bone_boxes(gt, origin, spacing, geom), min(geom.spacing_mm) / geom.magnification, gt, origin, \
        spacing, geom


def only(effect: str, seed: int = 3) -> clinical.ClinicalParams:
    """Clinical parameters (PA) with one effect on, every other off."""
    cp = clinical.sample_clinical(np.random.default_rng(seed), "PA")
    for name in clinical.CLINICAL_RANGES:
        setattr(cp, name, None)
    setattr(cp, effect, clinical.sample_clinical_effects(np.random.default_rng(seed), [effect])[effect])
    if effect == "flat":
        cp.flat["dark_leads"] = False
    if effect in ("flat", "implants"):  # integer ranges: the middle
        for k, (lo, hi) in clinical.CLINICAL_RANGES[effect][1].items():
            if isinstance(lo, int):
                getattr(cp, effect)[k] = (lo + hi) // 2
    return cp


def _to_framed(box, geom, fr):
    """An unframed film's pixel box (u0, v0, u1, v1) in the framed film's pixels."""
    cu, cv = (geom.width - 1) / 2.0, (geom.height - 1) / 2.0
    z = fr["zoom"]
    return np.array([(box[0] - cu - fr["shift_u"] * geom.width) * z + cu,
                     (box[1] - cv - fr["shift_v"] * geom.width) * z + cv,
                     (box[2] - cu - fr["shift_u"] * geom.width) * z + cu,
                     (box[3] - cv - fr["shift_v"] * geom.width) * z + cv])


def test_a_framed_film_is_the_magnified_off_centre_part_of_the_usual_one(pa, sample_source):
    """Rendered through the framed geometry, the line integrals are the usual film's, zoomed and
    shifted: no resampling after rendering, one geometry for film, truth and boxes."""
    L, _, _, _, _, _, geom = pa
    g = framed(geom, FRAMING)
    assert g.spacing_mm[0] == pytest.approx(geom.spacing_mm[0] / 1.5) and g.magnification == geom.magnification
    gt, mu, ijk = warped_volumes(sample_source, g, identity_variation(), 3.0)
    Lf = render_drr(mu, ijk, g, step_mm=1.5, clip_to_detector=False)[0].cpu().numpy()
    # where each framed pixel lies on the unframed film
    vv, uu = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    c = (SIZE - 1) / 2.0
    u0 = (uu - c) / 1.5 + c + FRAMING["shift_u"] * SIZE
    v0 = (vv - c) / 1.5 + c + FRAMING["shift_v"] * SIZE
    inside = (u0 >= 0) & (u0 <= SIZE - 1) & (v0 >= 0) & (v0 <= SIZE - 1)
    assert inside.mean() > 0.8
    resampled = ndimage.map_coordinates(L, [v0, u0], order=1)
    r = np.corrcoef(resampled[inside], Lf[inside])[0, 1]
    assert r > 0.9, r
    # the patient's left side moved toward the film's centre, the right side off the film's left edge
    assert Lf[:, : SIZE // 2].mean() > L[:, : SIZE // 2].mean()


def test_boxes_of_a_framed_film_are_clipped_at_its_edge_and_bones_mostly_off_it_dropped(pa):
    L, boxes, _, gt, origin, spacing, geom = pa
    g = framed(geom, FRAMING)
    every = {int(r[0]): r[1:] for r in bone_boxes(gt, origin, spacing, g)}
    kept = {int(r[0]): r[1:] for r in bone_boxes(gt, origin, spacing, g, min_inside=0.5)}
    assert set(kept) < set(every) and len(kept) >= 15
    cut = 0
    for row in boxes:
        lab, mapped = int(row[0]), _to_framed(row[1:], geom, FRAMING)
        clipped = np.clip(mapped, -0.5, SIZE - 0.5)
        on = min(clipped[2] - clipped[0], clipped[3] - clipped[1]) >= 2.0
        assert (lab in every) == on, NAMES[lab]
        if lab in every:  # the same box through the zoom and shift, clipped to the film
            np.testing.assert_allclose(every[lab], clipped, atol=1e-3)
            cut += not np.allclose(clipped, mapped)
        if lab in every and lab not in kept:  # dropped: cut by the edge, mostly off the film
            area = (mapped[2] - mapped[0]) * (mapped[3] - mapped[1])
            assert (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]) < 0.9 * area
    assert cut >= 5  # the framing cuts bones at the film's edge


def test_framing_goes_to_train_and_val_cases_only_at_its_rate_and_reproducibly(sample_source):
    draws = [draw_framing(0, 0, i, 0.3) for i in range(400)]
    assert draws == [draw_framing(0, 0, i, 0.3) for i in range(400)]
    share = np.mean([d is not None for d in draws])
    assert 0.24 < share < 0.36
    assert all(draw_framing(0, 0, i, 0.0) is None for i in range(50))
    small = dict(image_size=48, gt_voxel_mm=6.0, n_points=512, drr_step_mm=3.0, progress=False)
    cfg = BuildConfig(out="unused", framing=1.0, **small)
    train = make_case(sample_source, cfg, "train", 0)
    params = json.loads(str(train["params"]))
    assert params["film"]["framing"] == draw_framing(0, 0, 0, 1.0)
    g = ProjectionGeometry.from_json(str(train["geometry"]))
    assert g.spacing_mm[0] < 430.0 / 48 - 1e-6  # magnified: the recorded geometry is the framed one
    plain = make_case(sample_source, BuildConfig(out="unused", **small), "train", 0)
    for key in ("points_lps_mm", "gt_labels"):  # same patient, other film
        np.testing.assert_array_equal(train[key], plain[key])
    test = make_case(sample_source, cfg, "test", 0)
    film = json.loads(str(test["params"]))["film"]
    assert film["framing"] is None and not (film["clinical"] or {}).get("flat")


def test_gap_effects_come_from_their_own_stream_and_leave_the_other_draws(monkeypatch):
    films = [sample_film(np.random.default_rng([9, i])) for i in range(200)]
    monkeypatch.setitem(clinical.CLINICAL_RANGES, "flat", (1.0, clinical.CLINICAL_RANGES["flat"][1]))
    monkeypatch.setitem(clinical.CLINICAL_RANGES, "implants", (0.0, clinical.CLINICAL_RANGES["implants"][1]))
    again = [sample_film(np.random.default_rng([9, i])) for i in range(200)]
    for a, b in zip(films, again):
        assert (a.clinical is None) == (b.clinical is None)
        if a.clinical:
            for name in clinical.CLINICAL_RANGES:
                if name not in clinical.GAP_EFFECTS:
                    assert a.clinical[name] == b.clinical[name], name
            assert b.clinical["implants"] is None
            assert (b.clinical["flat"] is not None) == (b.clinical["portable"] is not None)  # portable films only
    assert sum(bool(f.clinical and f.clinical["flat"]) for f in films) < sum(
        bool(f.clinical and f.clinical["flat"]) for f in again)
    # without the gap effects (the builder's test split) a film is the same draw less those two
    without = [sample_film(np.random.default_rng([9, i]), gaps=False) for i in range(200)]
    for a, b in zip(again, without):
        if a.clinical:
            assert b.clinical["flat"] is None and b.clinical["implants"] is None
            a.clinical.update(flat=None, implants=None)
        assert a.to_dict() == b.to_dict()


def test_flat_portable_films_lie_under_dense_leads_and_keep_the_chest_a_narrow_grey_band(pa):
    L, _, px_mm, *_ = pa
    mask, _ = clinical._body(L)
    cp = only("flat")
    leads = clinical.attenuate(L, cp, "PA", px_mm) - L
    assert (leads >= -1e-12).all() and 0.02 < (leads > 1e-3).mean() < 0.3
    ecg = clinical.attenuate(L, only("ecg"), "PA", px_mm) - L
    assert (leads > 1e-3).sum() > 2 * (ecg > 1e-3).sum()  # denser than the usual leads
    cp.flat["dark_leads"] = True  # the same leads, darker than the chest behind them
    dark = clinical.attenuate(L, cp, "PA", px_mm) - L
    under = mask & (leads > 2e-3)
    assert (dark <= 1e-12).all() and (dark[under] < 0).mean() > 0.95
    cp.flat["dark_leads"] = False
    _, (r0, r1, c0, c1) = clinical._body(L)
    k = int(0.1 * SIZE)
    for L_, where in ((L, mask), (L[r0 + k:r1 - k, c0 + k:c1 - k], Ellipsis)):  # and a body that fills the film
        film = default_film("PA")
        cp.flat["slope"] = 0.35
        film.clinical = cp.to_dict()
        flat = develop(L_, film)
        np.testing.assert_array_equal(flat, develop(L_, film))  # reproducible
        np.testing.assert_allclose(robust_normalise(flat), flat, atol=1e-3)  # read again: still flat
        cp.flat["slope"] = 1.0  # the same film, look-up curve not flattened
        film.clinical = cp.to_dict()
        usual = develop(L_, film)
        spread = [np.subtract(*np.percentile(x[where], (90, 10))) for x in (flat, usual)]
        assert spread[0] < 0.6 * spread[1], spread


def test_spinal_implants_lie_over_the_thoracolumbar_spine_only(pa):
    L, boxes, px_mm, *_ = pa
    cp = only("implants")
    with_metal = clinical.attenuate(L, cp, "PA", px_mm)
    metal = with_metal - L
    mask, _ = clinical._body(L)
    top = np.percentile(L[mask], 99.5)  # bright metal: as white as the densest bone, no brighter
    assert (with_metal[metal > 1e-3] <= max(top, 0) + 1e-9).all() and metal.max() > 0.5
    assert (with_metal >= top - 1e-9).sum() > 2 * (L >= top).sum()
    rows, cols = np.nonzero(metal > 1e-3)
    vert = boxes[[NAMES[int(r[0])].startswith("vertebra") for r in boxes]]
    reach = (cp.implants["gap_mm"] + 25.0) / px_mm  # rods, screw heads and shafts beside the spine
    lo, hi = vert[:, 1].min() - reach, vert[:, 3].max() + reach
    assert lo <= cols.min() and cols.max() <= hi
    _, (r0, r1, c0, c1) = clinical._body(L)
    assert rows.min() >= r0 + 0.4 * (r1 - r0)  # the lower half of the chest and below
    track = spine_track(L, (r0, r1, c0, c1), px_mm)
    lower = vert[[NAMES[int(r[0])] in ("vertebra_T8", "vertebra_T9", "vertebra_T10", "vertebra_T11",
                                       "vertebra_T12", "vertebra_L1") for r in vert]]
    centre_u, centre_v = 0.5 * (lower[:, 1] + lower[:, 3]), 0.5 * (lower[:, 2] + lower[:, 4])
    err_mm = np.abs(np.interp(centre_v, np.arange(SIZE), track) - centre_u) * px_mm
    assert len(lower) == 6 and err_mm.mean() < 10.0, err_mm  # the rods follow the spine found on the film
    assert np.array_equal(metal, clinical.attenuate(L, cp, "PA", px_mm) - L)  # reproducible


def test_a_framed_dataset_records_its_framing_and_is_not_mixed_with_another(sample_ct_paths, tmp_path):
    from X2BRLib.dataset.builder import build_dataset

    small = dict(image_size=48, gt_voxel_mm=6.0, n_points=512, drr_step_mm=3.0, progress=False)
    cfg = BuildConfig(out=str(tmp_path / "ds"), counts={"train": 2}, framing=1.0, **small)
    m = build_dataset(cfg, sample_ct_paths, log=lambda *_: None)
    assert m["framing"] == 1.0 and m["version"] == 7
    lines = (tmp_path / "ds" / "yolo" / "labels" / "train" / "case_00000.txt").read_text().splitlines()
    for line in lines:  # clipped boxes stay on the film
        _, cx, cy, w, h = map(float, line.split())
        assert -1e-5 <= cx - w / 2 and cx + w / 2 <= 1 + 1e-5 and -1e-5 <= cy - h / 2 and cy + h / 2 <= 1 + 1e-5
    with np.load(tmp_path / "ds" / "train" / "case_00000.npz") as z:
        assert len(lines) == len(z["boxes"]) < 45
    cfg.framing = 0.0
    with pytest.raises(ValueError, match="framing"):
        build_dataset(cfg, sample_ct_paths, log=lambda *_: None)
