"""``x2br drr``: a chest film of a labelled CT through the same path as the dataset
builder (virtual patient with no variation, clean default film)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..drr import render_drr
from ..errors import InputError
from ..io.atomic import atomic_write
from .builder import load_source, warped_volumes
from .film import default_film, develop
from .virtual import identity_variation


def render_ct_preview(ct_paths: dict, output, view: str = "PA", size: int = 512, voxel_mm: float = 1.5,
                      overwrite: bool = False, device: str = "cpu") -> dict:
    """Render and write a PNG (8 bit); returns a JSON-able summary with the geometry and timings."""
    from PIL import Image

    out = Path(output)
    if out.exists() and not overwrite:
        raise InputError("exists; pass --overwrite to replace it", out)
    if out.suffix.lower() != ".png":
        raise InputError("output must be a .png file", out)
    t0 = time.perf_counter()
    src = load_source(ct_paths, device)
    film = default_film(view)
    geom = film.geometry((size, size))
    t1 = time.perf_counter()
    _, mu, ijk_to_lps = warped_volumes(src, geom, identity_variation(), voxel_mm)
    t2 = time.perf_counter()
    L = render_drr(mu, ijk_to_lps, geom, step_mm=min(1.0, voxel_mm), device=device,
                   clip_to_detector=False)[0].cpu().numpy()
    t3 = time.perf_counter()
    image = develop(L, film)
    png = Image.fromarray(np.round(image * 255).astype(np.uint8))
    atomic_write(out, lambda tmp: png.save(tmp, format="PNG"), overwrite=True)
    return {"output": str(out.resolve()), "geometry": geom.to_dict(),
            "timings_s": {"load": round(t1 - t0, 3), "warp": round(t2 - t1, 3), "drr": round(t3 - t2, 3)}}
