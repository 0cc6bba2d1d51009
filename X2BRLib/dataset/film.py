"""From DRR line integrals to a radiograph that looks processed: geometry of the
film, detector noise and the post-processing a clinical system applies.

Detector: photons ``I = Poisson(I0 * exp(-L)) + N(0, sigma_e)``, then the log
transform ``-log(I / I0)``. Post-processing (each documented range in
:data:`FILM_RANGES`): robust normalisation, a gamma curve, CLAHE (contrast-limited
adaptive histogram equalisation, p = 0.5), unsharp masking (p = 0.5), then the
same robust normalisation as :func:`X2BRLib.imaging.robust_normalise` that the
radiograph reader applies to real films.

Clinical film model (``clinical``, :mod:`.clinical`; drawn for a share
``CLINICAL_PROBABILITY`` of sampled films): body outside the CT's crop, arms,
breast shadows, ECG leads and tubes, heel effect on the line integrals; vendor
multi-scale processing, collimation and burnt-in markers on the image.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..geometry import LATERAL_VIEWS, ProjectionGeometry
from ..imaging import robust_normalise

FILM_RANGES = {
    "pa_probability": 0.7,
    "sdd_mm": {"PA": (1500.0, 2000.0), "AP": (900.0, 1200.0), "LL": (1500.0, 2000.0), "RL": (1500.0, 2000.0)},
    "object_to_detector_mm": (90.0, 160.0),
    "lateral_object_to_detector_mm": (140.0, 200.0),  # LL, RL: isocentre about half a chest width away
    "photons": (2e3, 3e4),        # I0 per pixel, quantum noise
    "electronic_noise": (0.0, 3.0),
    "gamma": (0.7, 1.4),
    "clahe_clip": (0.005, 0.02),
    "unsharp_amount": (0.3, 1.2),
    "unsharp_sigma_px": (1.0, 4.0),
}


@dataclass
class FilmParams:
    view: str
    sdd_mm: float
    object_to_detector_mm: float
    photons: float
    electronic_noise: float
    gamma: float
    clahe_clip: float | None
    unsharp_amount: float | None
    unsharp_sigma_px: float
    noise_seed: int
    clinical: dict | None = None  # clinical.ClinicalParams.to_dict(); None: a plain DRR film
    framing: dict | None = None  # framing.py: a magnified, off-centre field; None: the usual field

    def to_dict(self) -> dict:
        return asdict(self)

    def geometry(self, size_px) -> ProjectionGeometry:
        from .framing import framed

        return framed(ProjectionGeometry.chest(self.view, size_px=size_px, sdd_mm=self.sdd_mm,
                                               object_to_detector_mm=self.object_to_detector_mm), self.framing)


def sample_film(rng: np.random.Generator, view: str | None = None, gaps: bool = True) -> FilmParams:
    """A film drawn from FILM_RANGES, then the clinical model (``_sample_clinical``); gaps: with
    the clinical model's ``GAP_EFFECTS`` (dataset version 6; their own stream, so without them a
    film is what version 5 drew)."""
    film = _sample_plain(rng, view)
    film.clinical = _sample_clinical(film, gaps)
    return film


def _sample_plain(rng: np.random.Generator, view: str | None = None) -> FilmParams:
    r = FILM_RANGES
    if view is None:
        view = "PA" if rng.uniform() < r["pa_probability"] else "AP"
    return FilmParams(
        view=view,
        sdd_mm=float(rng.uniform(*r["sdd_mm"][view])),
        object_to_detector_mm=float(rng.uniform(*r["lateral_object_to_detector_mm" if view in LATERAL_VIEWS
                                                     else "object_to_detector_mm"])),
        photons=float(np.exp(rng.uniform(*np.log(r["photons"])))),
        electronic_noise=float(rng.uniform(*r["electronic_noise"])),
        gamma=float(rng.uniform(*r["gamma"])),
        clahe_clip=float(rng.uniform(*r["clahe_clip"])) if rng.uniform() < 0.5 else None,
        unsharp_amount=float(rng.uniform(*r["unsharp_amount"])) if rng.uniform() < 0.5 else None,
        unsharp_sigma_px=float(rng.uniform(*r["unsharp_sigma_px"])),
        noise_seed=int(rng.integers(2**31)),
    )


def _sample_clinical(film: FilmParams, gaps: bool = True) -> dict | None:
    """The clinical effects, from a stream of the film's own noise seed (the case's other draws
    stay what they were)."""
    from .clinical import CLINICAL_PROBABILITY, sample_clinical

    rng = np.random.default_rng([film.noise_seed, 1])
    return sample_clinical(rng, film.view, gaps).to_dict() if rng.uniform() < CLINICAL_PROBABILITY else None


def default_film(view: str = "PA") -> FilmParams:
    """A clean film: default distances, high dose, no post-processing."""
    from ..geometry import DEFAULT_LATERAL_OBJECT_TO_DETECTOR_MM, DEFAULT_OBJECT_TO_DETECTOR_MM, DEFAULT_SDD_MM

    odd = DEFAULT_LATERAL_OBJECT_TO_DETECTOR_MM if view in LATERAL_VIEWS else DEFAULT_OBJECT_TO_DETECTOR_MM
    return FilmParams(view, DEFAULT_SDD_MM[view], odd, 1e5, 0.0, 1.0, None, None, 1.0, 0)


def develop(line_integral: np.ndarray, film: FilmParams) -> np.ndarray:
    """(H, W) line integrals (dimensionless) -> (H, W) float32 image in [0, 1], bone bright."""
    from scipy import ndimage
    from skimage import exposure

    rng = np.random.default_rng(film.noise_seed)
    L = np.asarray(line_integral, np.float64)
    clin = None
    if film.clinical:
        from . import clinical

        clin = clinical.ClinicalParams.from_dict(film.clinical)
        geom = film.geometry((L.shape[1], L.shape[0]))
        L = clinical.attenuate(L, clin, film.view, min(geom.spacing_mm) / geom.magnification)
    photons = film.photons * (clin.dose["gain"] if clin is not None and clin.dose else 1.0)
    counts = rng.poisson(photons * np.exp(-L)).astype(np.float64)
    counts += rng.normal(0.0, film.electronic_noise, L.shape)
    img = -np.log(np.maximum(counts, 0.5) / photons)
    img = robust_normalise(img)
    img = img ** film.gamma
    if film.clahe_clip is not None:
        img = exposure.equalize_adapthist(img, clip_limit=film.clahe_clip)
    if film.unsharp_amount is not None:
        blur = ndimage.gaussian_filter(img, film.unsharp_sigma_px)
        img = img + film.unsharp_amount * (img - blur)
    if clin is not None:
        img = clinical.finish(robust_normalise(img), clin, L)
        return clinical.after_normalise(robust_normalise(img), clin, L)  # flat: its look-up curve last
    return robust_normalise(img)
