"""Benchmark: how well the bones found on both films of a PA + lateral pair estimate the
between-exposure offset (and scale) of the lateral (issue 15; ``X2BRLib.pair.vertical_scale`` and
``lateral_placement``, what ``x2br reconstruct --lateral-offset auto`` applies).

    .venv/bin/python bench/bench_pair_offset.py --data DATASET --prepared PREPARED_DIR [--offsets 10,-10,20,-20]
        [--magnifications 0.96,1.04] [--max-cases N] [--threads 2]

DATASET: a test set built with ``x2br build-dataset --lateral`` (its test films carry no
between-exposure error) from the prepared CTs in PREPARED_DIR (``<patient>.npz``). Per case the
lateral is rendered again from the case's virtual patient (its anatomy and lateral film drawn
again from the case's params) with known errors (``dataset.lateral.rendering_geometry``): the
patient sat D mm higher (``--offsets``), or the isocentre's magnification was M x the assumed one
(``--magnifications``); the shipped detector runs on the PA film and on each lateral, and the
estimate (``lateral_placement(vertical_scale(...), "auto")``) is compared with the truth. Two kinds:

* ``render``: the film rendered with the error, the network given the assumed geometry (a patient
  who moved);
* ``geometry``: the film as built, its geometry moved by D as ``x2br evaluate --lateral-offset-mm D``
  does (what ``evaluate --lateral-offset auto`` corrects).

Prints one line per case and condition, then per condition: the estimate's error (mean, mean |.|,
max |.|, per patient), the ratio (mean, sd) and how often 'auto' applied it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _floats(text: str) -> list:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    import torch

    from X2BRLib import pair
    from X2BRLib.dataset.builder import warped_volumes
    from X2BRLib.dataset.film import FilmParams, develop
    from X2BRLib.dataset.lateral import rendering_geometry
    from X2BRLib.dataset.virtual import AnatomySource, VariationParams
    from X2BRLib.detect.detector import Detector
    from X2BRLib.drr import render_drr
    from X2BRLib.geometry import ProjectionGeometry
    from X2BRLib.io.ct import LabelledCT

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--offsets", type=_floats, default=[10.0, -10.0, 20.0, -20.0])
    ap.add_argument("--magnifications", type=_floats, default=[0.96, 1.04])
    ap.add_argument("--max-cases", type=int)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    manifest = json.loads((root / "dataset.json").read_text())
    voxel = float(manifest["gt_voxel_mm"])
    files = manifest["splits"][args.split][:args.max_cases]
    detector = Detector(None, device="cpu")
    conditions = [("render", 0.0, 1.0)] + [("render", d, 1.0) for d in args.offsets] + \
        [("render", 0.0, m) for m in args.magnifications] + [("geometry", d, 1.0) for d in args.offsets]
    rows = []
    t0 = time.perf_counter()
    cases = []
    for name in files:
        with np.load(root / args.split / name) as z:
            cases.append((str(z["patient"]), name))
    source, source_name = None, None
    for patient, name in sorted(cases):  # one patient's CT loaded at a time
        with np.load(root / args.split / name) as z:
            image = z["image"].astype(np.float32)
            geom = ProjectionGeometry.from_json(str(z["geometry"]))
            image_lat = z["image_lat"].astype(np.float32)
            assumed = ProjectionGeometry.from_json(str(z["geometry_lat"]))
            params = json.loads(str(z["params"]))
        if source_name != patient:
            source = AnatomySource(LabelledCT.load_npz(Path(args.prepared) / f"{patient}.npz"), "cpu")
            source_name = patient
        anatomy = VariationParams(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in params["anatomy"].items()})
        film_lat = FilmParams(**params["film_lat"])
        _, mu, ijk = warped_volumes(source, geom, anatomy, voxel)
        dets_pa = detector.detect(image, conf=pair.SCALE_CONFIDENCE)
        for kind, d, m in conditions:
            if kind == "render" and (d, m) != (0.0, 1.0):
                real = rendering_geometry(assumed, d, m)
                L = render_drr(mu, ijk, real, step_mm=1.0, device="cpu", clip_to_detector=False)[0].cpu().numpy()
                film, given = develop(L, film_lat), assumed
            else:  # the film as built; evaluate's --lateral-offset-mm D gives the network this geometry
                film, given = image_lat, rendering_geometry(assumed, offset_si_mm=-d)
            dets = detector.detect(film, conf=pair.SCALE_CONFIDENCE)
            scale = pair.vertical_scale(dets_pa, geom, dets, given)
            place = pair.lateral_placement(scale, "auto")
            raw = None if not scale["checked"] else -scale["offset_mm"]
            row = {"case": name, "patient": patient, "kind": kind, "offset_mm": d, "magnification": m,
                   "view": assumed.view, "n_bones": scale["n_bones"], "n_fit": scale.get("n_fit"),
                   "residual_mm": scale.get("residual_mm"), "ratio": scale["ratio"], "estimate_mm": raw,
                   "estimate_scaled_mm": None if raw is None else raw / scale["ratio"],
                   "applied": place["applied"], "applied_mm": place["offset_si_mm"], "why": place["why"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"# {len(cases)} cases, {time.perf_counter() - t0:.0f} s")
    summarise(rows)
    return 0


def _stats(err) -> str:
    e = np.asarray(err, float)
    return f"mean {e.mean():+.2f}  mean|.| {np.abs(e).mean():.2f}  max|.| {np.abs(e).max():.2f} mm"


def summarise(rows: list) -> None:
    """Per condition: the error of the raw estimate (-offset_mm), of the scaled one (-offset/ratio),
    of what 'auto' applies (0 where it kept the assumption), per patient; the ratio."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["kind"], r["offset_mm"], r["magnification"])].append(r)
    for (kind, d, m), rs in sorted(groups.items()):
        ok = [r for r in rs if r["estimate_mm"] is not None]
        print(f"\n== {kind}: offset {d:+.0f} mm, magnification {m:.2f}: {len(rs)} cases, fit on {len(ok)}, "
              f"auto applied on {sum(r['applied'] for r in rs)}")
        if not ok:
            continue
        print(f"estimate -offset_mm - truth:        {_stats([r['estimate_mm'] - d for r in ok])}")
        print(f"estimate -offset_mm/ratio - truth:  {_stats([r['estimate_scaled_mm'] - d for r in ok])}")
        print(f"applied (auto) - truth:             {_stats([r['applied_mm'] - d for r in rs])}")
        print(f"uncorrected error (truth):          {abs(d):.2f} mm")
        ratio = np.array([r["ratio"] for r in ok])
        print(f"ratio: mean {ratio.mean():.4f} sd {ratio.std():.4f} (truth {m:.2f}); ratio - truth "
              f"mean|.| {np.abs(ratio - m).mean():.4f} max|.| {np.abs(ratio - m).max():.4f}; "
              f"bones on both {np.mean([r['n_bones'] for r in ok]):.1f}, kept {np.mean([r['n_fit'] for r in ok]):.1f}, "
              f"median residual {np.mean([r['residual_mm'] for r in ok]):.2f} mm")
        for p in sorted({r["patient"] for r in ok}):
            e = [r["estimate_mm"] - d for r in ok if r["patient"] == p]
            print(f"  {p:20s} n {len(e)}  {_stats(e)}")


if __name__ == "__main__":
    raise SystemExit(main())
