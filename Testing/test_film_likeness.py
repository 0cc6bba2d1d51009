"""The film-likeness probe (X2BRLib/film_likeness.py) with the shipped detector and its shipped probe:
a simulated film scores as a radiograph, a CT slice saved as PNG does not and is warned about; other
detector weights have no probe and are not scored."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from X2BRLib.film_likeness import fit_logistic, likeness, load_probe, probe_path, score
from X2BRLib.filmcheck import check_and_scale
from X2BRLib.io.radiograph import read_radiograph, to_network_input

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "Resources" / "SampleData"


def _ct_slice_png(path):
    """The middle axial slice of the bundled sample CT, [-1000, 1000] HU as 8-bit grey."""
    import SimpleITK as sitk

    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / "chest_ct_3mm.nii.gz")))
    img = np.clip((vol[vol.shape[0] // 2] + 1000) / 2000, 0, 1) * 255
    Image.fromarray(img.astype(np.uint8)).save(path)
    return path


def test_the_shipped_probe_belongs_to_the_shipped_detector(detector):
    probe = load_probe(detector)
    assert probe is not None and probe["detector_sha256"] == detector.info["sha256"]
    n = len(probe["weights"])
    assert len(probe["mean"]) == len(probe["std"]) == n == detector.embedding(np.zeros((256, 256)), probe["layers"]).size
    assert probe["threshold"] == 0.5


def test_a_film_scores_as_a_radiograph_and_a_ct_slice_does_not(detector, tmp_path):
    film = read_radiograph(SAMPLE / "sample_radiograph.dcm")
    out, _ = check_and_scale(film, detector)
    check = out.meta["film_check"]
    assert check["film_likeness"] > 0.9 and not check["warnings"]

    rad = read_radiograph(_ct_slice_png(tmp_path / "ct_slice.png"), default_spacing_mm=None, view="PA")
    out, _ = check_and_scale(rad, detector)
    check = out.meta["film_check"]
    assert check["film_likeness"] < 0.5 and check["film_likeness_threshold"] == 0.5
    assert any(w.startswith("the image does not look like a radiograph (film likeness") for w in out.warnings)
    image, _ = to_network_input(rad, (detector.imgsz, detector.imgsz))
    assert likeness(detector, image)["film_likeness"] == check["film_likeness"]


def test_other_detector_weights_have_no_probe_and_are_not_scored(detector, tmp_path):
    from X2BRLib.detect.detector import Detector

    src = Path(detector.info["weights"])
    for name in ("model.pt", "model.json"):
        shutil.copyfile(src.with_name(name), tmp_path / name)
    other = Detector(tmp_path, device="cpu")
    assert not probe_path(other).exists() and load_probe(other) is None
    out, _ = check_and_scale(read_radiograph(SAMPLE / "sample_radiograph.dcm"), other)
    assert out.meta["film_check"]["film_likeness"] is None
    # a probe made for other weights (another sha256) is not used either
    rec = json.loads(probe_path(detector).read_text())
    probe_path(other).write_text(json.dumps({**rec, "detector_sha256": "0" * 64}))
    assert load_probe(other) is None


def test_fit_logistic_separates_two_clouds():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (200, 3)), rng.normal(0, 1, (200, 3)) + [3, 0, 0]])
    y = np.concatenate([np.zeros(200), np.ones(200)])
    mean, std, w, b = fit_logistic(x, y, l2=1.0)
    probe = {"mean": mean, "std": std, "weights": w, "bias": b}
    p = np.array([score(v, probe) for v in x])
    assert ((p > 0.5) == (y == 1)).mean() > 0.9 and abs(w[0]) > 3 * max(abs(w[1]), abs(w[2]))
