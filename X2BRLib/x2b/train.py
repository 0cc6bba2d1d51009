"""Training of X2B on dataset shards (single process, CPU/GPU, or DDP via torchrun).

Run (one GPU)::

    python -m X2BRLib.x2b.train --data /path/shards --out runs/x2b_atto --encoder atto

Several GPUs of one host: ``torchrun --nproc_per_node=4 -m X2BRLib.x2b.train ...``
(``--batch-size`` is per process). ``--resume`` continues from ``{out}/last.pt``.

Loss: class-weighted cross-entropy over background + 45 bones (background
weight ``bg_weight``) plus ``bce_weight`` x binary cross-entropy of the
any-bone logit (log sum_k>0 p_k - log p_0), the quantity MISE thresholds.

Validation each epoch (rank 0):
* per-point metrics on every val case's (fixed) point subset: val_loss, mean
  class IoU over the bones present (``val_point_miou``) and all-bone IoU
  (``val_point_bone_iou``);
* volumetric all-bone IoU (``val_vol_bone_iou``) and mean per-bone IoU
  (``val_vol_bone_miou``, :func:`X2BRLib.metrics.iou_summary`) on the first
  ``val_cases`` cases through the real reconstruction path (encode once, MISE
  from max(4 mm, val_voxel_mm) down to ``val_voxel_mm``) against ``gt_labels``
  block-reduced to that grid (majority for bone; per-bone needs
  ``val_voxel_mm`` equal to the dataset's ``gt_voxel_mm``, else it is NaN), and
  their mean ``val_vol_score``: the held-out test reports exactly these two
  quantities, so ``--best-metric val_vol_score`` keeps the checkpoint that is
  best at what is measured (per-point IoU, the old default, peaked some 25
  epochs before volumetric IoU did in the v2 run).

Two views (``--views 2``, a dataset built with ``--lateral``): each case of a batch
keeps its lateral film with probability 1 - ``lat_dropout`` (has_lat = 0 otherwise),
so one set of weights serves PA alone and PA + lateral. Validation then reports
every metric above for PA alone (the columns above) and for PA + lateral (the same
names + ``_lat``), and ``val_vol_score_both``, the mean of ``val_vol_score`` and
``val_vol_score_lat`` (a ``--best-metric`` that weighs both uses alike).

Outputs in ``out_dir``: ``last.pt`` (model, optimiser, scheduler, scaler,
epoch, best, history), ``best.pt`` (model of the best ``best_metric``),
``log.csv``, ``curves.png``. :func:`export_weights` turns a checkpoint into the
fp16 weights + record that ``x2br`` ships (see weights.py).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from ..errors import InputError
from ..io.atomic import atomic_write
from ..metrics import iou_summary
from .data import ShardDataset, read_index
from .mise import extract_labels
from .model import FUSIONS, X2BNet, bone_logit, make_decode_fn

NORMALISATION = ("image: (H, W) float in [0, 1], bone-bright, as the dataset shards' `image` "
                 "(X2BRLib.dataset film normalisation)")
VAL_KEYS = ["val_loss", "val_point_miou", "val_point_bone_iou", "val_vol_bone_iou", "val_vol_bone_miou",
            "val_vol_score"]
COLUMNS = (["epoch", "train_loss", "train_ce", "train_bce"] + VAL_KEYS + [k + "_lat" for k in VAL_KEYS]
           + ["val_vol_score_both", "lr", "time_s"])


@dataclass
class TrainConfig:
    data_root: str
    out_dir: str
    encoder: str = "atto"           # atto | femto | pico | a timm ConvNeXt name
    epochs: int = 100
    batch_size: int = 8             # per process
    lr: float = 5e-4                # AdamW peak; linear warm-up then cosine to lr/100
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    n_points: int = 4096            # query points per case per step
    amp: str = "auto"               # auto | bf16 | fp16 | off (CUDA only)
    num_workers: int = 4
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    resume: bool = False
    seed: int = 0
    hidden: int = 128
    n_blocks: int = 4
    feat_dim: int = 64
    pos_freqs: int = 6
    hires: int = 0                  # channels of the full-resolution branch (0 = none)
    bg_weight: float = 0.2
    bce_weight: float = 1.0
    augment: bool = True
    grad_clip: float = 1.0
    train_split: str = "train"
    val_split: str = "val"
    val_cases: int = 4              # cases of the volumetric IoU (0 = skip)
    val_voxel_mm: float = 4.0
    max_train_cases: int | None = None
    max_val_cases: int | None = None
    best_metric: str = "val_point_miou"
    max_minutes: float | None = None  # stop (resumably) after the epoch that passes this wall time
    init_weights: str | None = None   # start a new run from shipped/exported weights (fine-tuning)
    views: int = 1                  # 2: PA + lateral (needs a dataset built with --lateral)
    fusion: str = "mean"            # mean | max | concat: how the two views' features are fused
    lat_dropout: float = 0.5        # per case and step, probability that the lateral is withheld


def _dist_setup(cfg: TrainConfig):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and cfg.device != "cpu"
        dist.init_process_group("nccl" if use_cuda else "gloo")
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return torch.device("cuda", local), dist.get_rank(), world
        return torch.device("cpu"), dist.get_rank(), world
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), 0, 1
    return torch.device(cfg.device), 0, 1


def _amp_dtype(cfg: TrainConfig, device: torch.device):
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if cfg.amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _loss(logits, labels, class_w, bce_weight):
    logits = logits.float().reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1)
    ce = F.cross_entropy(logits, labels, weight=class_w)
    bce = F.binary_cross_entropy_with_logits(bone_logit(logits), (labels > 0).float())
    return ce + bce_weight * bce, ce, bce


def _atomic_save(obj, path: Path):
    atomic_write(path, lambda tmp: torch.save(obj, tmp), overwrite=True)


def _block_bone_mask(gt: np.ndarray, shape) -> np.ndarray:
    """GT label volume -> all-bone mask on a coarser box grid of ``shape`` (majority per block,
    or nearest sampling when the grids do not nest)."""
    k = [g // s for g, s in zip(gt.shape, shape)]
    if all(kk >= 1 and kk * s == g for kk, s, g in zip(k, shape, gt.shape)):
        b = (gt > 0).reshape(shape[0], k[0], shape[1], k[1], shape[2], k[2])
        return b.mean((1, 3, 5)) > 0.5
    idx = [np.minimum(((np.arange(s) + 0.5) * g / s).astype(int), g - 1) for s, g in zip(shape, gt.shape)]
    return gt[np.ix_(*idx)] > 0


def _point_metrics(model, loader, device, amp_dtype, class_w, bce_weight, lateral: bool) -> dict:
    """val_loss, val_point_miou, val_point_bone_iou over a loader's (fixed) point subsets."""
    C = model.config["num_classes"]
    conf = torch.zeros(C * C, dtype=torch.int64, device=device)
    tot, n = 0.0, 0
    for batch in loader:
        b = {k: v.to(device) for k, v in batch.items()}
        lat = (b["image_lat"], b["P_lat"], b["has_lat"]) if lateral else ()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(b["image"], b["P"], b["iso"], b["box_scale"], b["points"], *lat)
        loss, _, _ = _loss(logits, b["labels"], class_w, bce_weight)
        tot, n = tot + float(loss) * len(batch["index"]), n + len(batch["index"])
        pred = logits.float().argmax(-1).reshape(-1)
        conf += torch.bincount(b["labels"].reshape(-1) * C + pred, minlength=C * C)
    conf = conf.reshape(C, C).double().cpu().numpy()
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    bones = union[1:] > 0
    miou = float((inter[1:][bones] / union[1:][bones]).mean()) if bones.any() else float("nan")
    tp = conf[1:, 1:].sum()
    bone_iou = float(tp / max(tp + conf[0, 1:].sum() + conf[1:, 0].sum(), 1))
    return {"val_loss": tot / max(n, 1), "val_point_miou": miou, "val_point_bone_iou": bone_iou}


def _volume_metrics(model, ds: ShardDataset, cfg, device, amp_dtype, lateral: bool) -> dict:
    """val_vol_bone_iou, val_vol_bone_miou, val_vol_score on the first cfg.val_cases cases."""
    out = {"val_vol_bone_iou": float("nan"), "val_vol_bone_miou": float("nan"), "val_vol_score": float("nan")}
    ious, mious = [], []
    for i in range(min(cfg.val_cases, len(ds))):
        d = ds.load(i)
        g = d["geometry"]
        lat = dict(lateral=d["image_lat"].astype(np.float32), lateral_geometry=d["geometry_lat"]) if lateral else {}
        fn = make_decode_fn(model, d["image"].astype(np.float32), g, device, amp_dtype, **lat)
        pred, _ = extract_labels(fn, g, cfg.val_voxel_mm, max(4.0, cfg.val_voxel_mm), batch_points=65536)
        gt = _block_bone_mask(d["gt_labels"], pred.shape)
        p = pred > 0
        ious.append((p & gt).sum() / max((p | gt).sum(), 1))
        if pred.shape == d["gt_labels"].shape:
            mious.append(iou_summary(pred, d["gt_labels"])["iou_mean_per_bone"])
    if ious:
        out["val_vol_bone_iou"] = float(np.mean(ious))
    if mious:
        out["val_vol_bone_miou"] = float(np.mean(mious))
        out["val_vol_score"] = (out["val_vol_bone_iou"] + out["val_vol_bone_miou"]) / 2
    return out


@torch.no_grad()
def validate(model: X2BNet, ds: ShardDataset, cfg: TrainConfig, device, amp_dtype, class_w) -> dict:
    """Per-point loss / class IoU on all val cases, volumetric all-bone IoU on a few (see module doc);
    a two-view model on a lateral dataset: both for PA alone and (keys + "_lat") for PA + lateral."""
    model.eval()
    loader = DataLoader(ds, batch_size=cfg.batch_size, num_workers=0)
    out = _point_metrics(model, loader, device, amp_dtype, class_w, cfg.bce_weight, False)
    out.update(_volume_metrics(model, ds, cfg, device, amp_dtype, False))
    if model.views == 2 and ds.lateral:
        lat = _point_metrics(model, loader, device, amp_dtype, class_w, cfg.bce_weight, True)
        lat.update(_volume_metrics(model, ds, cfg, device, amp_dtype, True))
        out.update({k + "_lat": v for k, v in lat.items()})
        out["val_vol_score_both"] = (out["val_vol_score"] + out["val_vol_score_lat"]) / 2
    model.train()
    return out


def _write_log(out: Path, history: list[dict]):
    def write_csv(tmp):
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, COLUMNS, extrasaction="ignore")
            w.writeheader()
            for row in history:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    atomic_write(out / "log.csv", write_csv, overwrite=True)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # plotting is a convenience; the CSV is the record
        print("matplotlib not installed: curves.png not written", flush=True)
        return

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax0, ax1 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ep = [r["epoch"] for r in history]
    for key in ("train_loss", "val_loss"):
        ax0.plot(ep, [r.get(key, float("nan")) for r in history], marker=".", label=key)
    for key in ("val_point_miou", "val_point_bone_iou", "val_vol_bone_iou", "val_vol_bone_miou",
                "val_vol_bone_iou_lat", "val_vol_bone_miou_lat"):
        if not any(key in r for r in history):
            continue
        ax1.plot(ep, [r.get(key, float("nan")) for r in history], marker=".", label=key)
    ax0.set_xlabel("epoch"), ax0.set_ylabel("loss"), ax0.legend()
    ax1.set_xlabel("epoch"), ax1.set_ylabel("IoU"), ax1.set_ylim(0, 1), ax1.legend()
    fig.tight_layout()
    atomic_write(out / "curves.png", lambda tmp: fig.savefig(tmp, format="png"), overwrite=True)


def train(config: TrainConfig) -> dict:
    """Train (or resume) X2B; returns the last history row. Only rank 0 writes files."""
    cfg = config
    for bad, text in ((cfg.views not in (1, 2), f"--views must be 1 or 2, got {cfg.views}"),
                      (cfg.fusion not in FUSIONS, f"--fusion must be one of {', '.join(FUSIONS)}, got {cfg.fusion!r}"),
                      (not 0.0 <= cfg.lat_dropout <= 1.0, f"--lat-dropout is a probability, got {cfg.lat_dropout}")):
        if bad:
            raise InputError(text)
    if cfg.views == 2 and not read_index(cfg.data_root).get("lateral", False):
        raise InputError("--views 2 needs a dataset with lateral films (x2br build-dataset --lateral)",
                         Path(cfg.data_root) / "dataset.json")
    device, rank, world = _dist_setup(cfg)
    out = Path(cfg.out_dir)
    if (out / "last.pt").exists() and not cfg.resume:  # every rank: none may wait for a failed one
        raise InputError("already holds a training run; pass --resume to continue it or "
                         "choose another --out", out / "last.pt")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + rank)
    index = read_index(cfg.data_root)
    train_ds = ShardDataset(cfg.data_root, cfg.train_split, cfg.n_points, cfg.augment, cfg.seed,
                            cfg.max_train_cases, resample=True)
    val_ds = ShardDataset(cfg.data_root, cfg.val_split, cfg.n_points, False, cfg.seed,
                          cfg.max_val_cases, resample=False)
    if len(train_ds) == 0:
        raise InputError(f"split {cfg.train_split!r} is empty", Path(cfg.data_root) / "dataset.json")
    two_view = cfg.views == 2
    h, w = train_ds[0]["image"].shape[-2:]
    model = X2BNet(cfg.encoder, hidden=cfg.hidden, n_blocks=cfg.n_blocks, feat_dim=cfg.feat_dim,
                   pos_freqs=cfg.pos_freqs, hires=cfg.hires, views=cfg.views, fusion=cfg.fusion).to(device)
    sampler = DistributedSampler(train_ds, world, rank, shuffle=True, seed=cfg.seed) if world > 1 else None
    loader_kw = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, drop_last=len(train_ds) // world > cfg.batch_size,
                     pin_memory=device.type == "cuda")
    steps = max(1, math.ceil(len(train_ds) / world / cfg.batch_size)) * cfg.epochs
    warm = max(1, int(cfg.warmup_epochs * steps / cfg.epochs))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (
        0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    amp_dtype = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    class_w = torch.ones(model.config["num_classes"], device=device)
    class_w[0] = cfg.bg_weight
    start, best, history = 0, -math.inf, []
    resuming = cfg.resume and (out / "last.pt").exists()
    init = None  # what the run started from, recorded in every checkpoint and the exported record
    if cfg.init_weights and not resuming:
        init = _init_from_weights(model, cfg.init_weights, rank)
    if resuming:
        ck = torch.load(out / "last.pt", map_location=device, weights_only=True)
        init = ck.get("init_weights")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optim"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        start, best, history = int(ck["epoch"]), float(ck["best"]), list(ck["history"])
        if rank == 0:
            print(f"resuming {out / 'last.pt'} after epoch {start}")
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    meta = dict(arch=model.config, image_size=[int(w), int(h)], normalisation=NORMALISATION,
                config=asdict(cfg),
                dataset={k: index.get(k) for k in ("version", "gt_voxel_mm", "image_size", "lateral")},
                init_weights=init)
    row = history[-1] if history else {}
    t_start = time.time()
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        train_ds.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(train_ds, sampler=sampler, shuffle=sampler is None, **loader_kw)
        net.train()
        sums = torch.zeros(4, device=device)  # loss, ce, bce, count
        for batch in loader:
            b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            lat = ()
            if two_view:  # every step runs the lateral path (DDP: every parameter gets a gradient)
                keep = (torch.rand(len(b["has_lat"]), device=device) >= cfg.lat_dropout).float()
                lat = (b["image_lat"], b["P_lat"], b["has_lat"] * keep)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = net(b["image"], b["P"], b["iso"], b["box_scale"], b["points"], *lat)
            loss, ce, bce = _loss(logits, b["labels"], class_w, cfg.bce_weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            k = len(batch["index"])
            sums += torch.stack([loss.detach() * k, ce.detach() * k, bce.detach() * k,
                                 torch.tensor(float(k), device=device)])
        if world > 1:
            dist.all_reduce(sums)
        s = (sums[:3] / sums[3].clamp(min=1)).tolist()
        row = {"epoch": epoch + 1, "train_loss": s[0], "train_ce": s[1], "train_bce": s[2],
               "lr": float(sched.get_last_lr()[0])}
        if rank == 0:
            if len(val_ds):
                row.update(validate(model, val_ds, cfg, device, amp_dtype, class_w))
            row["time_s"] = time.time() - t0
            history.append(row)
            score = row.get(cfg.best_metric, float("nan"))
            score = -row["train_loss"] if score is None or not math.isfinite(score) else score
            if score > best:
                best = score
                _atomic_save(dict(model=model.state_dict(), epoch=epoch + 1, best=best, metrics=row, **meta),
                             out / "best.pt")
            _atomic_save(dict(model=model.state_dict(), optim=opt.state_dict(), scheduler=sched.state_dict(),
                              scaler=scaler.state_dict(), epoch=epoch + 1, best=best, history=history,
                              metrics=row, **meta), out / "last.pt")
            _write_log(out, history)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
        stop = cfg.max_minutes is not None and (time.time() - t_start) / 60 > cfg.max_minutes
        if world > 1:  # rank 0's clock decides, so every rank stops after the same epoch
            flag = torch.tensor([float(stop)], device=device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            if rank == 0:
                print(f"stopping after epoch {epoch + 1}: --max-minutes {cfg.max_minutes} reached; "
                      "continue with --resume", flush=True)
            break
    if world > 1:
        dist.destroy_process_group()
    return row


def export_weights(checkpoint, out_path, extra: dict | None = None, overwrite: bool = False):
    """Checkpoint (best.pt / last.pt, or a run folder: best.pt preferred) -> fp16 weights + record.

    out_path: folder or ``<name>.pt`` (see weights.save_weights); existing weights there are
    replaced only with overwrite (InputError naming the file otherwise). The record names the
    code that exports (code_commit, code_commit_from, code_sha256: :mod:`X2BRLib.provenance`).
    Returns (pt, json) paths.
    """
    from ..io.checked import refuse_existing_weights
    from ..provenance import code_provenance
    from .weights import save_weights

    refuse_existing_weights(out_path, overwrite)

    ck_path = Path(checkpoint)
    if ck_path.is_dir():
        ck_path = ck_path / "best.pt" if (ck_path / "best.pt").exists() else ck_path / "last.pt"
    if not ck_path.is_file():
        raise InputError("checkpoint not found", ck_path)
    ck = torch.load(ck_path, map_location="cpu", weights_only=True)
    model = X2BNet(**ck["arch"])
    model.load_state_dict(ck["model"])
    record = dict(image_size=ck["image_size"], normalisation=ck["normalisation"], training=ck["config"],
                  dataset=ck.get("dataset"), metrics=ck.get("metrics"), epochs_trained=ck["epoch"],
                  checkpoint=ck_path.name, init_weights=ck.get("init_weights"), **code_provenance())
    record.update(extra or {})
    return save_weights(out_path, model, record)


def _init_from_weights(model: X2BNet, path, rank: int = 0) -> dict:
    """Copy exported X2B weights (folder, .pt or .json; SHA-256 checked) into ``model``.
    The run may add decoder blocks (--n-blocks) or the full-resolution branch (--hires):
    it then starts computing exactly what the weights compute (``grow_from``).
    Returns what the run started from (path, sha256, architecture, epochs, data), for the record.
    InputError naming the weights when their architecture differs otherwise."""
    from .model import grow_from
    from .weights import load_model

    src = load_model(path, "cpu")
    try:
        grown = grow_from(model, src)
    except ValueError as e:
        raise InputError(f"--init-weights do not fit this run's architecture ({e}; weights -> run)", path) from None
    rec = src.record
    if rank == 0:
        print(f"initialised from {path} (sha256 {rec.get('sha256', '?')[:12]}...)"
              + ("; grown: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in grown.items()) if grown else ""),
              flush=True)
    return dict(path=str(path), sha256=rec.get("sha256"), architecture=rec.get("architecture"),
                epochs_trained=rec.get("epochs_trained"), training_data=(rec.get("training") or {}).get("data_root"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="x2br train", description="Train the X2B network on dataset shards.")
    p.add_argument("--data", dest="data_root", required=True, help="shard root (with dataset.json)")
    p.add_argument("--out", dest="out_dir", required=True, help="run folder (checkpoints, log.csv, curves.png)")
    p.add_argument("--export", default=None, help="after training, export best weights to this folder/.pt")
    p.add_argument("--overwrite", action="store_true", help="let --export replace existing weights")
    for f in fields(TrainConfig):
        if f.name in ("data_root", "out_dir"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            conv = {"int": int, "float": float, "str": str}.get(str(f.type).split(" ")[0], None)
            if conv is None:  # Optional[int]
                conv = int
            p.add_argument(flag, type=conv, default=f.default)
    return p


def main(argv=None) -> int:
    """CLI entry (``x2br train``); see ``--help``."""
    args = vars(_parser().parse_args(argv))
    export, overwrite = args.pop("export"), args.pop("overwrite")
    if export:
        from ..io.checked import refuse_existing_weights

        refuse_existing_weights(export, overwrite)  # before training, not after it
    cfg = TrainConfig(**args)
    train(cfg)
    if export and int(os.environ.get("RANK", "0")) == 0:
        pt, js = export_weights(cfg.out_dir, export, overwrite=overwrite)
        print(f"exported {pt} and {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
