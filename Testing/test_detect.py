"""YOLOv9 bone detection: a tiny real training run (CPU, 2 epochs, cut by the time budget and
resumed), export with checksum, the Detector's contract, the `x2br detect` command, and, once
the shipped weights exist, recall on the bundled held-out film."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "Resources" / "SampleData"
SHIPPED = REPO / "Resources" / "Models" / "yolo" / "model.pt"


def sample_film_and_boxes(size: int):
    """The bundled held-out film as the network sees it at size x size, and its GT boxes
    (K, 5) rows (label, u0, v0, u1, v1) from the GT label volume, as the dataset builder makes them."""
    from X2BRLib.dataset.builder import bone_boxes
    from X2BRLib.geometry import ProjectionGeometry
    from X2BRLib.io.radiograph import read_radiograph, to_network_input

    image, geom = to_network_input(read_radiograph(SAMPLE / "sample_radiograph.dcm"), (size, size))
    gt = np.load(SAMPLE / "sample_radiograph_gt.npz")
    g256 = ProjectionGeometry.from_json(str(gt["geometry"]))
    _, origin, spacing = g256.box_grid(float(gt["gt_voxel_mm"]))
    return image, geom, bone_boxes(gt["gt_labels"], origin, spacing, g256.resized((size, size)))


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """A YOLO dataset in the builder's layout: the sample film at 128 px (with noise) and its GT boxes."""
    from X2BRLib.dataset.builder import _write_yolo_yaml, write_yolo

    root = tmp_path_factory.mktemp("yolo_ds")
    image, _, boxes = sample_film_and_boxes(128)
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 1), ("test", 1)):
        for i in range(n):
            noisy = np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1).astype(np.float32)
            write_yolo(root, split, f"case_{i:05d}", noisy, boxes)
    _write_yolo_yaml(root, ["train", "val", "test"])
    return root


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory):
    """2 epochs from scratch: the time budget stops it after epoch 1, --resume finishes it; then export."""
    from X2BRLib.detect.train import export_detector, train_detector

    run = tmp_path_factory.mktemp("yolo_run") / "run"
    kw = dict(epochs=2, imgsz=128, batch=4, device="cpu", workers=0)
    # deterministic=False only to spare the test torch._inductor's import (6 s); training keeps the default True
    first = train_detector(tiny_dataset, run, max_minutes=1e-4, deterministic=False, **kw)
    second = train_detector(tiny_dataset, run, resume=True, **kw)
    weights = run.parent / "weights"
    export_detector(run, weights, data_yaml=tiny_dataset, device="cpu")
    return {"first": first, "second": second, "run": run, "weights": weights}


def test_training_stops_for_time_then_resumes_to_the_last_epoch(tiny_run):
    assert tiny_run["first"]["stopped_for_time"] and tiny_run["first"]["epoch"] == 1
    assert tiny_run["second"]["finished"] and tiny_run["second"]["epoch"] == 2
    assert (tiny_run["run"] / "weights" / "best.pt").is_file()


def test_a_second_training_into_the_same_run_needs_resume(tiny_run, tiny_dataset):
    from X2BRLib.detect.train import train_detector
    from X2BRLib.errors import InputError

    with pytest.raises(InputError, match="--resume"):
        train_detector(tiny_dataset, tiny_run["run"], epochs=1, device="cpu")


def test_export_records_checksum_classes_flip_free_augmentation_and_test_map(tiny_run):
    from X2BRLib import anatomy
    from X2BRLib.io.checked import sha256_file

    card = json.loads((tiny_run["weights"] / "model.json").read_text())
    assert card["sha256"] == sha256_file(tiny_run["weights"] / "model.pt")
    assert card["variant"] == "yolov9t" and card["imgsz"] == 128 and card["nc"] == 45
    assert card["names"] == [b.name for b in anatomy.BONES] and card["labels"] == list(range(1, 46))
    assert card["training"]["fliplr"] == 0.0 and card["training"]["pretrained"] is False
    assert card["epochs_trained"] == 2
    assert set(card["metrics"]["test"]) >= {"map50", "map50_95"} and card["metrics"]["test"]["n_images"] == 1


def test_missing_or_corrupt_weights_raise_weights_error_naming_the_file(tiny_run, tmp_path):
    from X2BRLib.detect.detector import Detector
    from X2BRLib.errors import WeightsError

    with pytest.raises(WeightsError, match="not found"):
        Detector(tmp_path / "nowhere", device="cpu")
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run["weights"], bad)
    data = bytearray((bad / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.pt").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"corrupt.*model\.pt"):
        Detector(bad, device="cpu")


def test_detector_returns_at_most_one_box_per_bone_inside_the_image(tiny_run):
    from X2BRLib.detect.detector import Detection, Detector
    from X2BRLib.errors import InputError

    det = Detector(tiny_run["weights"], device="cpu")
    image, _, _ = sample_film_and_boxes(128)
    found = det.detect(image, conf=0.0)
    assert found and all(isinstance(d, Detection) for d in found)
    labels = [d.label for d in found]
    assert len(labels) == len(set(labels)) and all(1 <= x <= 45 for x in labels)
    for d in found:
        u0, v0, u1, v1 = d.box_px
        assert -0.5 <= u0 <= u1 <= 127.5 and -0.5 <= v0 <= v1 <= 127.5 and 0 <= d.confidence <= 1
    assert set(found[0].to_dict()) == {"label", "name", "confidence", "box_px"}
    assert det.detect(image, conf=1.0) == []
    with pytest.raises(InputError):
        det.detect(image, conf=1.5)
    assert set(det.timings_s) >= {"network", "total"}


def test_detect_command_writes_json_and_png_and_refuses_to_overwrite(tiny_run, tmp_path, capsys):
    from X2BRLib.cli import main

    out = tmp_path / "out"
    args = ["detect", str(SAMPLE / "sample_radiograph.dcm"), "-o", str(out), "--weights", str(tiny_run["weights"]),
            "--device", "cpu", "--conf", "0.0"]
    assert main(args) == 0
    rep = json.loads((out / "detections.json").read_text())
    assert (out / "detections.png").read_bytes()[:4] == b"\x89PNG"
    assert rep["image_size"] == [128, 128] and rep["geometry"]["size_px"] == [128, 128]
    assert rep["model"]["sha256"] == json.loads((tiny_run["weights"] / "model.json").read_text())["sha256"]
    assert len(rep["detections"]) + len(rep["bones_missing"]) == 45
    before = (out / "detections.json").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "detections.json").read_bytes() == before
    assert main(args + ["--overwrite"]) == 0


def test_detect_command_on_bad_input_exits_2_naming_the_file(tiny_run, tmp_path, capsys):
    from X2BRLib.cli import main

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    out = tmp_path / "out"
    assert main(["detect", str(bad), "-o", str(out), "--weights", str(tiny_run["weights"]), "--device", "cpu"]) == 2
    assert "notes.png" in capsys.readouterr().err
    assert not (out / "detections.json").exists()
    assert main(["detect", str(bad), "-o", str(out), "--weights", str(tmp_path / "none")]) == 2
    assert "detector weights not found" in capsys.readouterr().err


def box_iou(a, b) -> float:
    """IoU of two (u0, v0, u1, v1) boxes in pixel-centre coordinates (edges at +-0.5)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0) * max(ih, 0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped detector weights not built yet (scripts/gpu_detect.sh)")
def test_shipped_detector_finds_the_bones_of_the_held_out_sample_film():
    """Recall at IoU 0.5 (same label) against the boxes of the film's GT label volume."""
    from X2BRLib.detect.detector import Detector

    det = Detector(device="cpu")
    found, image, geom = det.detect_radiograph(SAMPLE / "sample_radiograph.dcm")
    _, _, gt = sample_film_and_boxes(det.imgsz)
    by_label = {d.label: d.box_px for d in found}
    hits = [int(row[0]) in by_label and box_iou(by_label[int(row[0])], row[1:]) >= 0.5 for row in gt]
    recall = float(np.mean(hits))
    assert recall >= 0.8, f"recall@0.5 {recall:.2f}; missed {[int(r[0]) for r, h in zip(gt, hits) if not h]}"


def test_export_and_train_never_replace_weights_without_overwrite(tiny_run, tmp_path, capsys):
    from X2BRLib.cli import main
    from X2BRLib.detect.train import export_detector
    from X2BRLib.errors import InputError

    target = tmp_path / "weights"
    shutil.copytree(tiny_run["weights"], target)
    before = (target / "model.pt").read_bytes()
    with pytest.raises(InputError, match=r"model\.pt: already exists.*--overwrite"):
        export_detector(tiny_run["run"], target)
    # refused before any training starts: the new run folder is never made
    new_run = tmp_path / "new_run"
    assert main(["train-detector", "--data", str(tmp_path / "no_dataset"), "-o", str(new_run),
                 "--export", str(target), "--device", "cpu"]) == 2
    assert "--overwrite" in capsys.readouterr().err and not new_run.exists()
    assert (target / "model.pt").read_bytes() == before
    export_detector(tiny_run["run"], target, overwrite=True)
    assert json.loads((target / "model.json").read_text())["checkpoint"] == "best.pt"


def test_a_checkpoint_holding_code_is_refused_and_never_run(tiny_run, tiny_dataset, tmp_path):
    """A pickled call (here os.mkdir) inside a .pt: export, evaluate and --resume refuse it, naming
    the file and the call, and the call never happens. The real run's checkpoint loads."""
    import os

    import torch

    from X2BRLib.detect.checkpoint import load_checkpoint
    from X2BRLib.detect.train import evaluate_detector, export_detector, train_detector
    from X2BRLib.errors import InputError

    marker = tmp_path / "was_run"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    evil = tmp_path / "evil" / "weights" / "last.pt"
    evil.parent.mkdir(parents=True)
    ck = {"model": Payload(), "train_args": {"model": "yolov9t.yaml"}}
    torch.save(ck, evil)
    with pytest.raises(InputError, match=r"last\.pt: refusing to load.*mkdir"):
        export_detector(evil.parent.parent, tmp_path / "out")
    with pytest.raises(InputError, match="refusing to load"):
        evaluate_detector(evil, tiny_dataset)
    with pytest.raises(InputError, match="refusing to load"):
        train_detector(tiny_dataset, evil.parent.parent, resume=True, epochs=1, device="cpu")
    assert not marker.exists() and not (tmp_path / "out").exists()
    real = load_checkpoint(tiny_run["run"] / "weights" / "last.pt")
    assert type(real.get("ema") or real["model"]).__name__ == "DetectionModel" and real["train_args"]["imgsz"] == 128


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped detector weights not built yet (scripts/gpu_detect.sh)")
def test_test_time_passes_keep_each_bones_best_box_in_the_films_frame():
    """Each pass's boxes lie on the film's own pixels (the zoomed pass too: its boxes match the
    truth as the plain pass's do); the result holds every bone of the plain pass, each with the
    plain pass's box or the most confident box of all passes."""
    from X2BRLib.detect import test_time as tt
    from X2BRLib.detect.detector import Detector

    det = Detector(device="cpu", test_time=True)
    image, _, gt = sample_film_and_boxes(det.imgsz)
    truth = {int(r[0]): r[1:] for r in gt}
    per_pass = {name: det._detect_once(tt.view(image, name), 0.25, 0.5, tt.network_size(det.imgsz, name))
                for name in tt.PASSES}
    assert tt.network_size(det.imgsz, "zoom") > det.imgsz
    for name, dets in per_pass.items():
        ious = [box_iou(d.box_px, truth[d.label]) for d in dets if d.label in truth]
        assert len(ious) >= 30 and np.median(ious) >= 0.6, name
    merged = det.detect(image, conf=0.25)  # the detector's own setting: test-time passes
    assert det.info["test_time"] == list(tt.PASSES)
    assert [d.label for d in merged] == sorted({d.label for d in per_pass["plain"]} | {d.label for d in merged})
    plain = {d.label: d for d in per_pass["plain"]}
    best = tt.merge(per_pass.values())
    best = {d.label: d for d in best}
    assert all(d == plain.get(d.label) or d == best[d.label] for d in merged)
    assert [(d.label, d.box_px) for d in det.detect(image, conf=0.25, test_time=False)] == \
        [(d.label, d.box_px) for d in per_pass["plain"]]


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped detector weights not built yet (scripts/gpu_detect.sh)")
def test_a_test_time_box_far_from_where_the_layout_puts_its_bone_is_not_kept():
    from dataclasses import replace

    from X2BRLib.detect import test_time as tt
    from X2BRLib.detect.detector import Detector
    from X2BRLib.errors import InputError

    det = Detector(device="cpu")
    image, _, _ = sample_film_and_boxes(det.imgsz)
    found = det.detect(image, conf=0.25)
    assert det.info["test_time"] == [] and len(found) >= 40
    rib = next(d for d in found if d.name == "rib_left_5")
    plain = [d for d in found if d is not rib]  # the plain pass missed it; another pass finds it
    assert rib in tt.keep_consistent(plain, found)
    u0, v0, u1, v1 = rib.box_px
    moved = replace(rib, box_px=(u0 - 80.0, v0 + 40.0, u1 - 80.0, v1 + 40.0))  # the other side, lower
    kept = tt.keep_consistent(plain, [moved if d is rib else d for d in found])
    assert moved not in kept and len(kept) == len(plain)
    sternum = next(d for d in found if d.name == "sternum")  # another box of a bone the plain pass found
    shifted = replace(sternum, box_px=tuple(x + 60.0 for x in sternum.box_px), confidence=0.99)
    assert sternum in tt.keep_consistent(found, [shifted if d is sternum else d for d in found])
    with pytest.raises(InputError, match="unknown test-time pass"):
        tt.passes(("plain", "sharpen"))
