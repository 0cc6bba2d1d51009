"""YOLOv9 bone detector: the shipped weights, verified, and one box per bone.

Weights: a folder holding ``model.pt`` (fp16 state dict of an ultralytics
``DetectionModel``, loaded with ``torch.load(weights_only=True)``: no pickled code)
and ``model.json`` (its record: format, variant, imgsz, nc, class names and
labels, SHA-256 of the .pt, metrics, training settings, code commit). The
architecture is rebuilt from the yaml that ships inside the ultralytics package
(``ultralytics/cfg/models/v9/<variant>.yaml``); nothing is ever downloaded.

Boxes are in the network image's pixel frame, the same as
``dataset.builder.bone_boxes`` and ``ProjectionGeometry``: ``box_px = (u0, v0, u1, v1)``,
u = column, v = row, pixel centres at integers (so the image spans -0.5 .. W - 0.5).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import anatomy
from ..errors import InputError, WeightsError
from ..io.checked import half_state_dict, read_checked_record, weight_paths, write_with_record
from ..shipped import resource

REPO = Path(__file__).resolve().parents[2]
DEFAULT_WEIGHTS = resource("Models", "yolo")
FORMAT = "x2br-yolo-weights"
FORMAT_VERSION = 1
HINT = "train with `x2br train-detector` (see Resources/Models/yolo/MODEL_CARD.md) or reinstall X2BR"
VARIANTS = ("yolov9t", "yolov9s", "yolov9m", "yolov9c", "yolov9e")


def ultralytics():
    """Import ultralytics with every network access switched off, nothing written to the
    user's home and nothing printed on stdout. The one place X2BR imports it.

    Set before the first import (a value the user set wins): ``YOLO_OFFLINE=1`` makes
    ultralytics' online check false, which disables its analytics and downloads;
    ``YOLO_CONFIG_DIR`` points at a private temporary folder (removed at exit) instead of
    ``~/.config/Ultralytics``, so the settings file it creates on import lands there. What
    the import prints on stdout (the banner about that new settings file) is dropped, and
    its logger, which writes to stdout, is pointed at stderr: stdout stays the commands' JSON.
    Its font lookup (which would fetch Arial.ttf for plots) is replaced by a local-only one.
    """
    import contextlib
    import io
    import logging
    import sys

    os.environ.setdefault("YOLO_OFFLINE", "1")
    if "ultralytics" not in sys.modules and not os.environ.get("YOLO_CONFIG_DIR"):
        os.environ["YOLO_CONFIG_DIR"] = _private_config_dir()
    banner = io.StringIO()
    with contextlib.redirect_stdout(banner):
        import ultralytics as ul
    for handler in logging.getLogger("ultralytics").handlers:  # also when imported before us
        if isinstance(handler, logging.StreamHandler) and handler.stream in (banner, sys.stdout):
            handler.setStream(sys.stderr)
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.checks as checks
    import ultralytics.utils.plotting as plotting

    for mod in (checks, data_utils, plotting):
        if getattr(mod, "check_font", None) is not _local_font:
            mod.check_font = _local_font
    return ul


def _private_config_dir() -> str:
    """A new private temporary folder for ultralytics' settings, removed when Python exits."""
    import atexit
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="x2br-ultralytics-")
    atexit.register(shutil.rmtree, path, True)
    return path


def _local_font(font="Arial.ttf"):
    """ultralytics' check_font without the download: the font if it is on this machine, else None."""
    from matplotlib import font_manager
    from ultralytics.utils import USER_CONFIG_DIR

    file = USER_CONFIG_DIR / Path(font).name
    if file.exists():
        return file
    found = [f.fname for f in font_manager.fontManager.ttflist if font in f.fname]
    return found[0] if found else None


def build_model(variant: str = "yolov9t", nc: int = len(anatomy.BONES)):
    """A fresh (randomly initialised) ultralytics DetectionModel of a YOLOv9 variant.

    variant: one of VARIANTS; its yaml is read from the installed ultralytics package.
    nc: number of classes (45: class c is catalog label c + 1). Returns the model in train mode
    with ``model.names`` = {class: bone name}.
    """
    ultralytics()
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    cfg = variant_yaml(variant)
    spec = dict(yaml_model_load(cfg), nc=int(nc))
    model = DetectionModel(spec, nc=int(nc), verbose=False)
    model.names = class_names(nc)
    return model


def variant_yaml(variant: str) -> Path:
    """The architecture yaml of a YOLOv9 variant inside the installed ultralytics package."""
    cfg = Path(ultralytics().__file__).parent / "cfg" / "models" / "v9" / f"{variant}.yaml"
    if variant not in VARIANTS or not cfg.is_file():
        raise InputError(f"unknown YOLOv9 variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return cfg


def class_names(nc: int = len(anatomy.BONES)) -> dict[int, str]:
    """{class index: bone name}; class c is catalog label c + 1 (as the dataset's YOLO files)."""
    lut = anatomy.by_label()
    return {c: lut[c + 1].name for c in range(nc)}


@dataclass
class Detection:
    """One detected bone.

    label: catalog label (1..45); name: catalog name; confidence: in [0, 1];
    box_px: (u0, v0, u1, v1) in the network image's pixels (u = column, v = row,
    pixel centres at integers), the convention of ``builder.bone_boxes``.
    """

    label: int
    name: str
    confidence: float
    box_px: tuple[float, float, float, float]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["confidence"] = round(float(self.confidence), 5)
        d["box_px"] = [round(float(x), 3) for x in self.box_px]
        return d


def save_weights(out, model, record: dict) -> tuple[Path, Path]:
    """Write ``model``'s state dict as fp16 ``model.pt`` and its record ``model.json`` (atomic).

    out: folder (-> model.pt/model.json) or ``<name>.pt``. record: JSON-able fields, which must
    include ``variant`` and ``imgsz``. Returns (pt, json).
    """
    import torch

    pt, js = weight_paths(out)
    state = half_state_dict(model)
    names = class_names(len(model.names))
    card = dict(record)
    card.update(format=FORMAT, version=FORMAT_VERSION, weights_file=pt.name, dtype="float16", nc=len(names),
                names=[names[c] for c in range(len(names))], labels=[c + 1 for c in range(len(names))])
    return write_with_record(pt, lambda tmp: torch.save(state, tmp), js, card)


def read_record(path) -> dict:
    """The checked record of a detector weights file; WeightsError naming the file otherwise."""
    pt, js = weight_paths(path)
    card = read_checked_record(pt, js, FORMAT, "detector weights", HINT)
    lut = anatomy.by_label()
    for name, label in zip(card.get("names", []), card.get("labels", [])):
        if label not in lut or lut[label].name != name:
            raise WeightsError(f"detector weights {pt} were trained for another bone catalog "
                               f"(class {name!r} -> label {label}); {HINT}")
    return card


class Detector:
    """A loaded bone detector (lifecycle: load once, detect on many films).

    weights: folder, .pt or .json (default: the shipped ``Resources/Models/yolo``).
    device: ``auto`` | ``cpu`` | ``cuda[:N]``. ``info``: JSON-able model facts;
    ``timings_s``: the stages of the last ``detect`` call. test_time: ``detect`` runs the
    test-time passes of :mod:`.test_time` unless told otherwise (True: all of ``PASSES``, or a
    tuple of their names). ``last_passes``: what the last ``detect`` with test-time passes did
    ({"passes": [names], "bones_by_pass": {name: bones}, "bones_kept": bones}).
    """

    def __init__(self, weights=None, device="auto", test_time=False):
        import torch

        from ..devices import resolve_device

        pt, js = weight_paths(weights if weights is not None else DEFAULT_WEIGHTS)
        t0 = time.perf_counter()
        card = read_record(pt)
        self.device = resolve_device(device)
        try:
            model = build_model(card["variant"], int(card["nc"]))
            state = torch.load(pt, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise WeightsError(f"detector weights {pt} do not load into the recorded architecture ({e}); "
                               f"{HINT}") from None
        self.model = model.float().fuse(verbose=False).eval().to(self.device)
        self.imgsz = int(card["imgsz"])
        self.labels = [int(x) for x in card["labels"]]
        self.record = card
        self.info = {"name": "yolo", "variant": card["variant"], "imgsz": self.imgsz, "weights": str(pt),
                     "sha256": card["sha256"], "device": str(self.device)}
        self.timings_s = {"load": time.perf_counter() - t0}
        self.last_passes: dict = {}
        from .test_time import passes

        self.test_time = passes(test_time)
        self.info["test_time"] = list(self.test_time)

    def detect(self, image: np.ndarray, conf: float = 0.25, iou: float = 0.5, test_time=None) -> list[Detection]:
        """Bones on one network image, at most one per bone (its most confident box).
        test_time: run passes of :mod:`.test_time` (True: all; or a tuple of names) and keep each
        bone's most confident box where it fits the frontal layout (``test_time.keep_consistent``;
        None: the detector's own setting); otherwise one plain pass (``_detect_once``).
        """
        from . import test_time as tt

        names = self.test_time if test_time is None else tt.passes(test_time)
        if not names:
            return self._detect_once(image, conf, iou, self.imgsz)

        img = np.asarray(image)
        if img.ndim != 2 or min(img.shape) < 8 or not np.isfinite(img).all():
            raise InputError(f"detector input must be a finite (H, W) image of at least 8 px, got shape {img.shape}")
        per_pass, total = [], {}
        for name in names:
            per_pass.append(self._detect_once(tt.view(img, name), conf, iou, tt.network_size(self.imgsz, name)))
            for k, v in self.timings_s.items():
                total[k] = total.get(k, 0.0) + v
        self.timings_s = total
        plain = per_pass[names.index("plain")] if "plain" in names else []
        kept = tt.keep_consistent(plain, tt.merge(per_pass))
        self.last_passes = {"passes": list(names), "bones_by_pass": {n: len(d) for n, d in zip(names, per_pass)},
                            "bones_kept": len(kept)}
        return kept

    def _detect_once(self, image: np.ndarray, conf: float, iou: float, imgsz: int) -> list[Detection]:
        """One pass of the network on one network image letterboxed to imgsz.

        image: (H, W) float32 in [0, 1] (``to_network_input``), quantised to 8-bit grey exactly
        as the dataset's PNGs (``write_yolo``), then letterboxed to ``imgsz`` (a no-op for the
        usual 256 x 256) and given to the network as 3 equal channels. conf: minimum
        confidence; iou: class-wise NMS threshold (before keeping one box per class).
        Returns detections sorted by label.
        """
        import torch
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import scale_boxes

        if not (0.0 <= conf <= 1.0 and 0.0 <= iou <= 1.0):
            raise InputError(f"conf and iou must be in [0, 1], got conf={conf}, iou={iou}")
        t0 = time.perf_counter()
        x, lb_shape = self._network_tensor(image, imgsz)
        h, w = np.asarray(image).shape
        t1 = time.perf_counter()
        with torch.inference_mode():
            out = self.model(x)
        pred = out[0] if isinstance(out, (list, tuple)) else out
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        rows = non_max_suppression(pred, conf_thres=conf, iou_thres=iou, max_det=300, nc=len(self.labels))[0]
        rows = rows[rows[:, 4].argsort(descending=True)]
        rows[:, :4] = scale_boxes(lb_shape, rows[:, :4], (h, w))  # pixel edges of the input image
        lut = anatomy.by_label()
        best: dict[int, Detection] = {}
        for x0, y0, x1, y1, score, cls in rows.cpu().numpy().tolist():
            label = self.labels[int(cls)]
            if label in best:
                continue
            box = (max(x0, 0.0) - 0.5, max(y0, 0.0) - 0.5, min(x1, w) - 0.5, min(y1, h) - 0.5)
            best[label] = Detection(label, lut[label].name, float(score), tuple(float(v) for v in box))
        t3 = time.perf_counter()
        self.timings_s = {"preprocess": t1 - t0, "network": t2 - t1, "postprocess": t3 - t2, "total": t3 - t0}
        return [best[k] for k in sorted(best)]

    def _network_tensor(self, image: np.ndarray, imgsz: int):
        """(1, 3, imgsz, imgsz) tensor on the detector's device and the letterboxed shape: the (H, W)
        image in [0, 1] quantised to 8-bit grey exactly as the dataset's PNGs (``write_yolo``),
        letterboxed to ``imgsz`` (a no-op for the usual 256 x 256), 3 equal channels."""
        import torch
        from ultralytics.data.augment import LetterBox

        img = np.asarray(image)
        if img.ndim != 2 or min(img.shape) < 8 or not np.isfinite(img).all():
            raise InputError(f"detector input must be a finite (H, W) image of at least 8 px, got shape {img.shape}")
        u8 = np.round(np.clip(img.astype(np.float32), 0, 1) * 255).astype(np.uint8)
        lb = LetterBox(new_shape=(imgsz, imgsz), auto=False, stride=32)(image=np.repeat(u8[..., None], 3, 2))
        x = torch.from_numpy(np.ascontiguousarray(lb.transpose(2, 0, 1)))[None].to(self.device).float() / 255
        return x, lb.shape[:2]

    def embedding(self, image: np.ndarray, layers) -> np.ndarray:
        """The network's features of one network image: the outputs of the given layer indices,
        each averaged over the image (ultralytics' ``embed``), concatenated: (n,) float64."""
        import torch

        x, _ = self._network_tensor(image, self.imgsz)
        with torch.inference_mode():
            out = self.model.predict(x, embed=[int(i) for i in layers])
        return out[0].detach().cpu().double().numpy()

    def detect_radiograph(self, radiograph, conf: float = 0.25, iou: float = 0.5):
        """A radiograph file (any format ``read_radiograph`` takes) or a Radiograph ->
        (detections, network image (imgsz, imgsz) float32, its ProjectionGeometry)."""
        from ..io.radiograph import Radiograph, read_radiograph, to_network_input

        rad = radiograph if isinstance(radiograph, Radiograph) else read_radiograph(radiograph)
        image, geom = to_network_input(rad, (self.imgsz, self.imgsz))
        return self.detect(image, conf=conf, iou=iou), image, geom
