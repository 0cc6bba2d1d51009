"""Benchmark: YOLOv9 bone detection time per film (warm, median of N), model size, and mAP.

    .venv/bin/python bench/bench_detect.py [--weights DIR] [--film FILE] [--repeats 20]
        [--devices cpu cuda] [--data DATASET --split test] [--json OUT.json]

Without --weights the shipped weights (Resources/Models/yolo) are used; when they do not
exist yet, a randomly initialised yolov9t (its time is the same, its boxes meaningless).
Time is ``Detector.detect`` on the network image (8-bit quantisation, letterbox, forward,
NMS, one box per bone); reading and resampling the film are timed apart (once).
GFLOPs: ultralytics' thop count for one imgsz x imgsz image (the fused model).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from X2BRLib.detect.detector import DEFAULT_WEIGHTS, Detector, build_model, save_weights  # noqa: E402
from X2BRLib.io.radiograph import read_radiograph, to_network_input  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _weights(path, tmp: Path) -> tuple[Path, bool]:
    if path:
        return Path(path), True
    if (DEFAULT_WEIGHTS / "model.pt").is_file():
        return DEFAULT_WEIGHTS, True
    save_weights(tmp / "random", build_model("yolov9t"), {"variant": "yolov9t", "imgsz": 256})
    return tmp / "random", False


def bench_device(weights, film, device: str, repeats: int, warmup: int) -> dict:
    import torch
    from ultralytics.utils.torch_utils import get_flops

    det = Detector(weights, device=device)
    load_s = det.timings_s["load"]
    t0 = time.perf_counter()
    rad = read_radiograph(film)
    t_read = time.perf_counter() - t0
    image, _ = to_network_input(rad, (det.imgsz, det.imgsz))
    t_resample = time.perf_counter() - t0 - t_read
    for _ in range(warmup):
        det.detect(image)
    times, nets = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        found = det.detect(image)
        times.append(time.perf_counter() - t)
        nets.append(det.timings_s["network"])
    return {"device": device, "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            "torch_threads": torch.get_num_threads(), "imgsz": det.imgsz, "variant": det.record["variant"],
            "params": sum(p.numel() for p in det.model.parameters()),
            "gflops": round(float(get_flops(det.model, det.imgsz)), 3),
            "load_s": round(load_s, 3),
            "read_s": round(t_read, 4), "resample_s": round(t_resample, 4),
            "detect_median_ms": round(1000 * statistics.median(times), 2),
            "detect_min_ms": round(1000 * min(times), 2),
            "network_median_ms": round(1000 * statistics.median(nets), 2),
            "repeats": repeats, "bones_found": len(found)}


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="detector weights folder (default: shipped, else random init)")
    ap.add_argument("--film", default=str(REPO / "Resources" / "SampleData" / "sample_radiograph.dcm"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ap.add_argument("--data", help="dataset folder: also report mAP on --split with these weights")
    ap.add_argument("--split", default="test")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        weights, trained = _weights(args.weights, Path(tmp))
        rows = [bench_device(weights, args.film, d, args.repeats, args.warmup) for d in args.devices]
        print(f"weights: {weights} ({'trained' if trained else 'RANDOM INIT: timings only'}); film: {args.film}")
        print(f"{'device':<8} {'imgsz':>5} {'params':>9} {'GFLOPs':>7} {'detect ms':>10} {'network ms':>10} "
              f"{'bones':>5}  gpu")
        for r in rows:
            print(f"{r['device']:<8} {r['imgsz']:>5} {r['params']:>9} {r['gflops']:>7} {r['detect_median_ms']:>10} "
                  f"{r['network_median_ms']:>10} {r['bones_found']:>5}  {r['gpu'] or ''}")
        out = {"weights": str(weights), "trained": trained, "film": args.film, "timings": rows}
        if args.data:
            from X2BRLib.detect.train import evaluate_detector

            rep = evaluate_detector(weights, args.data, split=args.split, device=args.devices[-1])
            out["map"] = {k: v for k, v in rep.items() if k != "per_class"}
            print(f"{args.split}: mAP50 {rep['map50']:.4f}  mAP50-95 {rep['map50_95']:.4f}  "
                  f"P {rep['precision']:.3f}  R {rep['recall']:.3f}  ({rep['n_images']} films)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
