"""Shared fixtures. Tests run headless on CPU; data is generated or bundled."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def sample_ct_paths() -> dict:
    """The bundled 3 mm sample chest CT (TotalSegmentator v2 ids, catalog bones only)."""
    from X2BRLib.cli import SAMPLE_CT

    return {k: str(v) for k, v in SAMPLE_CT.items()}


@pytest.fixture(scope="session")
def sample_source(sample_ct_paths):
    """An AnatomySource of the sample CT, built once for the session."""
    from X2BRLib.dataset.builder import load_source

    return load_source(sample_ct_paths)
