"""A case's random streams. Case ``i`` of split ``s`` draws its anatomy and film from
``[seed, SPLIT_ID[s], i]``; every optional effect draws from its own stream ``[seed, SPLIT_ID[s], i,
k]``, so turning an effect on or off leaves every other draw of the case as it was."""
from __future__ import annotations

import numpy as np

BLEND, LATERAL, FRAMING, SCOLIOSIS = 1, 2, 3, 4  # the optional effects' streams


def case_stream(seed: int, split_id: int, index: int, stream: int | None = None) -> np.random.Generator:
    return np.random.default_rng([seed, split_id, index] + ([] if stream is None else [stream]))


def draw_optional(seed: int, split_id: int, index: int, stream: int, probability: float, sample):
    """``sample(rng)`` for a share ``probability`` of cases (from the case's own ``stream``), else None."""
    if probability <= 0:
        return None
    rng = case_stream(seed, split_id, index, stream)
    return sample(rng) if rng.uniform() < probability else None
