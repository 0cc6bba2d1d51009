"""A non-editable install works on its own: the wheel carries the weights, the template and the
sample data (X2BRLib/Resources, found by X2BRLib/shipped.py), and its `x2br` reconstructs the
bundled sample film from a folder outside the repository.

The wheel is built from a copy of the tree (so the checkout gets no build/ folder), installed
with --no-deps into a temporary folder, and run with this interpreter, whose site-packages
provide the dependencies; PYTHONPATH puts the installed package first."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_FILES = ["setup.py", "pyproject.toml", "README.md", "LICENSE"]
SHIPPED = ["Models/x2b/model.pt", "Models/x2b/model.json", "Models/x2b_v6/model.pt", "Models/yolo/model.pt", "Models/yolo/model.json",
           "Template/skeleton_template.npz", "Template/skeleton_template.json", "SampleData/sample_radiograph.dcm"]
MAX_WHEEL_MB = 30  # the weights are about 25 MB (v4, the two-view v6, the detector)


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{cmd[:4]}... exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        pytest.skip("pip is not available to this interpreter")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO / "X2BRLib", src / "X2BRLib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "Resources", src / "Resources")
    for name in BUILD_FILES:
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-q", "--wheel-dir", str(tmp / "dist"), str(src)],
         cwd=tmp)
    wheel = next((tmp / "dist").glob("x2br-*.whl"))
    site = tmp / "site"
    _run(pip + ["install", "-q", "--no-deps", "--target", str(site), str(wheel)], cwd=tmp)
    return {"wheel": wheel, "site": site, "tmp": tmp}


def test_the_wheel_carries_the_shipped_files_and_stays_small(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    missing = [f for f in SHIPPED if f"X2BRLib/Resources/{f}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert "X2BRLib/shipped.py" in names and "X2BRLib/detect/checkpoint.py" in names
    size_mb = installed["wheel"].stat().st_size / 2 ** 20
    assert size_mb < MAX_WHEEL_MB, f"wheel is {size_mb:.1f} MB"


def test_the_installed_x2br_reconstructs_the_sample_outside_the_repository(installed):
    site, work = installed["site"], installed["tmp"] / "elsewhere"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    where = _run([sys.executable, "-c", "import X2BRLib.shipped as s; print(s.RESOURCES)"], cwd=work, env=env)
    assert Path(where.stdout.strip()) == site / "X2BRLib" / "Resources"
    film = site / "X2BRLib" / "Resources" / "SampleData" / "sample_radiograph.dcm"
    x2br = site / "bin" / "x2br"  # the console script, bound to this interpreter
    cmd = [str(x2br)] if x2br.is_file() else [sys.executable, "-m", "X2BRLib.cli"]
    proc = _run(cmd + ["reconstruct", str(film), "-o", "out", "--device", "cpu", "--quality", "fast",
                       "--no-meshes", "--no-progress"], cwd=work, env=env)
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not line["failed"] and line["reconstructed"][0]["bones_found"] >= 40
    report = json.loads((work / "out" / "report.json").read_text())
    shipped_record = json.loads((site / "X2BRLib" / "Resources" / "Models" / "x2b" / "model.json").read_text())
    assert report["model"]["sha256"] == shipped_record["sha256"]
