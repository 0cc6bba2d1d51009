"""What a person sees: preview.png's title and legend, warnings as one plain line, progress
that keeps moving during MISE, and the demo's closing lines."""
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # noqa: E402 (repo root)

from PIL import Image  # noqa: E402

from X2BRLib import anatomy  # noqa: E402
from X2BRLib.cli import demo_summary, main, show_warning  # noqa: E402
from X2BRLib.geometry import ProjectionGeometry  # noqa: E402
from X2BRLib.io.outputs import preview_figure  # noqa: E402
from X2BRLib.io.preview_text import bone_groups, preview_title  # noqa: E402
from X2BRLib.io.radiograph import read_radiograph  # noqa: E402
from X2BRLib.io.dicom_writer import write_radiograph_dicom  # noqa: E402
from X2BRLib.pipeline import Reconstruction, write_outputs  # noqa: E402
from X2BRLib.x2b.commands import ProgressLines  # noqa: E402
from X2BRLib.x2b.mise import extract_labels  # noqa: E402


def film_png(path, size=128):
    yy, xx = np.mgrid[:size, :size]
    img = 60 + 120 * np.exp(-((xx - size / 2) ** 2) / (2 * (size / 10) ** 2))  # a bright "spine"
    img += np.random.default_rng(0).normal(0, 3, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return path


def reconstruction_of(radiograph, labels=(1, 13, 25, 39)):
    """A Reconstruction of a real read film with a few catalog bones on a small grid."""
    geom = radiograph.geometry
    lab = np.zeros((24, 20, 24), np.uint8)
    for i, value in enumerate(labels):
        lab[4 + 4 * i:7 + 4 * i, 8:12, 8:16] = value
    origin, spacing = np.array([-24.0, -20.0, -24.0]), np.array([2.0, 2.0, 2.0])
    return Reconstruction(lab, origin, spacing, geom, radiograph.image, radiograph)


# ---------------------------------------------------------------------- preview.png
def test_the_preview_title_names_the_file_the_method_the_bones_and_the_scale(tmp_path):
    image = np.random.default_rng(1).random((96, 128)).astype(np.float32)
    geom = ProjectionGeometry.chest("PA", size_px=(128, 96), spacing_mm=(0.2, 0.2))
    dcm = write_radiograph_dicom(tmp_path / "chest.dcm", image, geom)
    rec = reconstruction_of(read_radiograph(dcm))
    title = preview_title(rec.report())
    first, second = title.splitlines()
    assert first == "chest.dcm: X2B, 4 of 45 bones, PA view"
    assert second == "pixel 0.2 x 0.2 mm (film 26 x 19 mm) from the file's ImagerPixelSpacing"
    refined = dict(rec.report(), stats={"refine": {"method": "x2br"}})
    assert preview_title(refined).startswith("chest.dcm: X2BR (refined), 4 of 45 bones")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        png = read_radiograph(film_png(tmp_path / "film.png"))
    second = preview_title(reconstruction_of(png).report()).splitlines()[1]
    assert second.startswith("pixel 0.143 x 0.143 mm (film 18 x 18 mm) from the default (the file gives none")
    assert second.endswith(f"{len(png.warnings)} warnings in report.json")


def test_the_preview_figure_carries_the_title_and_a_legend_of_the_groups_present(tmp_path):
    image = np.random.default_rng(1).random((96, 128)).astype(np.float32)
    geom = ProjectionGeometry.chest("PA", size_px=(128, 96), spacing_mm=(0.2, 0.2))
    rec = reconstruction_of(read_radiograph(write_radiograph_dicom(tmp_path / "c.dcm", image, geom)))
    title = preview_title(rec.report())
    fig = preview_figure(rec.image, rec.geometry, rec.labels_xyz, rec.origin_lps_mm, rec.spacing_mm, title)
    assert fig._suptitle.get_text() == title
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["ribs, left", "ribs, right", "vertebrae C7-L1", "sternum"]  # labels 1, 13, 25, 39
    assert [t for t, _ in bone_groups()] == legend + ["clavicles", "scapulae", "humeri"]
    assert {tuple(c) for _, c in bone_groups()} <= {tuple(b.color_rgb) for b in anatomy.BONES}
    paths = write_outputs(rec, tmp_path / "out", meshes=False)  # the written preview uses that title
    assert Image.open(paths["preview"]).size == (1000, 600)


# ---------------------------------------------------------------------- warnings
def test_a_warning_is_one_plain_line(tmp_path, capsys):
    png = film_png(tmp_path / "film.png")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show_warning
        read_radiograph(png)
        warnings.warn("a library's\nmulti-line warning", DeprecationWarning)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"x2br: warning: {png}: no valid pixel spacing (PNG files carry no")
    assert err[-1] == "x2br: warning: a library's multi-line warning [DeprecationWarning]"
    assert all(line.startswith("x2br: warning: ") for line in err)  # no source lines


def test_the_command_prints_warnings_as_x2br_lines_and_restores_the_display(tmp_path, capsys):
    before = warnings.showwarning
    png = film_png(tmp_path / "film.png", size=256)
    assert main(["detect", str(png), "-o", str(tmp_path / "det"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"x2br: warning: {png}: no valid pixel spacing") for line in err)
    assert not any("Warning:" in line and ".py:" in line for line in err)
    assert warnings.showwarning is before


def test_the_slicer_module_reads_the_warning_lines():
    from X2BRLib.slicer_process import parse_line

    event = parse_line("x2br: warning: /tmp/a.png: view (PA/AP) unknown; assuming PA\n")
    assert event.kind == "warning" and event.message == "/tmp/a.png: view (PA/AP) unknown; assuming PA"


# ---------------------------------------------------------------------- progress
def test_mise_reports_progress_after_every_batch():
    geom = ProjectionGeometry.chest("PA", size_px=(64, 64), spacing_mm=(6.0, 6.0))

    def ball(points):  # a 60 mm ball of bone, label 25
        r = np.linalg.norm(points, axis=1)
        return 1.0 / (1.0 + np.exp((r - 60.0) / 3.0)), np.full(len(points), 25)

    calls = []
    labels, stats = extract_labels(ball, geom, voxel_mm_final=4.0, start_voxel_mm=8.0, batch_points=4096,
                                   progress=lambda f, m: calls.append((f, m)))
    fractions = [f for f, _ in calls]
    batches = sum(-(-q // 4096) for q in stats["level_queries"])
    assert len(calls) == batches > 2 and (labels == 25).any()
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] == pytest.approx(1.0)
    assert calls[0][1].startswith("MISE level 1 of 2 (8 mm lattice)") and "MISE level 2 of 2" in calls[-1][1]


def test_progress_lines_are_throttled_within_a_stage(capsys):
    now = [0.0]
    lines = ProgressLines(min_interval_s=1.0, clock=lambda: now[0])
    for i in range(10):  # ten MISE batches in 0.9 s: the first line only
        lines(0.1 + 0.01 * i, f"MISE level 1 of 2: {i} of 10")
        now[0] += 0.09
    now[0] = 1.0
    lines(0.3, "MISE level 1 of 2: a second later")  # 1 s after the first line
    lines(0.6, "CPD iteration 1 of at most 40")  # a new stage: printed at once
    lines(1.0, "written to out")
    err = capsys.readouterr().err.splitlines()
    assert err == ["x2br: progress 0.10 MISE level 1 of 2: 0 of 10", "x2br: progress 0.30 MISE level 1 of 2: "
                   "a second later", "x2br: progress 0.60 CPD iteration 1 of at most 40",
                   "x2br: progress 1.00 written to out"]


# ---------------------------------------------------------------------- make demo
def test_the_demo_ends_by_saying_what_was_written_and_what_to_open(tmp_path):
    for method, bones in (("x2b", 44), ("x2br", 43)):
        (tmp_path / method / "meshes").mkdir(parents=True)
        (tmp_path / method / "report.json").write_text(json.dumps({"bones_found": bones}))
        for i in range(bones):
            (tmp_path / method / "meshes" / f"bone_{i}.stl").write_bytes(b"")
    lines = demo_summary(tmp_path)
    assert lines[0] == f"x2br demo: done. Written under {tmp_path}:"
    assert "X2B (network only), 44 bones" in lines[1] and "44 STL" in lines[1]
    assert "X2BR (--refine), 43 bones" in lines[2]
    assert lines[-1].startswith(f"Open {tmp_path / 'x2br' / 'preview.png'} first")
    assert str(tmp_path / "x2br" / "bones.seg.nrrd") in lines[-1]
