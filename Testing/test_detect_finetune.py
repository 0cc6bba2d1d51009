"""Fine-tuning the bone detector from the shipped weights (--init-weights) on a dataset that
`build-dataset` made (clinical films), with lateral films beside the frontal ones (one
detector for both views, `case_XXXXX_lat.png`): a tiny real CPU run, then export."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "Resources" / "Models" / "yolo"

pytestmark = pytest.mark.skipif(not (SHIPPED / "model.pt").is_file(), reason="no shipped detector weights")


@pytest.fixture(scope="module")
def two_view_dataset(tmp_path_factory, sample_ct_paths, sample_source):
    """build-dataset on the sample CT (2 train, 1 val, 1 test at 128 px), plus a lateral film of
    the sample CT with its boxes in each split, named as a two-view dataset names them."""
    from X2BRLib.dataset.builder import BuildConfig, _write_yolo_yaml, bone_boxes, build_dataset, warped_volumes
    from X2BRLib.dataset.film import default_film, develop
    from X2BRLib.dataset.virtual import identity_variation
    from X2BRLib.drr import render_drr

    root = tmp_path_factory.mktemp("ds")
    cfg = BuildConfig(out=str(root), counts={"train": 2, "val": 1, "test": 1}, image_size=128,
                      gt_voxel_mm=3.0, n_points=512, drr_step_mm=2.0, progress=False)
    build_dataset(cfg, sample_ct_paths, log=lambda m: None)
    film = default_film("LL")
    film.clinical = None
    geom = film.geometry((128, 128))
    gt, mu, ijk = warped_volumes(sample_source, geom, identity_variation(), 3.0)
    _, origin, spacing = geom.box_grid(3.0)
    image = develop(render_drr(mu, ijk, geom, step_mm=2.0, clip_to_detector=False)[0].cpu().numpy(), film)
    boxes = bone_boxes(gt.cpu().numpy(), origin, spacing, geom)
    from X2BRLib.dataset.builder import write_yolo

    for split in ("train", "val", "test"):
        write_yolo(root, split, "case_00000_lat", image, boxes)
    _write_yolo_yaml(root, ["train", "val", "test"])
    return root


def test_fine_tuning_starts_from_the_shipped_weights_and_the_export_says_so(two_view_dataset, tmp_path,
                                                                            monkeypatch):
    import torch

    from X2BRLib.detect.train import export_detector, train_detector

    assert len(list((two_view_dataset / "yolo" / "images" / "train").glob("*_lat.png"))) == 1
    run = tmp_path / "run"
    # lr0 = 0 and no warm-up: the weights stay the shipped ones, so the run shows where it started
    from X2BRLib.detect.train import _parser, parse_augment

    cli = _parser().parse_args(["train", "--data", "DS", "-o", "RUN", "--augment", "degrees=3",
                                "--augment", "scale=0.4"])
    res = train_detector(two_view_dataset, run, epochs=1, imgsz=128, batch=2, device="cpu", workers=0,
                         deterministic=False, init_weights=SHIPPED, lr0=0.0, warmup_epochs=0.0,
                         **parse_augment(cli.augment))
    assert res["finished"] and json.loads((run / "init_weights.json").read_text())["path"].endswith("model.pt")
    shipped = torch.load(SHIPPED / "model.pt", map_location="cpu", weights_only=True)
    from X2BRLib.detect.checkpoint import load_checkpoint

    ck = load_checkpoint(run / "weights" / "last.pt")
    trained = (ck.get("ema") or ck.get("model")).float().state_dict()
    key = next(k for k in shipped if k.endswith("conv.weight"))
    torch.testing.assert_close(trained[key], shipped[key].float(), atol=2e-3, rtol=0)
    out = tmp_path / "weights"
    monkeypatch.setenv("X2BR_CODE_COMMIT", "197d54a")  # as the GPU job passes it: it wins over git
    export_detector(run, out, device="cpu")
    card = json.loads((out / "model.json").read_text())
    from X2BRLib.provenance import code_sha256

    assert (card["code_commit"], card["code_commit_from"], card["code_sha256"]) == ("197d54a", "env", code_sha256())
    ship = json.loads((SHIPPED / "model.json").read_text())
    assert card["training"]["init_weights"]["sha256"] == ship["sha256"] and card["training"]["pretrained"] is True
    assert (card["training"]["degrees"], card["training"]["scale"]) == (3.0, 0.4)  # --augment, recorded
    from X2BRLib.detect.train import AUGMENT

    # the others as train.AUGMENT has them (not the shipped card's: detector v3 was trained with --augment)
    assert card["training"]["translate"] == AUGMENT["translate"]
    from X2BRLib.detect.detector import Detector

    assert Detector(out, device="cpu").imgsz == 128


def test_init_weights_of_another_variant_or_missing_are_refused_with_one_line(two_view_dataset, tmp_path):
    from X2BRLib.detect.train import train_detector
    from X2BRLib.errors import InputError

    with pytest.raises(InputError, match="--variant yolov9t"):
        train_detector(two_view_dataset, tmp_path / "a", variant="yolov9s", epochs=1, device="cpu",
                       init_weights=SHIPPED)
    with pytest.raises(InputError, match="not found"):
        train_detector(two_view_dataset, tmp_path / "b", epochs=1, device="cpu", init_weights=tmp_path / "nowhere")
    assert not (tmp_path / "a" / "weights").exists()


def test_augment_options_are_checked_with_one_line():
    from X2BRLib.detect.train import parse_augment
    from X2BRLib.errors import InputError

    assert parse_augment(["hsv_v=0.5", "close_mosaic=2"]) == {"hsv_v": 0.5, "close_mosaic": 2}
    for bad, why in (("lr0=0.1", "KEY one of"), ("degrees", "KEY one of"), ("scale=big", "not a number")):
        with pytest.raises(InputError, match=why):
            parse_augment([bad])
