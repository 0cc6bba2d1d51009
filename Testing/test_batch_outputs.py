"""Batch commands: every input gets its own, stable output folder (two films called film.dcm
in different folders never share one), and `x2br detect` leaves the user's home alone and
prints exactly one JSON line (ultralytics' settings and banner kept out of both)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from X2BRLib.errors import InputError
from X2BRLib.io.batch import input_stem, output_folders

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "Resources" / "SampleData" / "sample_radiograph.dcm"
SHIPPED_DETECTOR = REPO / "Resources" / "Models" / "yolo" / "model.pt"


def same_named_films(root: Path) -> list[Path]:
    """The sample film as a/film.dcm, b/film.dcm, x.v1.dcm and x.v2.dcm."""
    files = [root / "a" / "film.dcm", root / "b" / "film.dcm", root / "x.v1.dcm", root / "x.v2.dcm"]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE, f)
    return files


def test_same_named_inputs_get_distinct_stable_folders(tmp_path):
    files = same_named_films(tmp_path)
    out = tmp_path / "out"
    folders = output_folders(files, out)
    tag = [hashlib.sha1(os.fsencode(f.resolve())).hexdigest()[:8] for f in files]
    assert [p.name for p in folders] == [f"film-{tag[0]}", f"film-{tag[1]}", "x.v1", "x.v2"]
    assert all(p.parent == out for p in folders)
    assert output_folders(files, out) == folders  # the same inputs always land in the same folders
    assert output_folders([files[2], files[0]], out) == [out / "x.v1", out / "film"]  # no clash: plain stems
    assert output_folders([files[0]], out) == [out]  # one input: the output folder itself


def test_stems_compare_without_case_and_keep_inner_dots(tmp_path):
    assert input_stem("a/scan.v2.nii.gz") == "scan.v2" and input_stem("b/IMG0001") == "IMG0001"
    assert input_stem("c/Film.DCM") == "Film"
    names = [p.name for p in output_folders([tmp_path / "Film.DCM", tmp_path / "sub" / "film.png"], tmp_path)]
    assert len(set(n.casefold() for n in names)) == 2 and all(n.startswith(("Film-", "film-")) for n in names)


def test_the_same_file_twice_is_refused_naming_it(tmp_path):
    f = same_named_films(tmp_path)[0]
    with pytest.raises(InputError, match="film.dcm: given twice"):
        output_folders([f, f.parent / ".." / "a" / "film.dcm"], tmp_path / "out")


def test_reconstruct_writes_two_films_of_one_name_to_two_folders(tmp_path, capsys):
    from X2BRLib.cli import main

    a, b = same_named_films(tmp_path)[:2]
    out = tmp_path / "out"
    rc = main(["reconstruct", str(a), str(b), "-o", str(out), "--device", "cpu", "--quality", "fast",
               "--no-meshes", "--no-progress"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and not line["failed"]
    written = {r["input"]: Path(r["output"]) for r in line["reconstructed"]}
    assert written[str(a)] != written[str(b)] and set(written.values()) == set(output_folders([a, b], out))
    for film, folder in written.items():
        assert json.loads((folder / "report.json").read_text())["input"] == film


@pytest.mark.skipif(not SHIPPED_DETECTOR.is_file(), reason="shipped detector weights not built")
def test_detect_batch_leaves_home_untouched_and_prints_one_json_line(tmp_path):
    """Run as a user would (a new process, HOME an empty folder): ultralytics must not create
    ~/.config/Ultralytics, and stdout is exactly the command's one JSON line.
    MPLCONFIGDIR is set apart: matplotlib's font cache (for detections.png) is not ultralytics'."""
    files = same_named_films(tmp_path / "in")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("YOLO_CONFIG_DIR", "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), MPLCONFIGDIR=str(tmp_path / "mpl"), PYTHONPATH=str(REPO))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "X2BRLib.cli", "detect", *map(str, files), "-o", str(out),
                           "--device", "cpu"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(home.iterdir()) == []
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout[:2000]
    line = json.loads(lines[0])
    assert not line["failed"] and len(line["detected"]) == 4
    folders = [Path(r["output"]) for r in line["detected"]]
    assert folders == output_folders(files, out)
    for f, folder in zip(files, folders):
        assert json.loads((folder / "detections.json").read_text())["input"] == str(f)
