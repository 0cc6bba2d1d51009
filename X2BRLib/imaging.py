"""Image intensity helpers shared by the radiograph reader and the dataset builder,
so that training images and user radiographs are normalised the same way."""
from __future__ import annotations

import numpy as np

NORMALISE_PERCENTILES = (0.5, 99.5)


def robust_normalise(image: np.ndarray, percentiles=NORMALISE_PERCENTILES) -> np.ndarray:
    """(H, W) any dtype -> float32 in [0, 1]: the given percentiles map to 0 and 1, then clip.

    A constant image maps to zeros (callers that must refuse constant input check first).
    """
    img = np.asarray(image, np.float32)
    lo, hi = np.percentile(img, percentiles)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros_like(img)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
