"""A user's PA + lateral pairs (X2BRLib.pair) on a gallery of real films: what the checks see.

    .venv/bin/python bench/bench_pair_views.py --films ../shared/data/films

For every film of the gallery (kind from the name: ``*_lat.*`` lateral, else frontal): the bone
detector's view evidence (``filmcheck.view_evidence``: bones at confidence >= 0.25, ribs of each
side, the left-right rib separation, looks frontal?) and, for laterals, the mirror check
(``pair.mirror_evidence`` read as LL: which side the back seems to be on, from what). Then every
pair ``<name>_pa.* + <name>_lat.*``: ``pair.prepare_lateral`` as ``x2br reconstruct PA --lateral
LAT`` runs it (the frontal film checked and scaled first), and its outcome: refused (the line) or
the lateral's view, spacing and source, the vertical scale check (ratio of chest heights, offset,
residual), the lateral's placement (``--lateral-offset auto``) and the warnings. The settings of filmcheck.FRONTAL_* and pair.MIRROR_* were read off this output.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


def main(argv=None) -> int:
    from X2BRLib import filmcheck, pair
    from X2BRLib.detect.detector import Detector
    from X2BRLib.errors import InputError
    from X2BRLib.io.radiograph import read_radiograph, to_network_input

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--films", required=True, help="a folder of real chest films")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    det = Detector(device=args.device)
    films = sorted(p for p in Path(args.films).iterdir() if p.suffix.lower() in SUFFIXES)
    print("| film | kind | bones >= 0.25 | ribs L / R | rib separation | looks frontal | back side (as LL) |")
    print("|---|---|---|---|---|---|---|")
    counts = {}
    for p in films:
        kind = "lateral" if "_lat." in p.name else "frontal"
        rad = read_radiograph(p, default_spacing_mm=None, view="LL" if kind == "lateral" else None)
        image, _ = to_network_input(rad, (det.imgsz, det.imgsz))
        dets = det.detect(image, conf=filmcheck.REFUSE_BELOW_CONFIDENCE)
        ev = filmcheck.view_evidence(dets, det.imgsz)
        back = ""
        if kind == "lateral":
            m = pair.mirror_evidence(image, "LL", dets)
            back = f"{m['back_side'] or 'undecided'} ({m['from'] or 'image'}, contrast {m['contrast']})"
        sep = "" if ev["rib_side_separation"] is None else f"{ev['rib_side_separation']:.3f}"
        print(f"| {p.name} | {kind} | {ev['bones_conf_0.25']} | {ev['ribs_left']} / {ev['ribs_right']} | {sep} | "
              f"{'yes' if ev['looks_frontal'] else 'no'} | {back} |", flush=True)
        c = counts.setdefault(kind, [0, 0])
        c[0] += ev["looks_frontal"]
        c[1] += 1
    print()
    for kind, (n, total) in counts.items():
        print(f"{kind}: {n} of {total} look frontal to the detector")
    print()
    for lat in [p for p in films if "_lat." in p.name]:
        pa = next((p for p in films if p.name.startswith(lat.name.split("_lat.")[0] + "_pa.")), None)
        if pa is None:
            continue
        frontal, dets = filmcheck.check_and_scale(read_radiograph(pa, default_spacing_mm=None), det)
        try:
            out = pair.prepare_lateral(frontal, dets, lat, det, (256, 256))
        except InputError as e:
            print(f"{pa.name} + {lat.name}: refused: {str(e).split(': ', 1)[-1]}")
            continue
        r = out.record
        vs = r["pair"]["vertical_scale"]
        scale = (f"chest height ratio {vs['ratio']} (lateral / PA), offset {vs['offset_mm']} mm from {vs['n_bones']} "
                 f"bones on both ({vs.get('n_fit')} fitted, median residual {vs.get('residual_mm')} mm); "
                 + r["pair"]["placement"]["text"] if vs["checked"] else f"scale not checked ({vs['n_bones']} bones on both)")
        print(f"{pa.name} + {lat.name}: PA spacing {frontal.geometry.spacing_mm[0]:.4g} mm "
              f"({frontal.meta['scale']['source']}); lateral {r['view']} ({r['view_source']}), spacing "
              f"{r['spacing']['spacing_mm'][0]:.4g} mm ({r['spacing']['source']}); {scale}; mirror check: "
              f"back {r['mirror_check']['back_side'] or 'undecided'}; {len(r['warnings'])} warnings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
