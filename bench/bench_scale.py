"""Scale estimate against the truth: films of virtual patients with known spacing.

Simulated films: test-split virtual patients of the bundled sample CT (seeds as the dataset
builder's test split: ``[seed, 2, i]``, half with held-out size, rotation and curvature), each
rendered and developed as the dataset builder does (``film.sample_film``: PA or AP, varied
distances, noise, processing), saved as a 16-bit PNG (no spacing) and read back as a user's
file would be: the estimate (``X2BRLib.filmcheck.check_and_scale``) against the film's true
detector spacing (430 mm / 256 px). Twice: view unknown (PNG, PA assumed, default distances)
and view given (``read_radiograph(view=...)``, distances still default). Plus the bundled
``Resources/SampleData/sample_radiograph.dcm`` with its spacing removed, and the plausibility
check: the true spacing kept (never rejected, we hope) and a wrong file spacing (x 0.25, x 3)
replaced by the estimate.

    .venv/bin/python bench/bench_scale.py [--cases 24] [--seed 0] [--device cpu]

Prints one row per film and a summary (mean / max absolute relative error).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def simulated_film(src, seed: int, index: int, voxel_mm: float = 2.0):
    """(image (256, 256) in [0, 1], true ProjectionGeometry, params) of test case ``index``."""
    from X2BRLib.dataset.builder import case_rng, warped_volumes
    from X2BRLib.dataset.film import develop, sample_film
    from X2BRLib.dataset.virtual import sample_variation
    from X2BRLib.drr import render_drr

    rng = case_rng(seed, "test", index)
    held_out = rng.uniform() < 0.5  # as builder.make_case draws it for the test split
    params = sample_variation(rng, held_out)
    film = sample_film(rng)
    geom = film.geometry((256, 256))
    _, mu, ijk_to_lps = warped_volumes(src, geom, params, voxel_mm)
    L = render_drr(mu, ijk_to_lps, geom, step_mm=1.0, device=src.device, clip_to_detector=False)[0].cpu().numpy()
    return develop(L, film), geom, params


def with_file_spacing(rad, spacing_mm):
    """The radiograph as if its file said ``spacing_mm`` (source 'file')."""
    meta = dict(rad.meta, spacing_source="file", spacing_mm=[spacing_mm, spacing_mm])
    return replace(rad, geometry=replace(rad.geometry, spacing_mm=(spacing_mm, spacing_mm)), meta=meta)


def main(argv=None) -> int:
    from X2BRLib.cli import SAMPLE_CT, SAMPLE_DIR
    from X2BRLib.dataset.builder import load_source
    from X2BRLib.detect.detector import Detector
    from X2BRLib.filmcheck import check_and_scale
    from X2BRLib.io.radiograph import read_radiograph, write_radiograph_png

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    det = Detector(device=args.device)
    src = load_source(dict(SAMPLE_CT))
    rows = []
    print("| film | view | scale | true mm | est. PA assumed | err | est. view given | err | +/- | bones "
          "| file x1 kept | file x0.25 -> | file x3 -> | check |")
    print("|" + "---|" * 14)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.cases):
            image, geom, params = simulated_film(src, args.seed, i)
            png = write_radiograph_png(Path(tmp) / f"film_{i}.png", image)
            truth = geom.spacing_mm[0]
            r_pa, _ = check_and_scale(read_radiograph(png, default_spacing_mm=None), det)
            r_v, _ = check_and_scale(read_radiograph(png, default_spacing_mm=None, view=geom.view), det)
            kept, _ = check_and_scale(with_file_spacing(r_v, truth), det)
            small, _ = check_and_scale(with_file_spacing(r_v, truth * 0.25), det)
            big, _ = check_and_scale(with_file_spacing(r_v, truth * 3.0), det)
            s_pa, s_v = r_pa.meta["scale"], r_v.meta["scale"]
            e_pa = s_pa["spacing_mm"][0] / truth - 1 if s_pa["source"] == "estimate" else float("nan")
            e_v = s_v["spacing_mm"][0] / truth - 1 if s_v["source"] == "estimate" else float("nan")
            fc = r_v.meta["film_check"]
            row = dict(pa=e_pa, v=e_v, kept=kept.meta["scale"]["source"] == "file",
                       small=small.meta["scale"]["source"] == "estimate", big=big.meta["scale"]["source"] == "estimate",
                       refused=bool(fc["refused"]), warned=bool(fc["warnings"]))
            rows.append(row)
            print(f"| test {i} | {geom.view} | {params.scale:.3f} | {truth:.4f} | {s_pa['spacing_mm'][0]:.4f} "
                  f"| {100 * e_pa:+.1f} % | {s_v['spacing_mm'][0]:.4f} | {100 * e_v:+.1f} % "
                  f"| {100 * (s_v['uncertainty_rel'] or 0):.1f} % | {(s_v['estimate'] or {}).get('n_bones', 0)} "
                  f"| {'yes' if row['kept'] else 'NO'} | {'estimate' if row['small'] else 'kept'} "
                  f"| {'estimate' if row['big'] else 'kept'} | {'refused' if row['refused'] else 'warned' if row['warned'] else 'ok'} |",
                  flush=True)
    # the bundled sample film, its spacing removed
    rad = read_radiograph(SAMPLE_DIR / "sample_radiograph.dcm")
    truth = rad.geometry.spacing_mm[0]
    stripped = replace(rad, geometry=replace(rad.geometry, spacing_mm=(0.143, 0.143)),
                       meta=dict(rad.meta, spacing_source="none"))
    r_s, _ = check_and_scale(stripped, det)
    e_s = r_s.meta["scale"]["spacing_mm"][0] / truth - 1
    print(f"\nsample_radiograph.dcm ({rad.meta['view']}): true {truth:.4f} mm, estimated "
          f"{r_s.meta['scale']['spacing_mm'][0]:.4f} mm ({100 * e_s:+.1f} %), {r_s.meta['scale']['status']}")
    for key, name in (("pa", "view unknown (PA assumed)"), ("v", "view given")):
        e = np.abs([r[key] for r in rows])
        ok = e[np.isfinite(e)]
        print(f"simulated films, {name}: {len(ok)}/{len(e)} estimated; |relative error| mean "
              f"{100 * ok.mean():.1f} %, max {100 * ok.max():.1f} %, within 10 %: {(ok <= 0.10).sum()}/{len(ok)}")
    print(f"plausibility check: true file spacing kept {sum(r['kept'] for r in rows)}/{len(rows)}; "
          f"x0.25 replaced {sum(r['small'] for r in rows)}/{len(rows)}; x3 replaced {sum(r['big'] for r in rows)}/{len(rows)}")
    print(f"film check on simulated films: refused {sum(r['refused'] for r in rows)}/{len(rows)}, "
          f"warned {sum(r['warned'] for r in rows)}/{len(rows)}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
