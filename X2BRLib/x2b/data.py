"""Torch dataset over the X2BR dataset shards (built by ``X2BRLib.dataset``).

Shard layout: ``{root}/dataset.json`` ({"version", "splits": {split: [file
names]}, "image_size", "gt_voxel_mm", ...}) and ``{root}/{split}/case_XXXXX.npz``
with ``image`` (H, W) float16 in [0, 1], ``geometry`` (JSON string of the
ProjectionGeometry), ``points_lps_mm`` (N, 3), ``point_labels`` (N,) uint8,
``gt_labels`` (X, Y, Z) uint8 on ``geometry.box_grid(gt_voxel_mm)``.

Each item: dict with image (1, H, W) float32, P (3, 4) float32 projection
matrix, iso (3,) float32 isocentre LPS mm, box_scale () float32 (largest box
side, mm), points (n_points, 3) float32 LPS mm, labels (n_points,) int64,
index () int64. A dataset whose ``dataset.json`` says ``"lateral": true`` (built with
``--lateral``: every case also holds ``image_lat`` and ``geometry_lat``, the lateral film of
the same virtual patient and the camera the network is given for it) adds image_lat (1, H, W)
float32, P_lat (3, 4) float32 and has_lat () float32 (1.0; training drops it per case).

Points: a random subset of ``n_points`` of the shard's points, drawn anew
every epoch for training (call :meth:`ShardDataset.set_epoch`) and fixed (seeded
by case index) for validation. The half-uniform / half-near-surface mix of the
shard is preserved in expectation.

Image augmentation (``augment=True``, training only; the geometric
augmentation — pose, scale, view — comes from the dataset builder): the DRRs
are "clean", real films went through a vendor's processing chain, so we
randomise intensity only: gamma (0.7-1.5), contrast (x0.75-1.25) and
brightness (+-0.1), Gaussian blur (sigma 0-1.2 px, p=0.3), unsharp masking /
edge enhancement (p=0.3), Gaussian noise (sigma 0-0.03, p=0.5), then clip to
[0, 1]. No inversion (films are bone-bright at this point) and no geometric
change (it would break the image/geometry correspondence).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from ..errors import InputError
from ..geometry import ProjectionGeometry


def read_index(root) -> dict:
    """``dataset.json`` of a shard root; InputError naming the file when missing/unreadable."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise InputError("dataset index not found (build it with `x2br dataset`)", path)
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise InputError(f"unreadable dataset index ({e})", path) from None


def augment_image(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Intensity-only augmentation of a (H, W) film in [0, 1] (see module doc)."""
    x = np.clip(img.astype(np.float32), 0.0, 1.0)
    x = x ** np.float32(np.exp(rng.uniform(np.log(0.7), np.log(1.5))))
    x = (x - 0.5) * rng.uniform(0.75, 1.25) + 0.5 + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.3:
        x = ndimage.gaussian_filter(x, rng.uniform(0.0, 1.2))
    if rng.random() < 0.3:
        blur = ndimage.gaussian_filter(x, rng.uniform(1.0, 4.0))
        x = x + rng.uniform(0.2, 1.0) * (x - blur)
    if rng.random() < 0.5:
        x = x + rng.normal(0.0, rng.uniform(0.0, 0.03), x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


class ShardDataset(Dataset):
    """One split of a shard root.

    root: folder with dataset.json; split: e.g. "train" / "val".
    n_points: points per item (None = all of the shard's points).
    augment: intensity augmentation of the image (training only).
    seed: base of every random draw; items are reproducible given (seed, epoch, index).
    resample: new point subsets every epoch (default: split == "train"); else fixed.
    max_cases: use only the first cases of the split.
    """

    def __init__(self, root, split: str, n_points: int | None = 4096, augment: bool = False,
                 seed: int = 0, max_cases: int | None = None, resample: bool | None = None):
        self.root = Path(root)
        self.index = read_index(root)
        splits = self.index.get("splits", {})
        if split not in splits:
            raise InputError(f"no split {split!r} in the dataset (has {sorted(splits)})",
                             self.root / "dataset.json")
        names = list(splits[split])[:max_cases]
        self.files = [self.root / split / n for n in names]
        self.split, self.n_points, self.augment, self.seed = split, n_points, augment, int(seed)
        self.epoch = 0
        self.resample = (split == "train") if resample is None else bool(resample)
        self.gt_voxel_mm = float(self.index.get("gt_voxel_mm", 0) or 0)
        self.lateral = bool(self.index.get("lateral", False))

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """New point subsets and augmentations for a new epoch (training)."""
        self.epoch = int(epoch)

    def load(self, i: int, keys=None) -> dict:
        """The raw shard of case i as a dict of numpy arrays (+ ``geometry`` object).

        keys: only these arrays (npz members are decompressed one by one; training
        items skip the large ``gt_labels``); ``geometry`` is always read, and
        ``geometry_lat`` (then a ProjectionGeometry too) whenever the case has it.
        """
        path = self.files[i]
        try:
            with np.load(path, allow_pickle=False) as z:
                names = z.files if keys is None else [
                    k for k in z.files if k in set(keys) | {"geometry", "geometry_lat"}]
                d = {k: z[k] for k in names}
        except (OSError, ValueError) as e:
            raise InputError(f"unreadable dataset case ({e})", path) from None
        missing = sorted(set(keys or ()) - set(d)) + ([] if "geometry" in d else ["geometry"])
        if missing:
            raise InputError(f"dataset case lacks {missing}", path)
        d["geometry"] = ProjectionGeometry.from_json(str(d["geometry"]))
        if "geometry_lat" in d:
            d["geometry_lat"] = ProjectionGeometry.from_json(str(d["geometry_lat"]))
        return d

    def __getitem__(self, i: int) -> dict:
        keys = ("image", "points_lps_mm", "point_labels") + (("image_lat", "geometry_lat") if self.lateral else ())
        d = self.load(i, keys)
        g = d["geometry"]
        rng = np.random.default_rng([self.seed, self.epoch if self.resample else 0, i])
        img = d["image"].astype(np.float32)
        if img.shape[::-1] != tuple(g.size_px):
            raise InputError(f"image is {img.shape[::-1]} px, geometry says {g.size_px}", self.files[i])
        if self.augment:
            img = augment_image(img, rng)
        lat = {}
        if self.lateral:
            g_lat, img_lat = d["geometry_lat"], d["image_lat"].astype(np.float32)
            if img_lat.shape[::-1] != tuple(g_lat.size_px):
                raise InputError(f"image_lat is {img_lat.shape[::-1]} px, geometry_lat says {g_lat.size_px}",
                                 self.files[i])
            if self.augment:  # its own draw: the two films of a study went through the chain apart
                img_lat = augment_image(img_lat, rng)
            lat = {"image_lat": torch.from_numpy(np.ascontiguousarray(img_lat[None])),
                   "P_lat": torch.from_numpy(g_lat.projection_matrix().astype(np.float32)),
                   "has_lat": torch.tensor(1.0)}
        pts = d["points_lps_mm"].astype(np.float32)
        lab = d["point_labels"].astype(np.int64)
        if self.n_points is not None:
            sel = rng.choice(len(pts), self.n_points, replace=len(pts) < self.n_points)
            pts, lab = pts[sel], lab[sel]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img[None])),
            "P": torch.from_numpy(g.projection_matrix().astype(np.float32)),
            "iso": torch.tensor(g.isocenter_lps_mm, dtype=torch.float32),
            "box_scale": torch.tensor(float(max(g.box_size_mm)), dtype=torch.float32),
            "points": torch.from_numpy(pts),
            "labels": torch.from_numpy(lab),
            "index": torch.tensor(i),
            **lat,
        }
