"""Two views (issue 15): X2B reading a PA film and, when a case has one, a lateral film.

Tiny hand-made two-view shards in the dataset builder's format: an analytic phantom
of three labelled ellipsoids filmed through a PA and an LL ProjectionGeometry of the
same box (the lateral's film is the splatted projection of the same bone voxels).
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from X2BRLib.anatomy import NUM_CLASSES
from X2BRLib.errors import InputError
from X2BRLib.geometry import ProjectionGeometry
from X2BRLib.pipeline import REPO
from X2BRLib.x2b.data import ShardDataset
from X2BRLib.x2b.model import X2BNet, geometry_tensors, grow_from, make_decode_fn

torch.set_num_threads(2)

BOX = (128.0, 96.0, 128.0)
V4 = REPO / "Resources" / "Models" / "x2b"


def geometry(view, size):
    return ProjectionGeometry.chest(view, size_px=(size, size), field_mm=200.0, box_size_mm=BOX)


def label_at(ellipsoids, pts):
    lab = np.zeros(len(pts), np.uint8)
    for c, r, v in ellipsoids:
        lab[(((pts - c) / r) ** 2).sum(1) <= 1] = v
    return lab


def film(g, bone_pts, size):
    uv, _ = g.project(bone_pts)
    col = np.rint(uv).astype(int)
    ok = (col >= 0).all(1) & (col[:, 0] < size) & (col[:, 1] < size)
    img = np.zeros((size, size), np.float32)
    np.add.at(img, (col[ok, 1], col[ok, 0]), 1.0)
    img = ndimage.gaussian_filter(img, 1.0)
    return (img / max(img.max(), 1e-6)).astype(np.float16)


def make_case(rng, size=32, n_points=512, gt_voxel_mm=4.0):
    g, g_lat = geometry("PA", size), geometry("LL", size)
    ell = [((0, 20, 0) + rng.uniform(-6, 6, 3), rng.uniform(10, 18, 3), 25),
           ((35, 0, 20) + rng.uniform(-8, 8, 3), (rng.uniform(12, 22), 8, 6), 1),
           ((-35, 0, 20) + rng.uniform(-8, 8, 3), (rng.uniform(12, 22), 8, 6), 13)]
    shape, origin, spacing = g.box_grid(gt_voxel_mm)
    centres = origin + np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1).reshape(-1, 3) * spacing
    fshape, forig, fsp = g.box_grid(2.0)
    fine = forig + np.stack(np.meshgrid(*map(np.arange, fshape), indexing="ij"), -1).reshape(-1, 3) * fsp
    bone = fine[label_at(ell, fine) > 0]
    lo, hi = g.box_bounds_lps_mm()
    pts = np.concatenate([rng.uniform(lo, hi, (n_points // 2, 3)),
                          bone[rng.integers(0, len(bone), n_points // 2)]]).astype(np.float32)
    return dict(image=film(g, bone, size), geometry=np.array(g.to_json()),
                image_lat=film(g_lat, bone, size), geometry_lat=np.array(g_lat.to_json()),
                points_lps_mm=pts, point_labels=label_at(ell, pts),
                gt_labels=label_at(ell, centres).reshape(shape), gt_voxel_mm=np.array(gt_voxel_mm),
                boxes=np.zeros((0, 5), np.float32))


def make_shards(root, n_train=3, n_val=1, lateral=True):
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True)
        splits[split] = [f"case_{i:05d}.npz" for i in range(n)]
        for name in splits[split]:
            case = make_case(rng)
            if not lateral:
                case = {k: v for k, v in case.items() if not k.endswith("_lat")}
            np.savez_compressed(root / split / name, **case)
    index = dict(version=1, splits=splits, image_size=[32, 32], gt_voxel_mm=4.0)
    (root / "dataset.json").write_text(json.dumps(dict(index, lateral=True) if lateral else index))
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("twoview"))


@pytest.fixture(scope="module")
def v4():
    from X2BRLib.x2b.weights import load_model

    return load_model(V4, "cpu")


def film_batch(size, n, seed=0):
    """Two cases: random PA and LL films of the default box, their cameras, query points."""
    torch.manual_seed(seed)
    g, g_lat = (ProjectionGeometry.chest(v, size_px=(size, size)) for v in ("PA", "LL"))
    P, iso, scale = geometry_tensors(g)
    P_lat = geometry_tensors(g_lat)[0]
    pts = (torch.rand(2, n, 3) - 0.5) * torch.tensor(g.box_size_mm, dtype=torch.float32)
    return (torch.rand(2, 1, size, size), P.expand(2, 3, 4), iso.expand(2, 3), scale.expand(2), pts,
            torch.rand(2, 1, size, size), P_lat.expand(2, 3, 4))


# ---------------------------------------------------------------------- the network
@pytest.mark.parametrize("fusion", ["mean", "max", "concat", "attn"])
def test_a_two_view_model_gives_per_point_logits_with_and_without_the_lateral(fusion):
    model = X2BNet(hidden=32, n_blocks=2, feat_dim=8, views=2, fusion=fusion).eval()
    img, P, iso, scale, pts, img_lat, P_lat = film_batch(64, 50)
    with torch.no_grad():
        alone = model(img, P, iso, scale, pts)
        both = model(img, P, iso, scale, pts, img_lat, P_lat, torch.ones(2))
    assert alone.shape == both.shape == (2, 50, NUM_CLASSES)
    assert torch.isfinite(both).all()
    assert model.config["views"] == 2 and model.config["fusion"] == fusion
    assert "views" not in X2BNet(hidden=32, n_blocks=2, feat_dim=8).config  # one-view records stay as they were
    with pytest.raises(ValueError, match="views"):
        X2BNet(views=3)


def test_the_shipped_weights_stay_one_view_models(v4):
    assert "views" not in v4.record["architecture"] and v4.views == 1 and v4.fc_lat is None
    img, P, iso, scale, pts, img_lat, P_lat = film_batch(64, 100)
    with torch.no_grad(), pytest.raises(ValueError, match="reads one view"):
        v4(img, P, iso, scale, pts, img_lat, P_lat)


def test_a_two_view_model_grown_from_v4_computes_v4_exactly_without_a_lateral(v4):
    img, P, iso, scale, pts, img_lat, P_lat = film_batch(64, 200)
    with torch.no_grad():
        ref = v4(img, P, iso, scale, pts)
    for fusion in ("mean", "max"):
        model = X2BNet(**v4.config, views=2, fusion=fusion).eval()
        assert grow_from(model, v4) == {"views": (1, 2)}
        with torch.no_grad():
            assert torch.equal(model(img, P, iso, scale, pts), ref)
            mixed = model(img, P, iso, scale, pts, img_lat, P_lat, torch.tensor([0.0, 1.0]))
        assert torch.equal(mixed[0], ref[0])  # has_lat = 0: exactly v4, case by case
        assert (mixed[1] - ref[1]).abs().max() > 1e-3  # the lateral changes what it is given to
    other = img_lat.clone()
    other[1] = torch.rand(1, 64, 64)
    with torch.no_grad():
        changed = model(img, P, iso, scale, pts, other, P_lat, torch.tensor([0.0, 1.0]))
    assert torch.equal(changed[0], mixed[0]) and (changed[1] - mixed[1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="views 2 -> None"):
        grow_from(X2BNet(**v4.config), model)
    other_fusion = X2BNet(**v4.config, views=2, fusion="mean").eval()  # model is max-fused
    assert grow_from(other_fusion, model) == {"fusion": ("max", "mean")}
    with torch.no_grad():  # PA alone stays exact; the pair is fused the other way
        assert torch.equal(other_fusion(img, P, iso, scale, pts), ref)
        fused = other_fusion(img, P, iso, scale, pts, img_lat, P_lat, torch.tensor([0.0, 1.0]))
    assert torch.equal(fused[0], ref[0]) and (fused[1] - mixed[1]).abs().max() > 1e-4



def test_concat_fusion_grows_from_mean_weights_exact_on_pa_alone_and_learns_the_lateral_apart(v4):
    """Concat fusion: the lateral's features have their own projections. Grown from a mean-fused model
    they start at zero (the pair = PA alone + the lateral's flag term); once they are not zero, the
    lateral film changes the pair and never PA alone."""
    img, P, iso, scale, pts, img_lat, P_lat = film_batch(64, 200)
    mean = X2BNet(**v4.config, views=2, fusion="mean").eval()
    grow_from(mean, v4)
    cat = X2BNet(**v4.config, views=2, fusion="concat").eval()
    assert grow_from(cat, mean) == {"fusion": ("mean", "concat")}
    assert not cat.fc_clat.weight.any() and not cat.fc_glat.weight.any()
    with torch.no_grad():
        ref = v4(img, P, iso, scale, pts)
        assert torch.equal(cat(img, P, iso, scale, pts), ref)
        for m in (cat.fc_clat, cat.fc_glat):
            torch.nn.init.normal_(m.weight, std=0.05)
        a = cat(img, P, iso, scale, pts, img_lat, P_lat, torch.tensor([0.0, 1.0]))
        other = img_lat.clone()
        other[1] = torch.rand(1, 64, 64)
        b = cat(img, P, iso, scale, pts, other, P_lat, torch.tensor([0.0, 1.0]))
    assert torch.equal(a[0], ref[0]) and torch.equal(b[0], ref[0])
    assert (b[1] - a[1]).abs().max() > 1e-4


def test_attention_fusion_grows_from_mean_weights_as_mean_fusion_and_never_touches_pa_alone(v4):
    """Attention fusion: grown from a mean-fused model its scorer's last layer is zero, so both views
    weigh 0.5 (the mean model's pair, to rounding); a trained scorer moves the pair, never PA alone."""
    img, P, iso, scale, pts, img_lat, P_lat = film_batch(64, 200)
    mean = X2BNet(**v4.config, views=2, fusion="mean").eval()
    grow_from(mean, v4)
    att = X2BNet(**v4.config, views=2, fusion="attn").eval()
    assert grow_from(att, mean) == {"fusion": ("mean", "attn")}
    assert not att.att[2].weight.any() and att.att[0].weight.any()
    has = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        ref = v4(img, P, iso, scale, pts)
        pair_mean = mean(img, P, iso, scale, pts, img_lat, P_lat, has)
        pair = att(img, P, iso, scale, pts, img_lat, P_lat, has)
        assert torch.equal(att(img, P, iso, scale, pts), ref) and torch.equal(pair[0], ref[0])
        assert torch.allclose(pair[1], pair_mean[1], atol=1e-4)
        torch.nn.init.normal_(att.att[2].weight, std=0.5)
        moved = att(img, P, iso, scale, pts, img_lat, P_lat, has)
    assert torch.equal(moved[0], ref[0]) and (moved[1] - pair_mean[1]).abs().max() > 1e-3
    assert torch.isfinite(moved).all()


# ---------------------------------------------------------------------- data and training
def test_lateral_datasets_give_the_lateral_and_old_ones_do_not(shards, tmp_path):
    item = ShardDataset(shards, "train", n_points=100, augment=True)[0]
    assert item["image_lat"].shape == (1, 32, 32) and item["P_lat"].shape == (3, 4)
    assert float(item["has_lat"]) == 1.0
    assert not torch.equal(item["image_lat"], item["image"])
    old = ShardDataset(make_shards(tmp_path / "old", 1, 1, lateral=False), "train", n_points=100)[0]
    assert not {"image_lat", "P_lat", "has_lat"} & set(old)


def test_two_view_training_reports_both_and_grows_from_one_view_weights(shards, tmp_path):
    from X2BRLib.x2b.train import main
    from X2BRLib.x2b.weights import save_weights

    common = ["--data", str(shards), "--batch-size", "2", "--n-points", "128", "--num-workers", "0",
              "--device", "cpu", "--encoder", "atto", "--hidden", "16", "--n-blocks", "1", "--feat-dim", "8",
              "--epochs", "1", "--views", "2", "--max-train-cases", "2"]
    main(common + ["--out", str(tmp_path / "run"), "--val-cases", "1", "--val-voxel-mm", "4",
                   "--best-metric", "val_vol_score_both", "--lat-dropout", "0.5"])
    row = next(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    for key in ("val_vol_score", "val_vol_score_lat", "val_point_miou_lat"):
        assert 0 <= float(row[key]) <= 1, key
    assert float(row["val_vol_score_both"]) == pytest.approx(
        (float(row["val_vol_score"]) + float(row["val_vol_score_lat"])) / 2, abs=1e-5)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["arch"]["views"] == 2 and best["best"] == pytest.approx(float(row["val_vol_score_both"]), abs=1e-5)
    # from one-view weights, lr 0: the grown run computes them exactly on the PA film alone
    torch.manual_seed(1)
    one = X2BNet(hidden=16, n_blocks=1, feat_dim=8).eval()
    save_weights(tmp_path / "one", one, {"image_size": [32, 32]})
    main(common + ["--out", str(tmp_path / "grown"), "--val-cases", "0", "--lr", "0",
                   "--init-weights", str(tmp_path / "one")])
    ck = torch.load(tmp_path / "grown" / "last.pt", weights_only=True)
    grown = X2BNet(**ck["arch"]).eval()
    grown.load_state_dict(ck["model"])
    from X2BRLib.x2b.weights import load_model

    one = load_model(tmp_path / "one", "cpu")  # as saved (fp16)
    b = next(iter(torch.utils.data.DataLoader(ShardDataset(shards, "val", 64), batch_size=1)))
    with torch.no_grad():
        ref = one(b["image"], b["P"], b["iso"], b["box_scale"], b["points"])
        out = grown(b["image"], b["P"], b["iso"], b["box_scale"], b["points"], b["image_lat"], b["P_lat"],
                    torch.zeros(1))
    assert torch.equal(out, ref)
    with pytest.raises(InputError, match="--lateral"):
        main(common + ["--out", str(tmp_path / "bad"), "--data",
                       str(make_shards(tmp_path / "old", 1, 1, lateral=False))])
    assert not (tmp_path / "bad").exists()
    with pytest.raises(InputError, match="--fusion must be one of mean, max"):
        main(common + ["--out", str(tmp_path / "bad"), "--fusion", "attention"])
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------- reconstruction
def test_a_pair_is_reconstructed_and_one_view_weights_refuse_a_lateral(shards, tmp_path):
    from X2BRLib.pipeline import ReconstructOptions, Reconstructor
    from X2BRLib.x2b.weights import save_weights

    d = ShardDataset(shards, "val").load(0)
    image, g = d["image"].astype(np.float32), d["geometry"]
    lat, g_lat = d["image_lat"].astype(np.float32), d["geometry_lat"]
    one = Reconstructor(ReconstructOptions(device="cpu", weights=str(V4), check_films=False))
    with pytest.raises(InputError, match="these weights read one film.*two-view weights"):
        one.reconstruct_image(image, g, voxel_mm=4.0, lateral=lat, lateral_geometry=g_lat)
    torch.manual_seed(0)
    save_weights(tmp_path / "two", X2BNet(hidden=16, n_blocks=1, feat_dim=8, views=2), {"image_size": [32, 32]})
    two = Reconstructor(ReconstructOptions(device="cpu", weights=str(tmp_path / "two"), check_films=False))
    rec = two.reconstruct_image(image, g, voxel_mm=4.0, lateral=lat, lateral_geometry=g_lat)
    assert rec.labels_xyz.shape == d["gt_labels"].shape and rec.stats["views"] == ["PA", "LL"]
    with pytest.raises(InputError, match="network form"):
        two.reconstruct_image(image, g, voxel_mm=4.0, lateral=lat[:16], lateral_geometry=g_lat)
    fn = make_decode_fn(two.model, image, g, lateral=lat, lateral_geometry=g_lat)
    p, label = fn(np.zeros((5, 3)))
    assert p.shape == (5,) and label.min() >= 1


def test_evaluate_reports_pa_alone_and_the_pair_on_the_same_cases(shards, tmp_path, capsys):
    from X2BRLib.cli import main
    from X2BRLib.pipeline import ReconstructOptions, Reconstructor
    from X2BRLib.x2b.evaluate import evaluate
    from X2BRLib.x2b.weights import save_weights

    torch.manual_seed(0)
    save_weights(tmp_path / "two", X2BNet(hidden=16, n_blocks=1, feat_dim=8, views=2), {"image_size": [32, 32]})
    save_weights(tmp_path / "one", X2BNet(hidden=16, n_blocks=1, feat_dim=8), {"image_size": [32, 32]})
    two, one = (Reconstructor(ReconstructOptions(device="cpu", weights=str(tmp_path / n), check_films=False))
                for n in ("two", "one"))
    kw = dict(split="train", n_points=500, baseline_cases=2)
    a = evaluate(shards, two, max_cases=1, others={"one": one}, **kw)
    assert list(a["methods"]) == ["x2b", "x2b+lat", "x2b_one", "mean_skeleton"]  # one-view weights: PA alone
    assert a["views"] == ["pa", "pa+lat"] and a["lateral_offset_mm"] == 0.0
    assert set(a["per_patient"]["unknown"]) == set(a["methods"]) and "x2b+lat" in a["per_case"][0]
    for first in (0, 1):
        report = evaluate(shards, two, first_case=first, max_cases=1, views=("pa+lat",), baseline=False,
                          lateral_offset_mm=20.0, **kw)
        (tmp_path / f"off{first}.json").write_text(json.dumps(report))
    assert main(["merge-evaluations", str(tmp_path / "off0.json"), str(tmp_path / "off1.json"),
                 "-o", str(tmp_path / "off.json")]) == 0
    off = json.loads((tmp_path / "off.json").read_text())
    assert list(off["methods"]) == ["x2b+lat"] and off["n_cases"] == 2 and off["lateral_offset_mm"] == 20.0
    # the same films, the lateral's camera told 20 mm higher: another answer
    assert off["per_case"][0]["x2b+lat"] != a["per_case"][0]["x2b+lat"]
    capsys.readouterr()
    assert main(["evaluate", "--data", str(shards), "--split", "train", "--weights", str(tmp_path / "one"), "--device", "cpu",
                 "--views", "pa+lat", "-o", str(tmp_path / "d.json")]) == 2
    assert "read one film" in capsys.readouterr().err and not (tmp_path / "d.json").exists()
