"""Detection subcommands of ``x2br``: detect, train-detector. Thin calls into detect.detector
and detect.train.

``x2br detect FILM... -o OUT`` writes, per film, ``detections.json`` (flat, documented keys:
input, input_meta, warnings, geometry, image_size [w, h], conf, iou, detections [{label, name,
confidence, box_px (u0, v0, u1, v1) network-image pixels, centres at integers}], bones_missing,
timings_s, model, outputs) and ``detections.png`` (the network image with each bone's box in
its catalog colour).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import InputError
from ..io.atomic import atomic_write
from ..x2b.commands import _expand_inputs, _progress_line

OUTPUT_FILES = ("detections.json", "detections.png")


def write_detections_png(path, image, detections, overwrite: bool = False, title: str | None = None) -> Path:
    """The network image (H, W) in grey with each detection's box and name in its bone colour."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from .. import anatomy

    img = np.asarray(image, np.float32)
    h, w = img.shape
    fig = Figure(figsize=(6.4, 6.4 * h / w + 0.3), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 1 - 0.3 / fig.get_figheight()])
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")  # pixel centres at integers
    lut = anatomy.by_label()
    for d in detections:
        u0, v0, u1, v1 = d.box_px
        colour = lut[d.label].color_rgb
        ax.add_patch(Rectangle((u0, v0), u1 - u0, v1 - v0, fill=False, lw=1.0, edgecolor=colour))
        ax.text(u0, v0, f"{d.name} {d.confidence:.2f}", color=colour, fontsize=4.5, va="bottom", ha="left")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=8, y=0.995)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), overwrite=overwrite, suffix=".png")


def detect_one(detector, path, outdir: Path, conf: float, iou: float, overwrite: bool) -> dict:
    """Detect bones on one film and write outdir/detections.json + .png; returns the report."""
    from ..io.atomic import atomic_write_text
    from ..io.radiograph import read_radiograph

    outdir = Path(outdir)
    for name in OUTPUT_FILES:
        if (outdir / name).exists() and not overwrite:
            raise InputError("already exists; refusing to overwrite it (pass --overwrite)", outdir / name)
    t0 = time.perf_counter()
    rad = read_radiograph(path)
    t_read = time.perf_counter() - t0
    from ..polarity import choose  # a PNG / JPEG stored as its negative: read as that

    rad, dets, image, geom, _ = choose(rad, lambda r: detector.detect_radiograph(r, conf=conf, iou=iou))
    found = {d.label for d in dets}
    from .. import anatomy

    report = {
        "input": str(path), "input_meta": rad.meta, "warnings": list(rad.warnings),
        "geometry": geom.to_dict(), "image_size": [int(image.shape[1]), int(image.shape[0])],
        "conf": conf, "iou": iou, "detections": [d.to_dict() for d in dets],
        "bones_missing": [b.name for b in anatomy.BONES if b.label not in found],
        "timings_s": {"read": round(t_read, 4), **{k: round(v, 4) for k, v in detector.timings_s.items()}},
        "model": detector.info,
        "outputs": {k: str(outdir / k) for k in OUTPUT_FILES},
    }
    write_detections_png(outdir / "detections.png", image, dets, overwrite=overwrite,
                         title=f"{Path(path).name}: {len(dets)} bones")
    atomic_write_text(outdir / "detections.json", json.dumps(report, indent=1, default=str) + "\n",
                      overwrite=overwrite)
    return report


def cmd_detect(args) -> int:
    """One or many radiographs; one failure does not stop the others; progress on stderr."""
    from ..errors import X2BRError
    from ..io.batch import output_folders
    from .detector import Detector

    files = _expand_inputs(args.inputs)
    outdirs = output_folders(files, args.output)
    detector = Detector(args.weights, device=args.device)
    results, failures = [], []
    for i, (f, outdir) in enumerate(zip(files, outdirs)):
        try:
            rep = detect_one(detector, f, outdir, args.conf, args.iou, args.overwrite)
            _progress_line((i + 1) / len(files), f"{f.name}: {len(rep['detections'])} bones, written to {outdir}")
            results.append({"input": str(f), "output": str(outdir), "bones_found": len(rep["detections"])})
        except X2BRError as e:
            failures.append({"input": str(f), "error": str(e)})
            print(f"x2br: error: {e}", file=sys.stderr, flush=True)
    print(json.dumps({"detected": results, "failed": failures}))
    return 0 if not failures else (2 if not results else 1)


def cmd_train_detector(args) -> int:
    from .train import run_train

    return run_train(args)


def add_commands(sub) -> None:
    s = sub.add_parser("detect", help="radiograph(s) -> one box per bone (YOLOv9): detections.json + .png")
    s.add_argument("inputs", nargs="+", help="radiograph files (DICOM CR/DX, PNG, JPEG, TIFF, NRRD...) or folders")
    s.add_argument("-o", "--output", required=True, help="output folder (one sub-folder per input when several)")
    s.add_argument("--weights", help="detector weights folder (default: Resources/Models/yolo)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--conf", type=float, default=0.25, help="minimum confidence")
    s.add_argument("--iou", type=float, default=0.5, help="class-wise NMS IoU threshold")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    s.set_defaults(func=cmd_detect)

    from .train import add_train_args

    s = sub.add_parser("train-detector", help="train the YOLOv9 bone detector on a dataset's boxes (from scratch, or "
                                                "fine-tune with --init-weights)")
    add_train_args(s)
    s.set_defaults(func=cmd_train_detector)
