"""What the Slicer module installs into 3D Slicer's Python (X2BRLib.slicer_deps), decided without
Slicer: Slicer's own packages are never installed or replaced, ultralytics comes with X2BR's own
requirements (the detector runs on every film), an old torch is reported with what to do.

The ``installed`` maps below are the versions a Slicer install holds (Slicer's SuperBuild pins
pydicom 2.4.3 and Pillow 10.1.0, for instance); the plan is a pure function of them.
"""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from X2BRLib import slicer_deps as sd

REPO = Path(__file__).resolve().parents[1]
SLICER_LIKE = {"numpy": "1.26.4", "scipy": "1.13.1", "SimpleITK": "2.4.0", "pydicom": "2.4.3", "Pillow": "10.1.0",
               "vtk": "9.3.20240522", "requests": "2.32.3", "urllib3": "2.2.2", "packaging": "24.1", "pip": "24.2",
               "torch": "2.5.1+cu121", "torchvision": "0.20.1+cu121"}


def _names(requirements) -> set[str]:
    return {sd.canonical(Requirement(r).name) for r in requirements}


def test_slicers_own_packages_are_never_installed_nor_replaced():
    plan = sd.plan(refine=True, installed=SLICER_LIKE)
    assert plan.problems == () and not plan.install_torch
    assert not _names(plan.install) & {sd.canonical(n) for n in sd.NEVER_INSTALL}
    assert "pydicom" not in _names(plan.install)  # Slicer's pydicom 2.4 is kept (the reader supports it)
    skip = {sd.canonical(n) for n in plan.skip}  # pip_ensure's skip_packages: not even as a dependency
    assert {"numpy", "vtk", "simpleitk", "pydicom", "requests", "pillow", "torch", "torchvision"} <= skip
    assert {"pydicom==2.4.3", "numpy==1.26.4", "SimpleITK==2.4.0", "torch==2.5.1+cu121"} <= set(plan.pins)
    assert all(sd.canonical(p.split("==")[0]) in skip for p in plan.pins)


def test_ultralytics_is_installed_for_every_reconstruction_since_the_film_check_needs_the_detector():
    without = sd.plan(refine=False, installed=SLICER_LIKE)
    assert "ultralytics" in _names(without.install)
    assert _names(without.install) == _names(sd.CORE_REQUIREMENTS)
    assert _names(sd.plan(refine=True, installed=SLICER_LIKE).install) == _names(without.install)
    have = dict(SLICER_LIKE, ultralytics="8.4.190", timm="1.0.31", matplotlib="3.9.0")
    assert _names(sd.plan(refine=True, installed=have).install) == {"scikit-image", "slicerio", "tqdm"}
    assert "ultralytics" in _names(sd.plan(refine=False, installed=dict(have, ultralytics="8.3.0")).install)


def test_an_old_torch_is_reported_with_what_to_do_and_never_replaced():
    old = dict(SLICER_LIKE, torch="2.1.0+cu118", torchvision="0.16.0+cu118")
    plan = sd.plan(installed=old)
    assert not plan.install_torch and len(plan.problems) == 1
    message = plan.problems[0]
    assert "torch 2.1.0+cu118 (X2BR needs 2.4 or newer)" in message and "torchvision 0.16.0+cu118" in message
    assert "uninstallTorch()" in message and "restart Slicer" in message
    assert "torch" not in _names(plan.install) and not plan.ready
    assert sd.torch_problem(dict(SLICER_LIKE, torch="2.4.0+cpu", torchvision="0.19.0")) is None  # 2.4.0 is 2.4
    absent = sd.plan(installed={k: v for k, v in SLICER_LIKE.items() if not k.startswith("torch")})
    assert absent.install_torch and absent.problems == ()  # then the PyTorch extension installs a current one


def test_slicers_own_packages_too_old_are_reported_not_upgraded():
    plan = sd.plan(installed=dict(SLICER_LIKE, pydicom="2.2.2"))
    assert len(plan.problems) == 1 and "pydicom>=2.4" in plan.problems[0] and "pydicom 2.2.2" in plan.problems[0]
    assert "pydicom" not in _names(plan.install) and "pydicom==2.2.2" in plan.pins
    plan = sd.plan(installed={k: v for k, v in SLICER_LIKE.items() if k != "scipy"})
    assert "no scipy" in plan.problems[0] and "scipy" not in _names(plan.install)


def test_this_environment_needs_nothing_installed():
    """The venv the tests run in has requirements.txt installed: the plan must find everything."""
    plan = sd.plan(refine=True)
    assert plan.problems == () and plan.install == () and plan.ready, plan
    assert any(p.startswith("numpy==") for p in plan.pins)


def test_the_packages_the_module_installs_agree_with_the_pins():
    """Each range the module installs into Slicer holds the version requirements.txt pins (the tested one)."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            r = Requirement(line)
            pins[sd.canonical(r.name)] = r
    for spec in sd.CORE_REQUIREMENTS + sd.REFINE_REQUIREMENTS + sd.SLICER_OWN_NEEDED:
        r = Requirement(spec)
        pinned = pins.get(sd.canonical(r.name))
        exact = [s.version for s in (pinned.specifier if pinned else []) if s.operator == "=="]
        version = exact[0] if exact else importlib.metadata.version(r.name)
        assert r.specifier.contains(version, prereleases=True), f"{spec}: the tested version {version} is outside"
    assert sd.TORCH_MINIMUM in (REPO / "pyproject.toml").read_text()  # "torch>=2.4", one minimum


@pytest.mark.skipif(not os.environ.get("X2BR_PYDICOM2"),
                    reason="set X2BR_PYDICOM2 to a folder holding pydicom 2.x (pip install --target DIR pydicom==2.4.4)")
def test_the_dicom_reader_works_with_the_pydicom_slicer_ships():
    """Slicer ships pydicom 2.x and X2BR never replaces it: the reader must give what it gives with pydicom 3."""
    from X2BRLib.io.radiograph import read_radiograph

    film = REPO / "Resources/SampleData/sample_radiograph.dcm"
    code = ("import hashlib, pydicom, sys; from X2BRLib.io.radiograph import read_radiograph\n"
            "assert pydicom.__version__.startswith('2.'), pydicom.__version__\n"
            "r = read_radiograph(sys.argv[1])\n"
            "print(r.geometry.to_json(), hashlib.sha256(r.image.tobytes()).hexdigest())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.environ["X2BR_PYDICOM2"], str(REPO)]))
    run = subprocess.run([sys.executable, "-c", code, str(film)], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    here = read_radiograph(film)
    import hashlib

    assert run.stdout.split()[-1] == hashlib.sha256(here.image.tobytes()).hexdigest()
    assert run.stdout.rsplit(" ", 1)[0].strip() == here.geometry.to_json()
