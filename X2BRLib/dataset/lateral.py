"""The lateral film of a dataset case (issue 15): a second exposure of the same virtual patient.

The lateral film is rendered from the PA case's warped volume (same patient, same
reconstruction box, same isocentre) with an independent draw of the film model
(:func:`film.sample_film`): view LL with probability :data:`LL_PROBABILITY`, else RL;
source-to-detector 1500-2000 mm, isocentre-to-detector 140-200 mm (``film.FILM_RANGES``).

Two exposures of a patient who turned do not share one isocentre exactly. A user's pair
is read assuming they do (central rays meet at one isocentre, same height): that
*assumed* geometry is what the network is given (``geometry_lat``). Train and val films
are rendered with a between-exposure error the network is never told
(:func:`sample_exposure_error`): the patient sat ``offset_si_mm`` higher (+S) than assumed,
and the isocentre's true magnification is ``magnification`` times the assumed one (its
distance to the detector was mis-assumed). :func:`rendering_geometry` turns the assumed
geometry and the error into the geometry the film was really taken with; the film and its
bone boxes come from that one. Test films carry no error (evaluation adds a known one).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..geometry import ProjectionGeometry
from .film import FilmParams, default_film, sample_film

LL_PROBABILITY = 0.8
ERROR_RANGES = {
    "offset_si_sd_mm": 8.0,       # vertical offset ~ N(0, sd), clipped to +- clip
    "offset_si_clip_mm": 20.0,
    "magnification": (0.96, 1.04),  # true / assumed magnification at the isocentre, uniform
}
NO_ERROR = {"offset_si_mm": 0.0, "magnification": 1.0}


def sample_lateral(rng: np.random.Generator, with_error: bool, clean: bool = False) -> tuple[FilmParams, dict]:
    """(film, error) of one case's lateral exposure. rng: the case's lateral stream (its own,
    so the PA draws stay what they are without a lateral). clean: a clean default LL film,
    no error. error: ``{"offset_si_mm": dz, "magnification": m}`` (:data:`NO_ERROR` unless with_error)."""
    if clean:
        return default_film("LL"), dict(NO_ERROR)
    view = "LL" if rng.uniform() < LL_PROBABILITY else "RL"
    film = sample_film(rng, view)
    if not with_error:
        return film, dict(NO_ERROR)
    r = ERROR_RANGES
    dz = float(np.clip(rng.normal(0.0, r["offset_si_sd_mm"]), -r["offset_si_clip_mm"], r["offset_si_clip_mm"]))
    return film, {"offset_si_mm": dz, "magnification": float(rng.uniform(*r["magnification"]))}


def rendering_geometry(assumed: ProjectionGeometry, offset_si_mm: float = 0.0,
                       magnification: float = 1.0) -> ProjectionGeometry:
    """The geometry a film was really taken with, given the one assumed for it.

    offset_si_mm: the patient sat this much higher (+S, LPS z) than assumed: a point p shows
    where the assumed geometry projects p + offset. magnification: true / assumed
    magnification at the isocentre: source and detector slide together along the beam
    (SDD kept) so that the source-to-isocentre distance is ``sod / magnification``.
    Same detector pixels, isocentre and box; the identity for (0, 1).
    """
    if not magnification > 0:
        raise ValueError(f"magnification must be positive, got {magnification}")
    shift = (assumed.sod_mm - assumed.sod_mm / magnification) * assumed.normal
    shift = shift - np.array([0.0, 0.0, float(offset_si_mm)])
    return replace(assumed, source_lps_mm=assumed.source + shift,
                   detector_center_lps_mm=assumed.detector + shift)
