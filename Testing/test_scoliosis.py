"""Marked scoliosis (dataset version 7, ``build-dataset --scoliosis P``): a C or S shaped spine
whose deviation, vertebral rotation and rib cage show in the label map, the boxes and the film;
off, nothing changes; the test split never gets it."""
from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from X2BRLib import anatomy
from X2BRLib.dataset.builder import BuildConfig, bone_boxes, make_case, warped_volumes
from X2BRLib.dataset.film import default_film
from X2BRLib.dataset.scoliosis import SCOLIOSIS_RANGES, draw_scoliosis, spine_of, unbend
from X2BRLib.dataset.virtual import identity_variation
from X2BRLib.drr import render_drr

SIZE = 96
VOXEL = 3.0
# a right thoracic C curve (apex toward the patient's right: LPS x negative) at T8
C_CURVE = {"shape": "C", "apex_mm": -35.0, "apex_level": 8.0, "cobb_deg": 45.0, "ratio": 0.0,
           "rotation_deg_per_mm": 0.4}
SMALL = dict(image_size=48, gt_voxel_mm=6.0, n_points=512, drr_step_mm=3.0, progress=False)


def _centroids(gt, origin, spacing) -> dict:
    """{bone name: (centroid LPS mm, voxel LPS mm)} of a label map."""
    out = {}
    for b in anatomy.BONES:
        idx = np.argwhere(gt == b.label)
        if len(idx):
            pts = origin + idx * spacing
            out[b.name] = (pts.mean(0), pts)
    return out


@pytest.fixture(scope="module")
def curved(sample_source):
    """The sample CT's patient straight and with C_CURVE: {off|on: (label map, boxes, DRR, centroids)}."""
    geom = default_film("PA").geometry((SIZE, SIZE))
    _, origin, spacing = geom.box_grid(VOXEL)
    out = {}
    for key, marked in (("off", None), ("on", spine_of(sample_source).describe(C_CURVE))):
        gt, mu, ijk = warped_volumes(sample_source, geom, replace(identity_variation(), marked_scoliosis=marked),
                                     VOXEL)
        gt = gt.cpu().numpy()
        L = render_drr(mu, ijk, geom, step_mm=2.0, clip_to_detector=False)[0].cpu().numpy()
        out[key] = (gt, bone_boxes(gt, origin, spacing, geom), L, _centroids(gt, origin, spacing))
    return out, geom


def test_the_spine_deviates_by_the_drawn_apex_toward_its_side_and_the_ribs_follow(curved):
    (data, _) = curved
    off, on = data["off"][3], data["on"][3]
    verts = [b.name for b in anatomy.group("vertebra")]
    shift = {v: on[v][0][0] - off[v][0][0] for v in verts}
    apex = C_CURVE["apex_mm"]
    # the largest lateral shift is at the apex (T8), toward the patient's right, the drawn deviation
    worst = min(shift, key=shift.get)
    assert worst in ("vertebra_T7", "vertebra_T8", "vertebra_T9"), shift
    assert 0.8 * abs(apex) <= -shift[worst] <= 1.05 * abs(apex), shift
    assert all(s < 1.0 for s in shift.values())  # a C curve: every level toward the same side, or none
    assert abs(shift["vertebra_C7"]) < 5.0  # the curve's ends are back on the midline
    # the ribs stay with their vertebrae: each moves toward its vertebra's side, less far, and its
    # posterior end stays as close to the spine as it was
    verts_on = np.concatenate([on[v][1] for v in verts])
    verts_off = np.concatenate([off[v][1] for v in verts])
    for side, n in itertools.product(("left", "right"), range(1, 13)):
        rib, vert = f"rib_{side}_{n}", f"vertebra_T{n}"
        dv, dr = shift[vert], on[rib][0][0] - off[rib][0][0]
        if abs(dv) > 10.0:
            assert np.sign(dr) == np.sign(dv) and abs(dr) < abs(dv) + 3.0, (rib, dr, dv)
        gap = [np.min(np.linalg.norm(c[rib][1][:, None] - v[None, ::4], axis=2)) for c, v in
               ((on, verts_on), (off, verts_off))]
        assert gap[0] <= gap[1] + 2 * VOXEL, (rib, gap)


def test_the_apex_vertebra_turns_toward_the_convexity_and_its_box_and_film_follow(curved):
    (data, geom) = curved
    off, on = data["off"], data["on"]
    # axial rotation: the vertebral body (anterior: LPS y below the centroid) toward the convex
    # (right, x negative) side, the spinous process (posterior) toward the concave side
    turn = []
    for gt, boxes, L, cents in (off, on):
        c, pts = cents["vertebra_T8"]
        turn.append(pts[pts[:, 1] < c[1], 0].mean() - pts[pts[:, 1] > c[1], 0].mean())
    assert turn[1] - turn[0] < -3.0, turn
    # the box moves as the vertebra's projection, the film's bright spine with it
    label = anatomy.bone("vertebra_T8").label
    box = {k: next(r[1:] for r in d[1] if int(r[0]) == label) for k, d in (("off", off), ("on", on))}
    moved = np.diff([geom.project(d[3]["vertebra_T8"][0][None])[0][0, 0] for d in (off, on)])[0]
    du = 0.5 * (box["on"][0] + box["on"][2]) - 0.5 * (box["off"][0] + box["off"][2])
    assert abs(moved) > 5 and abs(du - moved) < 1.5, (du, moved)
    v0, v1 = int(np.ceil(box["on"][1])), int(np.floor(box["on"][3]))
    diff = on[2][v0:v1 + 1] - off[2][v0:v1 + 1]
    cols = np.arange(SIZE)
    only_on = (cols >= box["on"][0]) & (cols <= box["on"][2]) & ~((cols >= box["off"][0]) & (cols <= box["off"][2]))
    only_off = (cols >= box["off"][0]) & (cols <= box["off"][2]) & ~((cols >= box["on"][0]) & (cols <= box["on"][2]))
    assert diff[:, only_on].mean() > 0 > diff[:, only_off].mean()


def test_the_warp_does_not_fold_at_the_ranges_corners(sample_source):
    spine = spine_of(sample_source)
    # a 16 mm grid (22k points: torch's one-thread path, quick on a shared CPU), each point's Jacobian
    g = torch.stack(torch.meshgrid(*[torch.arange(-200.0, 201.0, 16.0)] * 2, torch.arange(-250.0, 251.0, 16.0),
                                   indexing="ij"), -1).reshape(-1, 3)
    r = SCOLIOSIS_RANGES
    for shape in "CS":
        for a, cobb, level, k in itertools.product((r["apex_mm"][1], -r["apex_mm"][0]), r["cobb_deg"],
                                                   r[f"apex_level_{shape}"], r["ratio_S"] if shape == "S" else (0,)):
            sc = {"shape": shape, "apex_mm": a, "apex_level": level, "cobb_deg": cobb, "ratio": k,
                  "rotation_deg_per_mm": r["rotation_deg_per_mm"][1]}
            made = spine.describe(sc)["curves"]
            assert len(made) == (2 if shape == "S" else 1) and all(20.0 <= c["cobb_deg"] <= 75.0 for c in made)
            if cobb == r["cobb_deg"][1]:  # the steepest curves bend the most
                jac = torch.stack([unbend(g + d, spine, sc) - unbend(g - d, spine, sc) for d in 0.5 * torch.eye(3)], 2)
                assert np.linalg.det(jac.double().numpy()).min() > 0.3, sc


def test_scoliosis_goes_to_train_and_val_cases_only_at_its_rate_and_changes_nothing_else(sample_source):
    draws = [draw_scoliosis(0, 0, i, 0.3) for i in range(400)]
    assert draws == [draw_scoliosis(0, 0, i, 0.3) for i in range(400)]
    assert 0.24 < np.mean([d is not None for d in draws]) < 0.36
    assert {d["shape"] for d in draws if d} == {"C", "S"}
    assert all(20.0 <= abs(d["apex_mm"]) <= 50.0 for d in draws if d)
    assert all(draw_scoliosis(0, 0, i, 0.0) is None for i in range(50))

    def case(split, index, p):
        c = make_case(sample_source, BuildConfig(out="unused", scoliosis=p, **SMALL), split, index)
        c.pop("timings")
        return c

    def same(a, b):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    plain = case("train", 0, 0.0)
    assert "marked_scoliosis" not in json.loads(str(plain["params"]))["anatomy"]  # off: params as version 6 wrote
    curved = case("train", 0, 1.0)
    p, q = json.loads(str(plain["params"])), json.loads(str(curved["params"]))
    marked = q["anatomy"].pop("marked_scoliosis")
    assert p == q and marked["apex_mm"] == draw_scoliosis(0, 0, 0, 1.0)["apex_mm"]  # the other draws unchanged
    assert [c["cobb_deg"] for c in marked["curves"]] and not np.array_equal(plain["gt_labels"], curved["gt_labels"])
    undrawn = next(i for i in range(20) if draw_scoliosis(0, 0, i, 0.5) is None)
    same(case("train", undrawn, 0.5), case("train", undrawn, 0.0))  # a case that does not draw it: the same bytes
    same(case("test", 0, 1.0), case("test", 0, 0.0))  # the test split never gets it


def test_a_scoliosis_dataset_records_it_and_is_not_mixed_with_another(sample_ct_paths, tmp_path):
    from X2BRLib.dataset.builder import build_dataset
    from X2BRLib.errors import InputError

    cfg = BuildConfig(out=str(tmp_path / "ds"), counts={"train": 1}, scoliosis=1.0, **SMALL)
    m = build_dataset(cfg, sample_ct_paths, log=lambda *_: None)
    assert m["scoliosis"] == 1.0 and m["version"] == 7
    with np.load(tmp_path / "ds" / "train" / "case_00000.npz") as z:
        assert json.loads(str(z["params"]))["anatomy"]["marked_scoliosis"]["shape"] in ("C", "S")
    cfg.scoliosis = 0.0
    with pytest.raises(InputError, match="scoliosis"):  # the CLI's one line, exit 2
        build_dataset(cfg, sample_ct_paths, log=lambda *_: None)
