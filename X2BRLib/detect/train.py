"""Train, export and evaluate the YOLOv9 bone detector (ultralytics, from scratch, offline).

    python -m X2BRLib.detect.train train --data DS --out RUN [--epochs 120] [--max-minutes 9] [--resume]
        [--init-weights Resources/Models/yolo]   (fine-tune from shipped weights instead of from scratch)
    python -m X2BRLib.detect.train export --run RUN -o Resources/Models/yolo [--data DS] [--overwrite]
    python -m X2BRLib.detect.train evaluate --weights Resources/Models/yolo --data DS [--split test]

DS is a dataset folder from ``x2br build-dataset`` (its ``yolo/data.yaml``) or a data.yaml.

Offline: the architecture comes from the yaml inside the ultralytics package
(``pretrained=False``), ``YOLO_OFFLINE=1`` disables analytics and downloads, plots are off
(they would fetch Arial.ttf), the font lookup is local-only, and the AMP self-check (which
downloads yolo26n.pt) is replaced by "AMP on CUDA". Deterministic: ``seed`` and
``deterministic=True``.

Augmentation (``AUGMENT``): the virtual patients already vary size, rotation, tilt, spine
shape, exposure, noise and post-processing, so ultralytics' photometric/geometric defaults
are cut down to what is safe for a film with one instance of each of 45 classes:
- ``fliplr=0``: left and right bones are distinct classes; a flip would teach wrong labels.
- ``mosaic=0``: a mosaic tiles pieces of four films; rib numbers are read from their place in
  the whole chest (counted from the clavicles and C7), which tiles break, and the test
  films are always whole, centred chests.
- ``degrees=0, shear=0, perspective=0``: rotating an axis-aligned box inflates it; rotation is
  already in the virtual patients with exact boxes.
- ``scale=0.15, translate=0.05``: mild zoom/shift around the framing the films vary anyway.
- ``hsv_h=hsv_s=0`` (grey images), ``hsv_v=0.2`` (mild brightness); no mixup/cutmix/copy-paste.
``--augment KEY=VALUE`` changes one of them for a run (e.g. a fine-tune on bedside films with
more zoom and shift); the exported record lists the values used.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from .. import __version__
from ..errors import InputError, X2BRError
from ..io.checked import refuse_existing_weights, weight_paths
from ..provenance import code_provenance
from .checkpoint import load_checkpoint
from .detector import VARIANTS, build_model, save_weights, ultralytics, variant_yaml

AUGMENT = dict(fliplr=0.0, flipud=0.0, mosaic=0.0, close_mosaic=0, mixup=0.0, cutmix=0.0, copy_paste=0.0,
               degrees=0.0, shear=0.0, perspective=0.0, translate=0.05, scale=0.15,
               hsv_h=0.0, hsv_s=0.0, hsv_v=0.2)
OPTIM = dict(optimizer="AdamW", lr0=0.001, cos_lr=True, warmup_epochs=3.0)


def data_yaml_path(data) -> Path:
    """A dataset folder (-> yolo/data.yaml) or a data.yaml; InputError naming it otherwise."""
    p = Path(data)
    if p.is_dir():
        p = p / "yolo" / "data.yaml" if (p / "yolo" / "data.yaml").is_file() else p / "data.yaml"
    if not p.is_file():
        raise InputError("no YOLO data.yaml here; build a dataset with `x2br build-dataset`", data)
    return p.resolve()


def _device_arg(device: str):
    """x2br device names -> ultralytics': auto -> first GPU or cpu, cuda -> 0, cuda:1 -> 1."""
    import torch

    if device == "auto":
        return 0 if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
        return int(device.split(":")[1]) if ":" in device else 0
    return device


def _offline_trainer():
    """ultralytics' trainer module, patched twice:

    - its AMP self-check (which downloads yolo26n.pt) is replaced by "AMP on CUDA, never on CPU",
      what the check itself decides on an H100;
    - ``read_results_csv`` (results.csv -> dict of columns, stored in every checkpoint) uses the
      csv module instead of polars, so polars (a 54 MB wheel per Python version) is not needed.
    """
    ultralytics()
    import ultralytics.engine.trainer as trainer_mod

    def check_amp(model):
        return next(model.parameters()).device.type == "cuda"

    trainer_mod.check_amp = check_amp
    trainer_mod.BaseTrainer.read_results_csv = _read_results_csv
    return trainer_mod


def _read_results_csv(trainer) -> dict:
    """results.csv -> {column: [values]} (floats where they parse), as ultralytics' polars reader."""
    import csv

    def value(x: str):
        try:
            return float(x) if any(c in x for c in ".eE") else int(x)
        except ValueError:
            return x

    try:
        with open(trainer.csv, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError:
        return {}
    if not rows:
        return {}
    cols = [c.strip() for c in rows[0]]
    return {c: [value(r[i].strip()) for r in rows[1:] if i < len(r)] for i, c in enumerate(cols)}


def _time_budget_callback(max_minutes: float, state: dict):
    """on_fit_epoch_end: stop after the epoch when the next one would not fit in max_minutes.

    A stop for time skips ultralytics' final_eval, which would strip last.pt's optimizer and
    make it unresumable; last.pt (saved just before this callback) stays a resume point.
    """
    t0 = time.time()

    def on_fit_epoch_end(trainer):
        if trainer.stop or state.get("stopped_for_time"):
            return
        done = trainer.epoch - trainer.start_epoch + 1
        elapsed = time.time() - t0
        if trainer.epoch + 1 < trainer.epochs and elapsed + 1.3 * elapsed / max(done, 1) > max_minutes * 60:
            state["stopped_for_time"] = True
            trainer.stop = True
            trainer.final_eval = lambda: None
            print(f"x2br: stopping after epoch {trainer.epoch + 1}/{trainer.epochs} for the time budget "
                  f"({max_minutes} min); resume with --resume", file=sys.stderr, flush=True)

    return on_fit_epoch_end


def load_init_weights(weights, variant: str):
    """Weights to fine-tune from -> (an unfused fp32 DetectionModel, a record of where it came from).

    weights: shipped weights (folder / model.pt / model.json: checksum and catalog verified, as
    the Detector loads them) or an ultralytics checkpoint (a run's best.pt / last.pt, read
    without running pickled code). The architecture must be ``variant``'s."""
    import torch

    from .detector import read_record

    pt, js = weight_paths(weights)
    if js.is_file():
        card = read_record(pt)
        if card["variant"] != variant:
            raise InputError(f"--init-weights hold a {card['variant']} detector; pass --variant {card['variant']}", pt)
        model = build_model(card["variant"], int(card["nc"]))
        model.load_state_dict(torch.load(pt, map_location="cpu", weights_only=True))
        return model.float(), {"path": str(pt), "sha256": card["sha256"], "format": card["format"]}
    if not pt.is_file():
        raise InputError("--init-weights not found (shipped weights folder, model.pt + model.json, or a run's best.pt)",
                         weights)
    ck = load_checkpoint(pt)
    net = ck.get("ema") or ck.get("model")
    have = Path(str((getattr(net, "yaml", None) or {}).get("yaml_file", ""))).stem
    if net is None or (have and have != variant):
        raise InputError(f"--init-weights: not an ultralytics {variant} detection checkpoint", pt)
    return net.float(), {"path": str(pt), "format": "ultralytics checkpoint"}


def train_detector(data_yaml, out_dir, variant: str = "yolov9t", epochs: int = 120, imgsz: int = 256,
                   batch: int = 64, device: str = "auto", workers: int = 8, resume: bool = False,
                   max_minutes: float | None = None, seed: int = 0, cache=False, patience: int = 50,
                   init_weights=None, **overrides) -> dict:
    """Train YOLOv9 on the dataset's YOLO boxes into ``out_dir`` (ultralytics run layout:
    weights/last.pt, weights/best.pt, results.csv, args.yaml), from scratch or, with
    ``init_weights`` (see :func:`load_init_weights`), fine-tuning those weights (recorded in
    out_dir/init_weights.json, and by ``export_detector`` in the shipped record).

    resume: continue from out_dir/weights/last.pt (same arguments as the first call; imgsz,
    batch, device and workers may change). max_minutes: stop after the last epoch that fits
    (a resume point). overrides: other ultralytics train arguments (e.g. lr0, fraction).
    Returns a flat dict: run_dir, epoch, epochs, stopped_for_time, finished, seconds, metrics.
    """
    if variant not in VARIANTS:
        raise InputError(f"unknown YOLOv9 variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    data = data_yaml_path(data_yaml)
    out = Path(out_dir).resolve()
    last = out / "weights" / "last.pt"
    if last.exists() and not resume:
        raise InputError("holds a training run already; pass --resume to continue it or choose another folder", out)
    _offline_trainer()
    from ultralytics import YOLO

    t0 = time.perf_counter()
    state: dict = {}
    if resume and last.exists():
        load_checkpoint(last)  # refused unless it holds only network modules; ultralytics then loads it
        model = YOLO(str(last))
        args = dict(resume=str(last), imgsz=imgsz, batch=batch, device=_device_arg(device), workers=workers)
    else:
        model = YOLO(str(variant_yaml(variant)))
        if init_weights is not None:
            from ..io.atomic import atomic_write_text

            net, source = load_init_weights(init_weights, variant)
            model.load(net)  # parameters copied by name and shape; train() then starts from them
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "init_weights.json", json.dumps(source, indent=1) + "\n")
        args = dict(data=str(data), epochs=epochs, imgsz=imgsz, batch=batch, device=_device_arg(device),
                    workers=workers, project=str(out.parent), name=out.name, exist_ok=True,
                    pretrained=init_weights is not None,
                    seed=seed, deterministic=True, plots=False, val=True, cache=cache, patience=patience,
                    amp=True, verbose=True, **AUGMENT, **OPTIM)
        args.update(overrides)
    if max_minutes:
        model.add_callback("on_fit_epoch_end", _time_budget_callback(float(max_minutes), state))
    model.train(**args)
    tr = model.trainer
    metrics = {k: round(float(v), 5) for k, v in (tr.metrics or {}).items() if isinstance(v, (int, float))}
    return {"run_dir": str(tr.save_dir), "epoch": int(tr.epoch) + 1, "epochs": int(tr.epochs),
            "stopped_for_time": bool(state.get("stopped_for_time")),
            "finished": not state.get("stopped_for_time"), "seconds": round(time.perf_counter() - t0, 1),
            "metrics": metrics}


def _epochs_done(ck_path: Path):
    """Epochs in the run's results.csv (a stripped checkpoint no longer records its epoch)."""
    csv = ck_path.parent.parent / "results.csv"
    return max(0, len(csv.read_text().strip().splitlines()) - 1) if csv.is_file() else None


def _checkpoint(run_dir) -> Path:
    p = Path(run_dir)
    if p.is_dir():
        for c in (p / "weights" / "best.pt", p / "weights" / "last.pt", p / "best.pt", p / "last.pt"):
            if c.is_file():
                return c
    if p.is_file():
        return p
    raise InputError("no weights/best.pt or weights/last.pt (not an ultralytics run folder)", run_dir)


def export_detector(run_dir, out_dir, data_yaml=None, metrics: dict | None = None, device: str = "auto",
                    overwrite: bool = False):
    """A training run (best.pt, else last.pt) -> the shipped ``model.pt`` (fp16 state dict) +
    ``model.json`` in out_dir, atomically; existing weights there are replaced only with
    overwrite. The checkpoint is read without running pickled code (:mod:`.checkpoint`).

    The record holds variant, imgsz, nc, class names/labels, SHA-256, training and augmentation
    settings, the best epoch's val mAP50 / mAP50-95, the code commit and hash
    (:func:`X2BRLib.provenance.code_provenance`) and versions. data_yaml:
    also measure the test split with the exported weights (``evaluate_detector``) and record it.
    metrics: extra metrics to record. Returns (pt, json) paths.
    """
    import torch

    refuse_existing_weights(out_dir, overwrite)
    ultralytics()
    ck_path = _checkpoint(run_dir)
    ck = load_checkpoint(ck_path)
    net = ck.get("ema") or ck.get("model")
    targs = dict(ck.get("train_args") or {})
    if net is None or "model" not in targs:
        raise InputError("not an ultralytics detection checkpoint", ck_path)
    variant = Path(str((getattr(net, "yaml", None) or {}).get("yaml_file") or targs["model"])).stem
    model = build_model(variant, int(net.nc if hasattr(net, "nc") else len(net.names)))
    model.load_state_dict(net.float().state_dict())
    init = ck_path.parent.parent / "init_weights.json"
    tm = ck.get("train_metrics") or {}
    val = {"map50": tm.get("metrics/mAP50(B)"), "map50_95": tm.get("metrics/mAP50-95(B)"),
           "precision": tm.get("metrics/precision(B)"), "recall": tm.get("metrics/recall(B)")}
    import ultralytics as ul

    record = {"variant": variant, "imgsz": int(targs.get("imgsz", 256)), "architecture_yaml":
              f"ultralytics/cfg/models/v9/{variant}.yaml", "checkpoint": ck_path.name,
              "epochs_trained": _epochs_done(ck_path), "training": {k: targs.get(k) for k in
              ("epochs", "batch", "imgsz", "seed", "optimizer", "lr0", "cos_lr", "warmup_epochs", "patience",
               "data", "pretrained", *AUGMENT)},
              "metrics": {"val_best_epoch": {k: (None if v is None else round(float(v), 5)) for k, v in val.items()},
                          **(metrics or {})},
              **code_provenance(), "x2br_version": __version__, "ultralytics_version": ul.__version__,
              "torch_version": torch.__version__, "input": "8-bit grey network image (to_network_input, "
              "round(clip(x, 0, 1) * 255)), 3 equal channels, /255"}
    if init.is_file():  # fine-tuned: from which weights
        record["training"]["init_weights"] = json.loads(init.read_text())
    pt, js = save_weights(out_dir, model, record)
    if data_yaml is not None:
        test = evaluate_detector(pt, data_yaml, split="test", device=device)
        record["metrics"]["test"] = {k: test[k] for k in ("map50", "map50_95", "precision", "recall", "n_images")}
        pt, js = save_weights(out_dir, model, record)
    return pt, js


def evaluate_detector(weights, data_yaml, split: str = "test", device: str = "auto", batch: int = 16,
                      conf: float = 0.001, iou: float = 0.7) -> dict:
    """mAP of a detector on a split of the dataset (ultralytics' validator, COCO-style 101-point AP).

    weights: shipped weights (folder / model.pt / model.json; checksum verified) or an ultralytics
    checkpoint (a run's best.pt). Returns a flat dict: split, map50, map50_95, precision, recall,
    n_images, per_class {bone name: {ap50, ap50_95}}, speed_ms, weights.
    """
    _offline_trainer()
    from ultralytics import YOLO

    from .detector import Detector

    data = data_yaml_path(data_yaml)
    pt, js = weight_paths(weights)
    if js.is_file():
        det = Detector(pt, device="cpu")
        yolo = YOLO(str(variant_yaml(det.record["variant"])))
        yolo.model = det.model
        imgsz = det.imgsz
    elif pt.is_file():
        load_checkpoint(pt)  # refused unless it holds only network modules; ultralytics then loads it
        yolo = YOLO(str(pt))
        imgsz = int(yolo.ckpt.get("train_args", {}).get("imgsz", 256)) if yolo.ckpt else 256
    else:
        raise InputError("weights not found", weights)
    m = yolo.val(data=str(data), split=split, imgsz=imgsz, batch=batch, device=_device_arg(device), conf=conf,
                 iou=iou, plots=False, save_json=False, verbose=False, workers=0)
    names = m.names
    per_class = {names[int(c)]: {"ap50": round(float(m.box.ap50[i]), 5), "ap50_95": round(float(m.box.ap[i]), 5)}
                 for i, c in enumerate(m.box.ap_class_index)}
    n_images = len(list((data.parent / "images" / split).glob("*.png")))
    return {"split": split, "map50": round(float(m.box.map50), 5), "map50_95": round(float(m.box.map), 5),
            "precision": round(float(m.box.mp), 5), "recall": round(float(m.box.mr), 5), "n_images": n_images,
            "per_class": per_class, "speed_ms": {k: round(float(v), 3) for k, v in m.speed.items()},
            "weights": str(pt)}


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder (x2br build-dataset) or its yolo/data.yaml")
    p.add_argument("-o", "--out", required=True, help="run folder (weights/last.pt, best.pt, results.csv)")
    p.add_argument("--variant", default="yolov9t", choices=VARIANTS)
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", choices=["ram", "disk"], help="cache decoded images")
    p.add_argument("--patience", type=int, default=50, help="early stop after N epochs without val improvement")
    p.add_argument("--fraction", type=float, default=1.0, help="use this fraction of the training images")
    p.add_argument("--resume", action="store_true", help="continue RUN/weights/last.pt")
    p.add_argument("--init-weights", metavar="PATH",
                   help="fine-tune: start from these weights (e.g. Resources/Models/yolo, or a run's best.pt) "
                        "instead of from scratch; same --variant")
    p.add_argument("--lr0", type=float, default=OPTIM["lr0"], help="initial learning rate (AdamW)")
    p.add_argument("--max-minutes", type=float, help="stop after the last epoch that fits (resumable)")
    p.add_argument("--augment", action="append", metavar="KEY=VALUE", default=[],
                   help=f"change one augmentation setting (repeatable; keys: {', '.join(AUGMENT)}); "
                        "a resumed run keeps its own")
    p.add_argument("--export", help="after training, export the weights to this folder")
    p.add_argument("--overwrite", action="store_true", help="let --export replace existing weights")


def parse_augment(items) -> dict:
    """["degrees=5", "scale=0.4", ...] -> {"degrees": 5.0, "scale": 0.4}: AUGMENT keys only,
    numbers only (close_mosaic: a whole number of epochs); InputError naming the item otherwise."""
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or key not in AUGMENT:
            raise InputError(f"--augment {item!r}: expected KEY=VALUE with KEY one of {', '.join(AUGMENT)}")
        try:
            out[key] = int(value) if key == "close_mosaic" else float(value)
        except ValueError:
            raise InputError(f"--augment {item!r}: {value!r} is not a number") from None
    return out


def run_train(args) -> int:
    """Train (and --export); ultralytics' progress goes to stderr, the result is one JSON line on stdout."""
    if args.export:
        refuse_existing_weights(args.export, args.overwrite)  # before training, not after it
    with contextlib.redirect_stdout(sys.stderr):
        res = train_detector(args.data, args.out, variant=args.variant, epochs=args.epochs, imgsz=args.imgsz,
                             batch=args.batch, device=args.device, workers=args.workers, resume=args.resume,
                             max_minutes=args.max_minutes, seed=args.seed, cache=args.cache or False,
                             patience=args.patience, fraction=args.fraction, init_weights=args.init_weights,
                             lr0=args.lr0, **parse_augment(args.augment))
        if args.export and res["finished"]:
            res["export"] = [str(p) for p in export_detector(res["run_dir"], args.export,
                                                             overwrite=args.overwrite)]
    print(json.dumps(res))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m X2BRLib.detect.train", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("train", help="train (or --resume) YOLOv9 from scratch or from --init-weights")
    add_train_args(s)
    s = sub.add_parser("export", help="run -> shipped model.pt + model.json")
    s.add_argument("--run", required=True, help="training run folder (or a best.pt)")
    s.add_argument("-o", "--out", required=True, help="weights folder to write, e.g. Resources/Models/yolo")
    s.add_argument("--data", help="dataset: also measure and record test-split mAP")
    s.add_argument("--device", default="auto")
    s.add_argument("--overwrite", action="store_true", help="replace existing weights in the -o folder")
    s = sub.add_parser("evaluate", help="mAP on a split (ultralytics val)")
    s.add_argument("--weights", required=True, help="weights folder / model.pt, or a run's best.pt")
    s.add_argument("--data", required=True)
    s.add_argument("--split", default="test")
    s.add_argument("--device", default="auto")
    s.add_argument("-o", "--output", help="write the report here (JSON)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action == "train":
            return run_train(args)
        if args.action == "export":
            with contextlib.redirect_stdout(sys.stderr):
                pt, js = export_detector(args.run, args.out, data_yaml=args.data, device=args.device,
                                         overwrite=args.overwrite)
            print(json.dumps({"weights": str(pt), "record": str(js),
                              "metrics": json.loads(Path(js).read_text())["metrics"]}))
            return 0
        with contextlib.redirect_stdout(sys.stderr):
            rep = evaluate_detector(args.weights, args.data, split=args.split, device=args.device)
        if args.output:
            from ..io.atomic import atomic_write_text

            atomic_write_text(args.output, json.dumps(rep, indent=1) + "\n")
        print(json.dumps({k: v for k, v in rep.items() if k != "per_class"}))
        return 0
    except X2BRError as e:
        print(f"x2br: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
