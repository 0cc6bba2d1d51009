"""Regression: the shipped X2B weights reconstruct the committed held-out case
(test split, case 0; never seen in training) on CPU with a stated accuracy.

Measured when the weights were made (v4; 2-core CPU, this machine): all-bone IoU 0.450,
mean per-bone IoU 0.404. The asserted floors leave room for float differences only.
"""
import json

import numpy as np
import pytest

from X2BRLib import anatomy, metrics
from X2BRLib.cli import REPO, main
from X2BRLib.errors import WeightsError
from X2BRLib.pipeline import DEFAULT_WEIGHTS, ReconstructOptions, Reconstructor

SAMPLE = REPO / "Resources" / "SampleData" / "sample_radiograph.dcm"
GT = REPO / "Resources" / "SampleData" / "sample_radiograph_gt.npz"
IOU_ALL_BONE_FLOOR = 0.44
IOU_PER_BONE_FLOOR = 0.39


@pytest.fixture(scope="module")
def reconstruction(tmp_path_factory):
    out = tmp_path_factory.mktemp("recon")
    rc = main(["reconstruct", str(SAMPLE), "-o", str(out), "--device", "cpu", "--no-progress"])
    assert rc == 0
    return out


def test_the_held_out_sample_is_reconstructed_with_the_stated_accuracy(reconstruction):
    import slicerio

    seg = slicerio.read_segmentation(str(reconstruction / "bones.seg.nrrd"))
    labels = seg["voxels"]  # (I, J, K) = (X, Y, Z), as the writer stored them
    gt = np.load(GT)["gt_labels"]
    assert labels.shape == gt.shape
    assert metrics.iou_all_bone(labels, gt) >= IOU_ALL_BONE_FLOOR
    per_bone = [v for v in metrics.iou_per_bone(labels, gt).values() if np.isfinite(v)]
    assert np.mean(per_bone) >= IOU_PER_BONE_FLOOR


def test_the_outputs_are_complete_and_named_after_the_catalog(reconstruction):
    report = json.loads((reconstruction / "report.json").read_text())
    assert report["bones_found"] >= 40
    assert report["grid"]["frame"] == "LPS" and report["grid"]["spacing_mm"] == [2.0, 2.0, 2.0]
    assert report["model"]["sha256"] == json.loads((DEFAULT_WEIGHTS / "model.json").read_text())["sha256"]
    stls = {p.stem for p in (reconstruction / "meshes").glob("*.stl")}
    assert stls <= {b.name for b in anatomy.BONES} and len(stls) >= 40
    assert (reconstruction / "preview.png").stat().st_size > 10_000


def test_reconstruct_never_overwrites_without_asking(reconstruction, capsys):
    before = (reconstruction / "report.json").read_bytes()
    rc = main(["reconstruct", str(SAMPLE), "-o", str(reconstruction), "--device", "cpu", "--quality", "fast",
               "--no-progress"])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    assert (reconstruction / "report.json").read_bytes() == before


def test_a_batch_goes_on_past_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "in" / "notes.png"
    bad.parent.mkdir()
    bad.write_text("not an image")
    rc = main(["reconstruct", str(bad), "-o", str(tmp_path / "out"), "--device", "cpu", "--no-progress"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 2 and out["failed"][0]["input"].endswith("notes.png") and not out["reconstructed"]
    assert not (tmp_path / "out" / "bones.seg.nrrd").exists()


def test_corrupt_weights_are_refused_clearly(tmp_path):
    (tmp_path / "model.pt").write_bytes((REPO / "Resources/Models/x2b/model.pt").read_bytes()[:-10] + b"0123456789")
    (tmp_path / "model.json").write_text((REPO / "Resources/Models/x2b/model.json").read_text())
    with pytest.raises(WeightsError, match="corrupt"):
        Reconstructor(ReconstructOptions(device="cpu", weights=str(tmp_path)))


def test_progress_lines_of_the_command_drive_the_slicer_progress_bar():
    from X2BRLib.slicer_process import STAGE_PROGRESS, parse_line

    first, last = parse_line("x2br: progress 0.10 film read"), parse_line("x2br: progress 1.00 written to out")
    assert first.kind == last.kind == "stage"
    assert STAGE_PROGRESS["reconstructing"] < first.progress < last.progress
    assert last.progress == pytest.approx(STAGE_PROGRESS["written"])
    assert parse_line("x2br: progress soon").kind == "log"
