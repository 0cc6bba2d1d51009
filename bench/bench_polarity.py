"""Films stored as their negative (X2BRLib.polarity): the bones the detector finds on every frontal
film of a gallery as stored and as its negative, and what the rule decides.

    .venv/bin/python bench/bench_polarity.py --films ../shared/data/films [--weights DIR] [--device cpu]

One line per film: bones at confidence >= 0.25 as stored and on the negative (each the same
``Detector.detect_radiograph`` pass), and ``read as`` (stored / negative; "not in question" when the
file states its polarity or shows >= polarity.CHECK_BELOW_BONES bones). Then the smallest margin
by which a film read as stored beats its negative.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from X2BRLib import polarity
    from X2BRLib.detect.detector import Detector
    from X2BRLib.errors import X2BRError
    from X2BRLib.io.radiograph import read_radiograph
    from bench_gallery_recall import frontal_films

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--films", required=True)
    ap.add_argument("--weights")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    det = Detector(args.weights, device=args.device)
    print(f"weights: sha256 {det.info['sha256'][:12]}; rule: check below {polarity.CHECK_BELOW_BONES} bones, "
          f"negative when >= +{polarity.MIN_GAIN_BONES} and >= {polarity.MIN_RATIO}x")
    print("| film | bones as stored | bones as negative | read as |")
    print("|---|---|---|---|")
    margins = []
    for path in frontal_films(Path(args.films)):
        try:
            rad = read_radiograph(path, default_spacing_mm=None)
        except X2BRError as e:
            print(f"| {path.name} | not read: {e} | | |")
            continue
        _, _, _, _, rec = polarity.choose(rad, lambda r: det.detect_radiograph(r, conf=0.1))
        if rec is None:  # not in question: both counts for the table all the same
            n, m = (polarity.bones(det.detect_radiograph(r, conf=0.1)[0]) for r in (rad, polarity.negative(rad)))
        else:
            n, m = rec["bones_as_stored"], rec["bones_as_negative"]
        read_as = "not in question" if rec is None else rec["read_as"]
        if read_as != "negative":
            margins.append((n - m, path.name))
        print(f"| {path.name} | {n} | {m} | {read_as} |", flush=True)
    if margins:
        low = min(margins)
        print(f"\nfilms read as stored: {len(margins)}; smallest margin over the negative {low[0]} bones ({low[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
