"""Requirements claims: every requirement has a licence its metadata declares (listed by
scripts/list_licences.py, committed as docs/LICENCES.md), and pyproject.toml's ranges hold the
pins of requirements.txt (so `pip install .` cannot pick, say, another VTK than slicer-core's)."""
from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "list_licences.py"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(fname: str) -> dict[str, Requirement]:
    out = {}
    for line in (REPO / fname).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            r = Requirement(line)
            out[normalise(r.name)] = r
    return out


def test_the_script_lists_every_requirement_with_a_declared_licence():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {normalise(r["name"]): r for r in json.loads(proc.stdout)}
    assert len(rows) == len({normalise(d.metadata["Name"]) for d in md.distributions() if d.metadata["Name"]})
    for fname, role in (("requirements.txt", "runtime"), ("requirements-test.txt", "tests")):
        for name in requirements(fname):
            assert name in rows, f"{name} ({fname}) is not installed"
            assert rows[name]["licence"] != "UNKNOWN", f"{name}: no licence in its metadata"
            assert rows[name]["role"] == role
    thop = rows.get("ultralytics-thop")
    if thop is not None:  # ultralytics' own AGPL dependency is listed and flagged
        assert "AGPL" in thop["licence"] and "ultralytics" in thop["required_by"] and "copyleft" in thop["note"]


def test_the_committed_licence_table_covers_every_requirement():
    table = (REPO / "docs" / "LICENCES.md").read_text()
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 3 and cells[0] not in ("package", "---"):
            rows[normalise(cells[0])] = cells[2]
    for fname in ("requirements.txt", "requirements-test.txt"):
        for name in requirements(fname):
            assert rows.get(name, "UNKNOWN") != "UNKNOWN", (f"{name} ({fname}) missing from docs/LICENCES.md: "
                                                            "run scripts/list_licences.py --output docs/LICENCES.md")


def test_pyproject_ranges_hold_the_pinned_and_installed_versions():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = {normalise(r.name): r for r in map(Requirement,
                                                 tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
                                                 ["dependencies"])}
    pins = requirements("requirements.txt")
    assert set(deps) == set(pins), f"only in pyproject: {set(deps) - set(pins)}; only pinned: {set(pins) - set(deps)}"
    for name, pin in pins.items():
        exact = [s.version for s in pin.specifier if s.operator == "=="]
        for version in exact + [md.version(name)]:
            assert version in deps[name].specifier, f"{name} {version} is outside pyproject's {deps[name]}"
            assert version in pin.specifier, f"{name} {version} is outside requirements.txt's {pin}"
    assert str(deps["vtk"].specifier) == "==9.6.*"
