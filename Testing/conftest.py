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


@pytest.fixture(scope="session")
def detector():
    """The shipped bone detector on the CPU, loaded once for the session."""
    from X2BRLib.detect.detector import Detector

    return Detector(device="cpu")


@pytest.fixture(scope="session")
def sample_patient():
    """The sample CT as a virtual patient on the PA box: (labels (X, Y, Z), origin, spacing (LPS mm),
    its LL film (H, W), that film's geometry)."""
    from X2BRLib.cli import SAMPLE_CT
    from X2BRLib.dataset.builder import load_source, warped_volumes
    from X2BRLib.dataset.virtual import identity_variation
    from X2BRLib.drr import line_integral_to_image, render_drr
    from X2BRLib.geometry import ProjectionGeometry

    src = load_source(SAMPLE_CT, "cpu")
    geom = ProjectionGeometry.chest("LL", size_px=(256, 256))
    labels, mu, ijk_to_lps = warped_volumes(src, geom, identity_variation(), 3.0)
    L = render_drr(mu, ijk_to_lps, geom, step_mm=1.5, device="cpu", clip_to_detector=False)[0].cpu().numpy()
    _, origin, spacing = geom.box_grid(3.0)
    return labels.cpu().numpy(), origin, spacing, line_integral_to_image(L), geom
