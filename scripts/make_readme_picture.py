"""The README's X2B vs X2BR picture: the 3D panels (right halves) of two preview.png files
side by side, titled.

    x2br reconstruct Resources/SampleData/sample_radiograph.dcm -o out/x2b
    x2br reconstruct Resources/SampleData/sample_radiograph.dcm -o out/x2br --refine
    python scripts/make_readme_picture.py out/x2b/preview.png out/x2br/preview.png \
        -o docs/screenshots/x2b_vs_x2br_sample.png [--overwrite]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from X2BRLib.io.atomic import atomic_write  # noqa: E402

TITLES = ("X2B (network only)", "X2BR (--refine)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("x2b_preview")
    ap.add_argument("x2br_preview")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    panels = []
    for path in (args.x2b_preview, args.x2br_preview):
        im = Image.open(path).convert("RGB")
        w, h = im.size
        half = np.asarray(im.crop((w // 2, 0, w, h)), np.int32)
        panel_rows = np.flatnonzero((half.sum(-1) < 60).mean(1) > 0.5)  # the 3D panel's black rows
        top, bottom = (int(panel_rows[0]), int(panel_rows[-1]) + 1) if panel_rows.size else (0, h)
        panels.append(im.crop((w // 2, top, w, bottom)))  # the 3D half, without titles and legend
    pw, ph = panels[0].size
    out = Image.new("RGB", (2 * pw + 10, ph + 22), "white")
    draw = ImageDraw.Draw(out)
    for i, (panel, title) in enumerate(zip(panels, TITLES)):
        out.paste(panel, (i * (pw + 10), 22))
        draw.text((i * (pw + 10) + 8, 4), title, fill="black")
    atomic_write(Path(args.output), lambda tmp: out.save(tmp, format="PNG"), overwrite=args.overwrite)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
