"""Test-time passes of the bone detector (X2BRLib/detect/test_time.py) against one plain pass:
bones found on real films, and what the film check would say if it used them.

    .venv/bin/python bench/bench_detect_test_time.py --films ../shared/data/films [--ct-dir ../shared/data/ct]
        [--passes plain,clahe,zoom]

Images: every film of ``--films`` (kind from the name: ``*_lat.*`` lateral, else frontal; adults
unless a stem of ``bench_gallery_recall.CHILDREN``), the bundled simulated film and the images
that are not chest films of ``bench_filmcheck.make_non_chest`` (noise, strips, photographs, CT
slices, with every ``--ct-dir`` CT). Each is read as a user's file (no spacing assumed) and
resampled to the network image (``to_network_input``); the detector (shipped, or ``--weights``)
runs once plainly and once with its test-time passes, both at confidence >= 0.1 as the film check
asks. Per image and per mode: bones at >= 0.1 and >= 0.25, the RMS residual of the frontal
layout fit (``filmcheck.layout_checks``: do the bones sit where a frontal chest's do?), and the
film check's verdict (``filmcheck.check_film`` on those detections: refused / warned / ok).
Test-time passes help only if they find more bones on frontal films without turning refusals or
warnings on the other images into ok.
"""
from __future__ import annotations

import argparse
import glob
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def verdict(check: dict) -> str:
    if check["refused"]:
        return "refused"
    return "warned" if [w for w in check["warnings"] if "(--force)" not in w] else "ok"


def main(argv=None) -> int:
    from bench_filmcheck import make_non_chest
    from bench_gallery_recall import CHILDREN

    from X2BRLib import filmcheck
    from X2BRLib.detect.detector import Detector
    from X2BRLib.errors import InputError
    from X2BRLib.io.radiograph import read_radiograph, to_network_input

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--films", required=True, help="a folder of real chest films (the gallery)")
    ap.add_argument("--ct-dir", help="a folder of */ct.nii.gz chest CTs: their slices as not-films")
    ap.add_argument("--weights", help="detector weights (default: the shipped ones)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--passes", default="plain,clahe,zoom", help="test-time passes, comma-separated")
    args = ap.parse_args(argv)
    passes = tuple(args.passes.split(","))
    warnings.simplefilter("ignore")
    det = Detector(args.weights, device=args.device)
    print(f"weights: {det.info['weights']} (sha256 {det.info['sha256'][:12]}), device {det.info['device']}, "
          f"test-time passes: {', '.join(passes)}")
    cts = [REPO / "Resources" / "SampleData" / "chest_ct_3mm.nii.gz"]
    if args.ct_dir:
        cts += sorted(Path(p) for p in glob.glob(str(Path(args.ct_dir) / "*" / "ct.nii.gz")))
    print("| image | kind | verdict plain -> test-time | bones >= 0.1 | bones >= 0.25 | layout mm |")
    print("|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        items = [(n, p, "not a chest film") for n, p in make_non_chest(Path(tmp), cts)]
        items.append(("sample_radiograph.dcm", REPO / "Resources" / "SampleData" / "sample_radiograph.dcm",
                      "simulated frontal"))
        for p in sorted(Path(args.films).iterdir()):
            if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm"):
                kind = "lateral" if "_lat." in p.name else (
                    "child frontal" if p.name.split(".")[0] in CHILDREN else "adult frontal")
                items.append((p.name, p, kind))
        for name, path, kind in items:
            try:
                rad = read_radiograph(path, default_spacing_mm=None)
            except InputError as e:
                print(f"| {name} | {kind} | refused by the reader ({e}) | | | |")
                continue
            image, _ = to_network_input(rad, (det.imgsz, det.imgsz))
            row = {"name": name, "kind": kind}
            for mode in ("plain", "test-time"):
                dets = det.detect(image, conf=filmcheck.REFUSE_BELOW_CONFIDENCE,
                                  test_time=passes if mode == "test-time" else False)
                check = filmcheck.check_film(rad.geometry.size_px, image, dets, force=True)
                row[mode] = {"verdict": verdict(check), "n01": check["bones_conf_0.1"],
                             "n025": check["bones_conf_0.25"], "layout": check.get("layout_residual_mm")}
            rows.append(row)
            p, t = row["plain"], row["test-time"]
            lay = " -> ".join("" if r["layout"] is None else f"{r['layout']:.1f}" for r in (p, t))
            print(f"| {name} | {kind} | {p['verdict']} -> {t['verdict']} | {p['n01']} -> {t['n01']} | "
                  f"{p['n025']} -> {t['n025']} | {lay} |", flush=True)
    print()
    for kind in dict.fromkeys(r["kind"] for r in rows):
        sel = [r for r in rows if r["kind"] == kind]
        parts = []
        for mode in ("plain", "test-time"):
            v = [r[mode]["verdict"] for r in sel]
            n = [r[mode]["n025"] for r in sel]
            parts.append(f"{mode}: " + ", ".join(f"{v.count(k)} {k}" for k in ("refused", "warned", "ok") if v.count(k))
                         + f"; bones >= 0.25 mean {statistics.mean(n):.1f}, min {min(n)}, >= 40 on "
                         f"{sum(x >= 40 for x in n)}")
        print(f"{kind} ({len(sel)}): " + " | ".join(parts))
    worse = [r["name"] for r in rows if not r["kind"].endswith("frontal")
             and ("refused", "warned", "ok").index(r["test-time"]["verdict"])
             > ("refused", "warned", "ok").index(r["plain"]["verdict"])]
    print(f"images that are not frontal films with a milder verdict under test-time passes: {len(worse)}"
          + (f" ({', '.join(worse)})" if worse else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
