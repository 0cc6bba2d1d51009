"""X2B network contract, shard dataset, CPU training smoke run, weights round trip.

Uses tiny fake shards in the dataset builder's exact format (``make_fake_shards``):
an analytic phantom of three labelled ellipsoids, its film = splatted
projection of the bone voxels through the case's ProjectionGeometry.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from X2BRLib.anatomy import NUM_CLASSES
from X2BRLib.errors import InputError, WeightsError
from X2BRLib.geometry import ProjectionGeometry, project_points
from X2BRLib.x2b.data import ShardDataset, augment_image
from X2BRLib.x2b.model import X2BNet, geometry_tensors, make_decode_fn, x2b_atto, x2b_femto, x2b_pico

torch.set_num_threads(2)

BOX = (128.0, 96.0, 128.0)


def fake_geometry(size=64):
    return ProjectionGeometry.chest("PA", size_px=(size, size), field_mm=200.0, box_size_mm=BOX)


def phantom(rng):
    """Three ellipsoids (centre mm, radii mm, catalog label): a vertebra and two 'ribs'."""
    j = lambda s: rng.uniform(-s, s, 3)  # noqa: E731
    return [((0, 20, 0) + j(6), rng.uniform(10, 18, 3), 25),
            ((35, 0, 20) + j(8), (rng.uniform(12, 22), 8, 6), 1),
            ((-35, 0, 20) + j(8), (rng.uniform(12, 22), 8, 6), 13)]


def label_at(ell, pts):
    lab = np.zeros(len(pts), np.uint8)
    for c, r, v in ell:
        lab[(((pts - c) / r) ** 2).sum(1) <= 1] = v
    return lab


def make_case(rng, size=64, n_points=1024, gt_voxel_mm=4.0):
    g = fake_geometry(size)
    ell = phantom(rng)
    shape, origin, spacing = g.box_grid(gt_voxel_mm)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    centres = origin + idx * spacing
    gt = label_at(ell, centres)
    fshape, forig, fsp = g.box_grid(2.0)
    fidx = np.stack(np.meshgrid(*[np.arange(n) for n in fshape], indexing="ij"), -1).reshape(-1, 3)
    fine = forig + fidx * fsp
    bone = fine[label_at(ell, fine) > 0]
    uv, _ = g.project(bone)
    col = np.rint(uv).astype(int)
    ok = (col >= 0).all(1) & (col[:, 0] < size) & (col[:, 1] < size)
    img = np.zeros((size, size), np.float32)
    np.add.at(img, (col[ok, 1], col[ok, 0]), 1.0)
    img = ndimage.gaussian_filter(img, 1.0)
    img = img / max(img.max(), 1e-6)
    lo, hi = g.box_bounds_lps_mm()
    uni = rng.uniform(lo, hi, (n_points // 2, 3))
    near = bone[rng.integers(0, len(bone), n_points - n_points // 2)] + rng.normal(0, 3, (n_points - n_points // 2, 3))
    pts = np.concatenate([uni, near]).astype(np.float32)
    return dict(image=img.astype(np.float16), geometry=np.array(g.to_json()), points_lps_mm=pts,
                point_labels=label_at(ell, pts), gt_labels=gt.reshape(shape),
                gt_voxel_mm=np.array(gt_voxel_mm))


def make_fake_shards(root, n_train=8, n_val=2, size=64, n_points=1024, gt_voxel_mm=4.0, seed=0):
    """Write a tiny shard root in the dataset builder's format; returns root."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        names = []
        for i in range(n):
            name = f"case_{len(names) + (0 if split == 'train' else 1000):05d}.npz"
            np.savez_compressed(root / split / name, **make_case(rng, size, n_points, gt_voxel_mm))
            names.append(name)
        splits[split] = names
    (root / "dataset.json").write_text(json.dumps(dict(
        version=1, splits=splits, image_size=[size, size], gt_voxel_mm=gt_voxel_mm)))
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_fake_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    """32 px films, 4 + 1 cases: the training smoke run stays a few seconds on 2 CPU cores."""
    return make_fake_shards(tmp_path_factory.mktemp("small"), n_train=4, n_val=1, size=32, n_points=512)


# ---------------------------------------------------------------------- model contract
@pytest.mark.parametrize("factory", [x2b_atto, x2b_femto, x2b_pico])
def test_model_contract(factory):
    torch.manual_seed(0)
    model = factory(hidden=32, n_blocks=2, feat_dim=16).eval()
    info = model.encoder.feature_info
    g = ProjectionGeometry.chest("PA", size_px=(64, 32), field_mm=300.0, box_size_mm=BOX)
    P, iso, scale = geometry_tensors(g)
    B, N = 2, 50
    img = torch.rand(B, 1, 32, 64)
    pts = (torch.rand(B, N, 3) - 0.5) * torch.tensor(BOX)
    pts[:, :5] += torch.tensor([5000.0, 0.0, 0.0])  # far outside the film
    pts[:, 5:7] = torch.tensor([0.0, 1679.0, 0.0])   # at the source plane (depth ~ 1 mm)
    with torch.no_grad():
        feats, glob = model.encode(img)
        logits = model(img, P.expand(B, 3, 4), iso.expand(B, 3), scale.expand(B), pts)
        again = model.decode((feats, glob), P.expand(B, 3, 4), iso.expand(B, 3), pts, scale.expand(B))
    assert logits.shape == (B, N, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    assert torch.allclose(logits, again)
    assert len(feats) == len(info.channels()) == 4
    for f, r in zip(feats, info.reduction()):
        assert f.shape == (B, 16, 32 // r, 64 // r)
    assert glob.shape == (B, 32)
    assert model.config["encoder"] == factory().config["encoder"]
    with pytest.raises(ValueError):
        model.encode(torch.rand(1, 1, 60, 64))


def test_grow_from_preserves_the_function_then_learns():
    from X2BRLib.x2b.model import grow_from

    torch.manual_seed(0)
    small = X2BNet(hidden=32, n_blocks=2, feat_dim=8).eval()
    big = X2BNet(hidden=32, n_blocks=4, feat_dim=8, hires=6).eval()
    grow_from(big, small)
    g = ProjectionGeometry.chest("PA", size_px=(64, 64), field_mm=300.0, box_size_mm=BOX)
    P, iso, scale = geometry_tensors(g)
    img = torch.rand(2, 1, 64, 64)
    pts = (torch.rand(2, 300, 3) - 0.5) * torch.tensor(BOX)
    args = (img, P.expand(2, 3, 4), iso.expand(2, 3), scale.expand(2), pts)
    with torch.no_grad():
        assert torch.allclose(big(*args), small(*args), atol=1e-5)
    feats, _ = big.encode(img)
    assert len(feats) == 5 and feats[-1].shape == (2, 6, 64, 64)  # the full-resolution branch
    # the new parts get gradients (nothing is stuck at zero)
    big.train()
    big(*args).logsumexp(-1).mean().backward()
    assert big.fc_c[0].weight.grad[:, -6:].abs().sum() > 0
    assert big.fc_c[3].weight.grad.abs().sum() > 0 and big.blocks[3].fc_1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="n_blocks 4 -> 2"):
        grow_from(X2BNet(hidden=32, n_blocks=2, feat_dim=8, hires=6), big)
    with pytest.raises(ValueError, match="feat_dim 8 -> 16"):
        grow_from(X2BNet(hidden=32, n_blocks=4, feat_dim=16), small)


def test_pixel_alignment():
    """A feature bump under a point's projection changes that point only; transposed (row/column
    swapped) it does not: the decoder samples where geometry.project says."""
    torch.manual_seed(0)
    model = X2BNet(hidden=32, n_blocks=2, feat_dim=4).eval()
    g = fake_geometry()
    src = g.source
    targets = np.array([[20, 44], [50, 10]])  # (column, row) of point 0 and point 1
    pts = src + 0.93 * (g.pixel_to_lps(targets) - src)
    P, iso, scale = geometry_tensors(g)
    pts_t = torch.tensor(pts[None], dtype=torch.float32)
    uv, _ = project_points(P, pts_t)
    assert torch.allclose(uv[0], torch.tensor(targets, dtype=torch.float32), atol=1e-2)
    strides = model.encoder.feature_info.reduction()
    base = [torch.zeros(1, 4, 64 // s, 64 // s) for s in strides]
    glob = torch.zeros(1, 32)

    def run(transpose=False, levels=4):
        maps = [m.clone() for m in base]
        for m, s in list(zip(maps, strides))[:levels]:
            col, row = (int(round((t + 0.5) / s - 0.5)) for t in targets[0])
            if transpose:
                col, row = row, col
            m[0, :, row, col] = 5.0
        with torch.no_grad():
            return model.decode((maps, glob), P, iso, pts_t, scale)[0]

    with torch.no_grad():
        ref = model.decode((base, glob), P, iso, pts_t, scale)[0]
    bump = run()
    assert (bump[0] - ref[0]).abs().max() > 1e-3
    assert torch.allclose(bump[1], ref[1])
    # fine levels only (coarse cells overlap both positions under bilinear sampling)
    assert (run(levels=2)[0] - ref[0]).abs().max() > 1e-3
    assert torch.allclose(run(transpose=True, levels=2)[0], ref[0])


# ---------------------------------------------------------------------- dataset
def test_shard_dataset(shards):
    tr = ShardDataset(shards, "train", n_points=200, augment=True)
    va = ShardDataset(shards, "val", n_points=200)
    item = tr[0]
    assert item["image"].shape == (1, 64, 64) and item["image"].dtype == torch.float32
    assert 0 <= float(item["image"].min()) and float(item["image"].max()) <= 1
    assert item["P"].shape == (3, 4) and item["iso"].shape == (3,)
    assert item["points"].shape == (200, 3) and item["labels"].dtype == torch.int64
    a = tr[0]["points"]
    tr.set_epoch(1)
    assert not torch.equal(a, tr[0]["points"])
    v0 = va[0]["points"]
    va.set_epoch(5)
    assert torch.equal(v0, va[0]["points"])
    with pytest.raises(InputError):
        ShardDataset(shards, "test")
    x = augment_image(np.linspace(0, 1, 64 * 64).reshape(64, 64), np.random.default_rng(0))
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1


# ---------------------------------------------------------------------- training
def test_training_smoke_resume_export(small_shards, tmp_path):
    from X2BRLib.x2b.train import TrainConfig, export_weights, main, train
    from X2BRLib.x2b.weights import load_model

    out = tmp_path / "run"
    shards = small_shards
    cfg = TrainConfig(data_root=str(shards), out_dir=str(out), encoder="atto", epochs=3, batch_size=2,
                      n_points=256, lr=3e-3, warmup_epochs=0.5, num_workers=0, device="cpu",
                      hidden=32, n_blocks=2, feat_dim=16, val_cases=1, val_voxel_mm=4.0,
                      best_metric="val_vol_score")
    train(cfg)
    for f in ("last.pt", "best.pt", "log.csv", "curves.png"):
        assert (out / f).is_file(), f
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    last = {k: float(rows[-1][k]) for k in ("val_vol_bone_iou", "val_vol_bone_miou", "val_vol_score")}
    assert 0 <= last["val_vol_bone_iou"] <= 1 and 0 <= last["val_vol_bone_miou"] <= 1
    assert last["val_vol_score"] == pytest.approx((last["val_vol_bone_iou"] + last["val_vol_bone_miou"]) / 2,
                                                  abs=1e-5)
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    assert best["best"] == pytest.approx(max(float(r["val_vol_score"]) for r in rows), abs=1e-5)
    with pytest.raises(InputError):
        train(cfg)  # refuses to clobber a run without --resume
    main(["--data", str(shards), "--out", str(out), "--epochs", "4", "--batch-size", "2",
          "--n-points", "256", "--num-workers", "0", "--device", "cpu", "--hidden", "32",
          "--n-blocks", "2", "--feat-dim", "16", "--val-cases", "0", "--resume"])
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    pt, js = export_weights(out / "last.pt", tmp_path / "weights")
    model = load_model(tmp_path / "weights", "cpu")
    assert model.record["image_size"] == [32, 32] and model.record["epochs_trained"] == 4
    from X2BRLib.provenance import code_sha256

    assert model.record["code_sha256"] == code_sha256()  # which code exported it, from the files
    ck = torch.load(out / "last.pt", weights_only=True)
    ref = X2BNet(**ck["arch"]).eval()
    ref.load_state_dict(ck["model"])
    item = ShardDataset(shards, "val", 64)[0]
    args = (item["image"][None], item["P"][None], item["iso"][None], item["box_scale"][None], item["points"][None])
    with torch.no_grad():
        assert torch.allclose(model(*args), ref(*args), atol=0.05)
    # fine-tuning: a new run starts from the exported weights (lr 0: nothing moves)
    tune = tmp_path / "tune"
    main(["--data", str(shards), "--out", str(tune), "--epochs", "1", "--batch-size", "2", "--n-points", "256",
          "--num-workers", "0", "--device", "cpu", "--encoder", "atto", "--hidden", "32", "--n-blocks", "2",
          "--feat-dim", "16", "--val-cases", "0", "--lr", "0", "--init-weights", str(tmp_path / "weights")])
    tuned = torch.load(tune / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(tuned[k], v) for k, v in model.state_dict().items())
    # growing: two more decoder blocks and the full-resolution branch; at lr 0 the grown run
    # computes what the weights compute
    grown = tmp_path / "grown"
    main(["--data", str(shards), "--out", str(grown), "--epochs", "1", "--batch-size", "2", "--n-points", "256",
          "--num-workers", "0", "--device", "cpu", "--encoder", "atto", "--hidden", "32", "--n-blocks", "4",
          "--feat-dim", "16", "--hires", "4", "--val-cases", "0", "--lr", "0",
          "--init-weights", str(tmp_path / "weights")])
    ck = torch.load(grown / "last.pt", weights_only=True)
    big = X2BNet(**ck["arch"]).eval()
    big.load_state_dict(ck["model"])
    assert big.config["n_blocks"] == 4 and big.config["hires"] == 4
    assert ck["init_weights"]["sha256"] == model.record["sha256"]  # the run records what it grew from
    assert export_weights(grown / "last.pt", tmp_path / "grown_w")[1].read_text().count(model.record["sha256"]) == 1
    with torch.no_grad():
        assert torch.allclose(big(*args), model(*args), atol=1e-5)
    with pytest.raises(InputError, match="hidden 32 -> 48"):
        main(["--data", str(shards), "--out", str(tmp_path / "bad"), "--epochs", "1", "--batch-size", "2",
              "--num-workers", "0", "--device", "cpu", "--encoder", "atto", "--hidden", "48", "--n-blocks", "2",
              "--feat-dim", "16", "--val-cases", "0", "--init-weights", str(tmp_path / "weights")])


def test_training_with_two_processes_torchrun(small_shards, tmp_path):
    """The several-GPU path (DDP through torchrun) run on CPU with gloo: sharded sampler, loss
    all-reduce, rank-0 files, and --max-minutes decided by rank 0 for both ranks."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    common = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "X2BRLib.x2b.train", "--data", str(small_shards), "--out", str(out), "--batch-size", "2",
              "--n-points", "128", "--num-workers", "0", "--device", "cpu", "--encoder", "atto",
              "--hidden", "16", "--n-blocks", "1", "--feat-dim", "8", "--val-cases", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(common + ["--epochs", "3", "--max-minutes", "0"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "stopping after epoch 1" in run.stdout
    run = subprocess.run(common + ["--epochs", "2", "--resume"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["epoch"] == 2 and "module." not in next(iter(ck["model"]))


def test_weights_roundtrip_and_errors(tmp_path):
    from X2BRLib.x2b.weights import load_model, save_weights

    torch.manual_seed(0)
    model = X2BNet(hidden=32, n_blocks=1, feat_dim=8).eval()
    pt, js = save_weights(tmp_path / "w" / "model.pt", model, {"image_size": [64, 64]})
    assert pt.is_file() and js.name == "model.json"
    loaded = load_model(tmp_path / "w", "cpu")
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.allclose(a.half().float(), b), k
    fn = make_decode_fn(loaded, np.zeros((64, 64)), fake_geometry())
    p, lab = fn(np.zeros((10, 3)))
    assert p.shape == (10,) and lab.min() >= 1
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt"):
        load_model(pt, "cpu")
    with pytest.raises(WeightsError, match="weights not found at"):
        load_model(tmp_path / "nowhere" / "model.pt", "cpu")


def test_train_export_refuses_existing_weights_before_training(tmp_path, capsys):
    from X2BRLib.cli import main

    target = tmp_path / "weights"
    target.mkdir()
    (target / "model.pt").write_bytes(b"earlier weights")
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "no_shards"), "--out", str(run), "--export", str(target)]) == 2
    err = capsys.readouterr().err
    assert "model.pt: already exists" in err and "--overwrite" in err
    assert (target / "model.pt").read_bytes() == b"earlier weights" and not run.exists()
