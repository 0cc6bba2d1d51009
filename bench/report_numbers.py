"""Every accuracy, training and timing number the docs quote from a committed record, recomputed
from that record: evaluation reports (docs/training/*eval*.json), benchmark lines
(docs/training/bench_*.jsonl), training logs and dataset-build records, the detector's test report.

Usage: python bench/report_numbers.py > bench/results/report_numbers.txt
Needs only numpy and the repository (no data, no weights, no GPU; runs in a second). Each block
names its file; README.md, bench/README.md, docs/DECISIONS.md and the model cards cite this
output (bench/README.md, "Reproducing the numbers").
"""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
T = REPO / "docs" / "training"


def _load(name):
    return json.loads((T / name).read_text())


def _per_case(report, method, key):
    return np.array([c[method][key] for c in report["per_case"]], float)


def _groups(means: dict) -> dict:
    """Mean per-bone IoU of each bone group from a report's ``iou/<bone>`` means."""
    from X2BRLib.anatomy import BONES

    out = {}
    for b in BONES:
        v = means.get(f"iou/{b.name}")
        if v is not None and math.isfinite(v):
            out.setdefault(b.group, []).append(v)
    return {g: float(np.mean(v)) for g, v in out.items()}


def _paired(a, b) -> str:
    d = b - a
    return (f"mean difference {d.mean():+.4f}, standard error {d.std(ddof=1) / math.sqrt(len(d)):.4f}, "
            f"second better on {int((d > 0).sum())} of {len(d)}, worse on {int((d < 0).sum())}")


def accuracy() -> None:
    keys = ("iou_all_bone", "iou_mean_per_bone", "chamfer_l1_unit", "chamfer_l1_mm", "hd95_mm")
    print("## X2B held-out test split: mean +- std (x2b_v{2,3,4}_eval_test*.json)")
    reports = {"v4": _load("x2b_v4_eval_test.json"), "v3": _load("x2b_v3_eval_test.json"),
               "v2": _load("x2b_v2_eval_test_baseline_v2.json")}
    for tag, r in reports.items():
        for method, m in r["methods"].items():
            cells = ", ".join(f"{k} {m['mean'][k]:.4f} +- {m['std'][k]:.4f}" for k in keys)
            print(f"{tag} {method} ({r['n_cases']} cases): {cells}")
    print("v3 -> v4 all-bone IoU, paired:", _paired(_per_case(reports["v3"], "x2b", "iou_all_bone"),
                                                    _per_case(reports["v4"], "x2b", "iou_all_bone")))
    g = {t: _groups(r["methods"]["x2b"]["mean"]) for t, r in reports.items()}
    print("per group mean per-bone IoU, v2 -> v3 -> v4:",
          "; ".join(f"{k} {g['v2'][k]:.3f} -> {g['v3'][k]:.3f} -> {g['v4'][k]:.3f}" for k in g["v4"]))
    m4 = reports["v4"]["methods"]["x2b"]["mean"]
    low = {b: m4[f"iou/{b}"] for b in ("rib_left_11", "rib_left_12", "rib_right_11", "rib_right_12")}
    print("v4 ribs 11-12:", ", ".join(f"{k} {v:.3f}" for k, v in low.items()))

    print("\n## X2BR trade-off on the test split (x2br_v{3,4}_eval_test.json)")
    ckeys = ("frac_bones_single_component", "frac_ribs_unbroken", "rib_turning_deg_per_cm_mean",
             "frac_vertebra_pairs_ordered", "frac_vertebra_pairs_overlapping")
    for tag in ("v4", "v3"):
        r = _load(f"x2br_{tag}_eval_test.json")
        for method, m in r["methods"].items():
            print(f"{tag} {method}: " + ", ".join(f"{k} {m['mean'][k]:.4f}" for k in keys))
        for method, m in r["consistency"].items():
            print(f"{tag} consistency {method}: " + ", ".join(f"{k} {m['mean'][k]:.4f}" for k in ckeys))
        a, b = _per_case(r, "x2b", "iou_all_bone"), _per_case(r, "x2br", "iou_all_bone")
        print(f"{tag} X2B -> X2BR all-bone IoU, paired: {_paired(a, b)}")
        gx, gr = _groups(r["methods"]["x2b"]["mean"]), _groups(r["methods"]["x2br"]["mean"])
        print(f"{tag} per group mean per-bone IoU, X2B -> X2BR: "
              + "; ".join(f"{k} {gx[k]:.3f} -> {gr[k]:.3f}" for k in gx))
        print(f"{tag} settings: {r['refine']}")

    print("\n## X2B v4 checkpoint choice and the v3 fine-tune attempt: mean of all-bone and per-bone IoU")
    for name in ("x2b_v4_selection/eval_val_best.json", "x2b_v4_selection/eval_val_last.json",
                 "x2b_v4_selection/eval_val_init.json", "x2b_finetune_attempt/eval_val_v3.json",
                 "x2b_finetune_attempt/eval_val_finetune_epoch1.json",
                 "x2b_finetune_attempt/eval_val_finetune_epoch6.json",
                 "x2b_finetune_attempt/eval_test_finetune_epoch1.json"):
        r = _load(name)
        m = r["methods"]["x2b"]["mean"]
        print(f"{name} ({r['split']}, {r['n_cases']} cases): all-bone {m['iou_all_bone']:.4f}, per-bone "
              f"{m['iou_mean_per_bone']:.4f}, mean {(m['iou_all_bone'] + m['iou_mean_per_bone']) / 2:.4f}")


def sample_ground_truth() -> None:
    """Stray pieces in the bundled sample film's ground truth (a held-out case, same builder)."""
    from scipy import ndimage

    from X2BRLib.anatomy import BONES

    gt = np.load(REPO / "Resources" / "SampleData" / "sample_radiograph_gt.npz")["gt_labels"]
    broken, main, stray = 0, [], []
    for b in BONES:
        pieces, n = ndimage.label(gt == b.label, structure=np.ones((3, 3, 3), bool))
        if n > 1:
            sizes = np.sort(np.bincount(pieces.ravel())[1:])[::-1]
            broken, main, stray = broken + 1, main + [int(sizes[0])], stray + [int(x) for x in sizes[1:]]
    print(f"\n## Sample film's ground truth (Resources/SampleData/sample_radiograph_gt.npz): {broken} of "
          f"{len(BONES)} bones in more than one 26-connected piece; stray pieces {min(stray)} to {max(stray)} "
          f"voxels beside main pieces of {min(main)} voxels or more")


def detector() -> None:
    r = _load("yolo/eval_test.json")
    print(f"\n## Detector, test split (yolo/eval_test.json): {r['n_images']} films, mAP50 {r['map50']:.3f}, "
          f"mAP50-95 {r['map50_95']:.3f}, precision {r['precision']:.3f}, recall {r['recall']:.3f}")
    ap = sorted((v["ap50_95"], k) for k, v in r["per_class"].items())
    print("AP50 of every bone:", sorted({v["ap50"] for v in r["per_class"].values()}))
    print("lowest AP50-95:", ", ".join(f"{k} {v:.3f}" for v, k in ap[:5]),
          "| highest:", ", ".join(f"{k} {v:.3f}" for v, k in ap[-2:]))
    rows = list(csv.DictReader((T / "yolo" / "results.csv").open()))
    restart = [i for i in range(1, len(rows)) if float(rows[i]["time"]) < float(rows[i - 1]["time"])]
    parts = [float(rows[i - 1]["time"]) for i in restart] + [float(rows[-1]["time"])]
    print(f"training (yolo/results.csv, column time, {len(rows)} epochs, {len(parts)} runs): "
          + " + ".join(f"{p:.1f} s" for p in parts) + f" = {sum(parts) / 60:.1f} min")


def training() -> None:
    print("\n## X2B training time (x2b_v*_log.csv, column time_s) and dataset builds (*_build_h100.txt)")
    for tag in ("v2", "v3", "v4"):
        rows = list(csv.DictReader((T / f"x2b_{tag}_log.csv").open()))
        t = np.array([float(r["time_s"]) for r in rows])
        last = rows[-1]
        print(f"{tag}: {len(rows)} epochs, {t.sum() / 60:.1f} min, {t.mean():.0f} s per epoch; last epoch train loss "
              f"{float(last['train_loss']):.3f}, val loss {float(last['val_loss']):.3f}")
        peaks = []
        for key, best in (("val_loss", min), ("val_point_miou", max), ("val_vol_bone_iou", max),
                          ("val_vol_score", max)):
            vals = [(float(r[key]), int(r["epoch"])) for r in rows if r.get(key)]
            if vals:
                v, e = best(vals)
                peaks.append(f"{'lowest' if best is min else 'highest'} {key} {v:.3f} at epoch {e}")
        print(f"{tag}: " + "; ".join(peaks))
    for name in ("x2b_v2_build_h100.txt", "x2b_v3_build_h100.txt", "x2b_v4_build_h100.txt", "yolo/build.txt"):
        rec = json.loads((T / name).read_text().strip().splitlines()[-1])
        print(f"{name}: {rec['built_now']} cases in {rec['seconds']:.0f} s, {rec['cases_per_minute']:.1f} cases/min")


def timings() -> None:
    print("\n## Reconstruction timings (bench/bench_reconstruct.py lines in docs/training/bench_*.jsonl; medians, s)")
    keys = ("reconstruct_wall", "write_wall", "end_to_end_wall", "encode", "mise_total", "refine_detect",
            "refine_fit", "refine_register", "refine_voxelise")
    for path in sorted(T.glob("bench_reconstruct*.jsonl")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            r = json.loads(line)
            s = r["median_s"]
            cells = ", ".join(f"{k} {s[k]:.3f}" for k in keys if k in s)
            extra = f", queries {r['queries']:,} of dense {r['dense_queries']:,}"
            if "dense_s" in r:
                extra += f", dense {r['dense_s']:.3f} s, MISE = dense on {r['mise_equals_dense_fraction']:.3f}"
            print(f"{path.name}:{i} {r['device']} {r['quality']}{' refine' if r.get('refine') else ''}: {cells}{extra}")
    r = _load("x2b_v2_gpu_recon_timing_h100.json")
    print("x2b_v2_gpu_recon_timing_h100.json: " + ", ".join(
        f"{q} {v['median_s']:.3f} s ({v['queries']:,} of {v['dense']:,} queries)" for q, v in r.items()))


def main() -> int:
    accuracy()
    sample_ground_truth()
    detector()
    training()
    timings()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
