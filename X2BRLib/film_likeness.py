"""Does the image look like a radiograph at all? A linear probe on the bone detector's features.

The detector was trained on films only; on a CT slice, a drawing or a photograph it still finds
"bones", often many and in a chest-like layout (a coronal CT slice shows the same bones a frontal
film does), so counts and layout cannot tell those from films. What differs is the picture
itself: a film is a projection (soft tissue graded, bones overlapping the lungs), a CT slice a
cross-section (flat soft tissue, sharp outlines). The detector's own features see that
difference: the outputs of a few of its backbone layers, each averaged over the image
(:meth:`Detector.embedding`), standardised, and weighed by a logistic regression (the "probe").
``scripts/build_film_probe.py`` fits it on simulated films (positives) against CT slices,
generated pictures and four photographs (negatives); which images, and what it gives on images
it never saw, are in the probe's card (``Resources/Models/yolo/FILM_PROBE_CARD.md``).

The probe belongs to one set of detector weights (its record names their sha256): with other
weights there is no probe and the film check records a null likeness instead of scoring.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

PROBE_NAME = "film_probe.json"


def probe_path(detector) -> Path:
    """Where the probe of ``detector``'s weights lives: beside them."""
    return Path(detector.info["weights"]).with_name(PROBE_NAME)


@lru_cache(maxsize=8)
def _read_probe(path: str, mtime_ns: int) -> dict:
    """The parsed probe file (read once per file version: every film of a batch uses it)."""
    return json.loads(Path(path).read_text())


def load_probe(detector) -> dict | None:
    """The probe record for ``detector`` or None (no file, or made for other weights)."""
    p = probe_path(detector)
    if not p.is_file():
        return None
    rec = _read_probe(str(p), p.stat().st_mtime_ns)
    return rec if rec.get("detector_sha256") == detector.info.get("sha256") else None


def score(features: np.ndarray, probe: dict) -> float:
    """P(radiograph) of one feature vector under the probe (logistic regression on standardised features)."""
    f = (np.asarray(features, float) - np.asarray(probe["mean"])) / np.asarray(probe["std"])
    z = float(f @ np.asarray(probe["weights"]) + probe["bias"])
    return float(1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))))


def likeness(detector, net_image: np.ndarray) -> dict:
    """{"film_likeness": P(radiograph), "threshold"} for one network image; both None when the
    detector's weights have no probe."""
    probe = load_probe(detector)
    if probe is None:
        return {"film_likeness": None, "threshold": None}
    p = score(detector.embedding(net_image, probe["layers"]), probe)
    return {"film_likeness": round(p, 4), "threshold": probe["threshold"]}


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> tuple:
    """L2-regularised logistic regression on standardised features -> (mean, std, w, b), the two
    classes weighing the same. x: (n, d); y: (n,) in {0, 1}."""
    from scipy.optimize import minimize

    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    weights = np.where(y == 1, 0.5 / max(1, y.sum()), 0.5 / max(1, (1 - y).sum()))

    def loss(theta):
        w, b = theta[:-1], theta[-1]
        m = z @ w + b
        p = 1 / (1 + np.exp(-np.clip(m, -60, 60)))
        nll = np.sum(weights * (np.logaddexp(0, m) - y * m))
        g = z.T @ (weights * (p - y))
        reg = 0.5 * l2 * (w @ w) / len(y)
        return nll + reg, np.concatenate([g + l2 * w / len(y), [np.sum(weights * (p - y))]])

    res = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B")
    return mean, std, res.x[:-1], float(res.x[-1])
