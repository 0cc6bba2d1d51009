"""``x2br build-dataset``: virtual patients -> training shards.

Layout of a dataset folder (all paths relative to it)::

    dataset.json                 manifest: version, sources, sizes, splits -> case files
    <split>/case_XXXXX.npz       one case (keys below), split in train | val | test
    yolo/images/<split>/case_XXXXX.png, yolo/labels/<split>/case_XXXXX.txt, yolo/data.yaml

Case keys: ``image`` (H, W) float16 [0, 1] bone bright; ``geometry`` JSON of the
:class:`ProjectionGeometry`; ``points_lps_mm`` (N, 3) float32; ``point_labels``
(N,) uint8 (catalog labels, 0 background); ``gt_labels`` (X, Y, Z) uint8 on
``geometry.box_grid(gt_voxel_mm)``; ``gt_voxel_mm``; ``boxes`` (K, 5) float32
(label, u0, v0, u1, v1 in px); ``params`` JSON of the variation and film;
``patient`` the name of the CT the case was made from.

With ``lateral`` (``x2br build-dataset --lateral``) each case also holds a lateral film of the
same virtual patient (lateral.py): ``image_lat`` (H, W) float16; ``geometry_lat`` JSON of the
geometry the network is given (without the between-exposure error); ``boxes_lat`` (K, 5)
from the geometry the film was rendered with; ``params`` gains ``film_lat`` and
``lat_error`` (``offset_si_mm``, ``magnification``; zero error on test cases). The YOLO
export gets ``case_XXXXX_lat.png`` and its labels; the manifest ``"lateral": true``. The
lateral draws use their own stream ``[seed, SPLIT_ID[s], i, 2]``: the PA film, points and
labels of a case are the same with and without ``lateral``.

Several patients (labelled CTs): case ``i`` of a split comes from the split's
patients in turn, ``patients[i % n]`` (names sorted), so cases spread evenly over
them. ``test_patients`` are held out at the patient level: their cases go to the
test split only, and train and val hold only the other patients; without them the
test split draws from every patient (held out by seed and variation only). The
manifest records ``patients``, ``test_patients`` and, per split, ``case_patients``
(case file -> patient).

Seeds: case ``i`` of split ``s`` uses ``np.random.default_rng([seed, SPLIT_ID[s], i])``;
train, val and test therefore never share a seed, and the test split also
draws held-out variation (see virtual.py). Resumable: finished cases are kept,
each file is written to a temporary name and renamed.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import anatomy
from ..drr import hu_to_mu, render_drr
from ..geometry import ProjectionGeometry
from ..io.atomic import atomic_write, atomic_write_text
from ..io.ct import LabelledCT
from .film import default_film, develop, sample_film
from .streams import BLEND, LATERAL, case_stream
from .virtual import AnatomySource, identity_variation, sample_variation

DATASET_VERSION = 7  # 2: DRR integrates the whole body (no clipping at the detector plane); 3: clinical film model; 4: bedside (portable) films; 5: their scatter capped (SPR 0.1-1.0, was 0.2-2.0); 6: detector v3's gaps: flat portable films under dense leads, spinal implants, --framing, boxes of bones mostly off the film dropped; 7: --scoliosis
SPLIT_ID = {"train": 0, "val": 1, "test": 2}
# a bone with under half its projected voxels on the film gets no box ("mostly outside": framed
# films cut bones at the field's edge; before version 6 every bone with >= 2 px on the film had one)
BOX_MIN_INSIDE = 0.5
# settings a manifest records only when they differ from these (older manifests stay valid as they are)
OPTIONAL_SETTINGS = (("blend", 0.0), ("lateral", False), ("framing", 0.0), ("scoliosis", 0.0))


@dataclass
class BuildConfig:
    """out: dataset folder. counts: cases per split. image_size: radiograph px (square).
    gt_voxel_mm: ground-truth / DRR grid spacing. n_points: occupancy samples per case
    (half uniform in the box, half within ``surface_sigma_mm`` of bone surfaces)."""

    out: str
    counts: dict = field(default_factory=lambda: {"train": 800, "val": 40, "test": 60})
    image_size: int = 256
    gt_voxel_mm: float = 2.0
    n_points: int = 65536
    surface_sigma_mm: float = 3.0
    drr_step_mm: float = 1.0
    seed: int = 0
    workers: int = 1
    device: str = "cpu"
    progress: bool = True
    test_patients: tuple = ()  # patients whose cases go to the test split only
    part: tuple = (0, 1)  # (k, n): build only cases whose index % n == k (n processes, e.g. one per GPU)
    blend: float = 0.0    # probability that a train/val case moves toward another patient (blend.py)
    lateral: bool = False  # also render each case's lateral film (lateral.py)
    framing: float = 0.0  # probability that a train/val case's frontal film is magnified and off-centre (framing.py)
    scoliosis: float = 0.0  # probability that a train/val case's spine is C or S shaped (scoliosis.py)


def case_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return case_stream(seed, SPLIT_ID[split], index)


def make_case(src: AnatomySource, cfg: BuildConfig, split: str, index: int, clean: bool = False) -> dict:
    """Build one virtual patient's training case (see module docstring for keys).

    clean: identity anatomy and a clean default PA film (for the sample data and tests).
    """
    rng = case_rng(cfg.seed, split, index)
    t0 = time.perf_counter()
    held_out = split == "test" and rng.uniform() < 0.5
    params = identity_variation() if clean else sample_variation(rng, held_out)
    if cfg.blend > 0 and split != "test" and src.others and not clean:
        from dataclasses import replace

        from .blend import draw_toward

        # a separate stream: the case's other draws stay what they are without blending
        toward, t = draw_toward(case_stream(cfg.seed, SPLIT_ID[split], index, BLEND), src.name,
                                src.others, cfg.blend)
        params = replace(params, toward=toward, toward_t=t)
    if cfg.scoliosis > 0 and split != "test" and not clean:
        from dataclasses import replace

        from .scoliosis import draw_scoliosis, spine_of

        marked = draw_scoliosis(cfg.seed, SPLIT_ID[split], index, cfg.scoliosis)
        if marked:
            params = replace(params, marked_scoliosis=spine_of(src).describe(marked))
    # flat films and implants (dataset version 6) for train and val: test films stay what version 5 drew
    film = default_film("PA") if clean else sample_film(rng, gaps=split != "test")
    if cfg.framing > 0 and split != "test" and not clean:
        from .framing import draw_framing

        film.framing = draw_framing(cfg.seed, SPLIT_ID[split], index, cfg.framing)
    geom = film.geometry((cfg.image_size, cfg.image_size))
    gt, mu, ijk_to_lps = warped_volumes(src, geom, params, cfg.gt_voxel_mm)
    shape, origin, spacing = geom.box_grid(cfg.gt_voxel_mm)
    dev = src.device
    iso = torch.tensor(geom.isocenter_lps_mm, dtype=torch.float32, device=dev)
    t_warp = time.perf_counter()
    # the whole body is imaged even where a large virtual patient crosses the detector plane
    L = render_drr(mu, ijk_to_lps, geom, step_mm=cfg.drr_step_mm, device=dev,
                   clip_to_detector=False)[0].cpu().numpy()
    t_drr = time.perf_counter()
    image = develop(L, film)
    # occupancy samples: uniform in the box + near bone surfaces (Occupancy Networks' scheme)
    n_uni = cfg.n_points // 2
    lo, hi = geom.box_bounds_lps_mm()
    uni = rng.uniform(lo, hi, (n_uni, 3))
    gt_np = gt.cpu().numpy()
    surf_idx = _surface_voxels(gt_np)
    pick = surf_idx[rng.integers(0, len(surf_idx), cfg.n_points - n_uni)] if len(surf_idx) else \
        np.zeros((0, 3), int)
    near = origin + pick * spacing + rng.normal(0, cfg.surface_sigma_mm, pick.shape)
    pts = np.concatenate([uni, near]).astype(np.float32)
    pts_t = torch.from_numpy(pts).to(dev)
    plab = src.sample_labels(src.warp(pts_t - iso, params)).cpu().numpy()
    boxes = bone_boxes(gt_np, origin, spacing, geom, min_inside=BOX_MIN_INSIDE)
    t_end = time.perf_counter()
    lat, lat_params = _lateral(cfg, split, index, clean, mu, ijk_to_lps, gt_np, origin, spacing, dev) \
        if cfg.lateral else ({}, {})
    t_lat = time.perf_counter()
    return {
        "image": image.astype(np.float16),
        "geometry": np.array(geom.to_json()),
        "points_lps_mm": pts,
        "point_labels": plab.astype(np.uint8),
        "gt_labels": gt_np.astype(np.uint8),
        "gt_voxel_mm": np.array(cfg.gt_voxel_mm),
        "boxes": boxes,
        "params": np.array(json.dumps({"anatomy": params.to_dict(), "film": film.to_dict(),
                                       "held_out": bool(held_out), "source": src.name,
                                       "split": split, "index": index, **lat_params})),
        "patient": np.array(src.name),
        "timings": np.array(json.dumps({"warp_s": t_warp - t0, "drr_s": t_drr - t_warp,
                                        "rest_s": t_end - t_drr,
                                        **({"lateral_s": t_lat - t_end} if cfg.lateral else {})})),
        **lat,
    }


def _lateral(cfg: BuildConfig, split: str, index: int, clean: bool, mu, ijk_to_lps, gt_np, origin, spacing,
             dev) -> tuple[dict, dict]:
    """The lateral film of a case from its warped volume: (npz keys, params keys); see lateral.py."""
    from .lateral import rendering_geometry, sample_lateral

    rng = case_stream(cfg.seed, SPLIT_ID[split], index, LATERAL)
    film, error = sample_lateral(rng, with_error=split != "test", clean=clean)
    assumed = film.geometry((cfg.image_size, cfg.image_size))
    real = rendering_geometry(assumed, error["offset_si_mm"], error["magnification"])
    L = render_drr(mu, ijk_to_lps, real, step_mm=cfg.drr_step_mm, device=dev,
                   clip_to_detector=False)[0].cpu().numpy()
    keys = {"image_lat": develop(L, film).astype(np.float16),
            "geometry_lat": np.array(assumed.to_json()),
            "boxes_lat": bone_boxes(gt_np, origin, spacing, real, min_inside=BOX_MIN_INSIDE)}
    return keys, {"film_lat": film.to_dict(), "lat_error": error}


def warped_volumes(src: AnatomySource, geom: ProjectionGeometry, params, voxel_mm: float):
    """Evaluate a virtual patient on ``geom.box_grid(voxel_mm)``.

    Returns (labels (X, Y, Z) uint8 torch, mu (Z, Y, X) float32 torch attenuation per mm,
    ijk_to_lps (4, 4) of the mu array). The DRR integrates this same grid.
    """
    dev = src.device
    shape, origin, spacing = geom.box_grid(voxel_mm)
    axes = [torch.arange(n, dtype=torch.float32, device=dev) * float(s) + float(o)
            for n, s, o in zip(shape, spacing, origin)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    iso = torch.tensor(geom.isocenter_lps_mm, dtype=torch.float32, device=dev)
    p_ct = src.warp(grid - iso, params)
    del grid
    lab = src.sample_labels(p_ct)
    hu = src.sample_hu(p_ct, params, lab)
    del p_ct
    mu = hu_to_mu(hu.reshape(shape).permute(2, 1, 0).contiguous())
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.diag(spacing)
    ijk_to_lps[:3, 3] = origin
    return lab.reshape(shape), mu, ijk_to_lps


def _surface_voxels(labels: np.ndarray) -> np.ndarray:
    """(M, 3) indices of bone voxels with a 6-neighbour of another label."""
    edge = np.zeros(labels.shape, bool)
    for ax in range(3):
        d = np.diff(labels, axis=ax) != 0
        sl_a = [slice(None)] * 3
        sl_b = [slice(None)] * 3
        sl_a[ax] = slice(0, -1)
        sl_b[ax] = slice(1, None)
        edge[tuple(sl_a)] |= d
        edge[tuple(sl_b)] |= d
    return np.argwhere(edge & (labels > 0))


def bone_boxes(gt: np.ndarray, origin, spacing, geom: ProjectionGeometry, min_px: float = 2.0,
               min_inside: float = 0.0) -> np.ndarray:
    """(K, 5) float32 rows (label, u0, v0, u1, v1) in px: each bone's 2D box on the film,
    from the projection of its ground-truth voxels (grown by half a voxel). A bone cut by the
    film's edge gets its box clipped to the film (and none when that is under ``min_px``); a bone
    mostly off the film (under ``min_inside`` of its projected voxels on it) gets none: the dataset
    passes ``BOX_MIN_INSIDE`` (version 6), so a detector is not taught to find a bone from a sliver."""
    # one pass over the volume: project every bone voxel once, then take per-label extremes
    idx = np.argwhere(gt > 0)
    labels = gt[tuple(idx.T)]
    uv, _ = geom.project(origin + idx * spacing)
    pad = 0.5 * float(np.max(spacing)) * geom.magnification / min(geom.spacing_mm)
    counts = np.bincount(labels, minlength=256)
    rows = []
    for b in anatomy.BONES:
        if counts[b.label] < 4:
            continue
        sel = uv[labels == b.label]
        on = (sel >= -0.5).all(1) & (sel[:, 0] <= geom.width - 0.5) & (sel[:, 1] <= geom.height - 0.5)
        if min_inside > 0 and on.mean() < min_inside:
            continue
        u0, v0 = sel.min(0) - pad
        u1, v1 = sel.max(0) + pad
        u0, u1 = np.clip([u0, u1], -0.5, geom.width - 0.5)
        v0, v1 = np.clip([v0, v1], -0.5, geom.height - 0.5)
        if u1 - u0 >= min_px and v1 - v0 >= min_px:
            rows.append((b.label, u0, v0, u1, v1))
    return np.array(rows, np.float32).reshape(-1, 5)


def write_yolo(root: Path, split: str, name: str, image: np.ndarray, boxes: np.ndarray) -> None:
    """YOLO detection files: class = catalog label - 1, normalised centre x, y, width, height."""
    from PIL import Image

    h, w = image.shape
    img_dir, lab_dir = root / "yolo" / "images" / split, root / "yolo" / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for label, u0, v0, u1, v1 in boxes:
        u0, v0, u1, v1 = u0 + 0.5, v0 + 0.5, u1 + 0.5, v1 + 0.5  # pixel edges
        lines.append(f"{int(label) - 1} {(u0 + u1) / 2 / w:.6f} {(v0 + v1) / 2 / h:.6f} "
                     f"{(u1 - u0) / w:.6f} {(v1 - v0) / h:.6f}")
    atomic_write_text(lab_dir / f"{name}.txt", "\n".join(lines) + ("\n" if lines else ""))
    png = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    atomic_write(img_dir / f"{name}.png", lambda tmp: png.save(tmp, format="PNG"), overwrite=True)


def save_case(path: Path, case: dict) -> None:
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, **case), overwrite=True, suffix=".npz")


def case_is_complete(path: Path, lateral: bool = False) -> bool:
    if not path.exists():
        return False
    try:
        with np.load(path) as z:
            return "gt_labels" in z.files and "image" in z.files and (not lateral or "image_lat" in z.files)
    except Exception:
        return False


# ---------------------------------------------------------------------- patients
def source_name(paths: dict) -> str:
    """The patient name of a source: ``name``, else the name stored in a prepared CT, else
    the CT's folder or file name (io.ct.patient_name)."""
    from ..io.ct import patient_name

    if paths.get("name"):
        return str(paths["name"])
    if paths.get("prepared"):
        p = Path(paths["prepared"])
        if not p.exists():
            from ..errors import InputError

            raise InputError("prepared CT not found", p)
        with np.load(p) as z:
            return str(z["name"])
    return patient_name(paths["ct"])


def assign_patients(counts: dict, patients, test_patients=()) -> dict:
    """{split: [patient of case 0, 1, ...]}: train and val cycle through the patients not in
    ``test_patients``; test through ``test_patients`` (or through every patient when none)."""
    from ..errors import InputError

    patients, held = sorted(set(patients)), sorted(set(test_patients))
    unknown = [t for t in held if t not in patients]
    if unknown:
        raise InputError(f"test patient(s) {', '.join(unknown)} not among the sources ({', '.join(patients)})")
    train = [p for p in patients if p not in held]
    out = {}
    for split, n in counts.items():
        pool = (held or patients) if split == "test" else train
        if n and not pool:
            raise InputError(f"no patient left for the {split} split: every source is a test patient")
        out[split] = [pool[i % len(pool)] for i in range(n)]
    return out


# ---------------------------------------------------------------------- driver
_WORKER: dict = {}


def _init_worker(sources: dict, device: str, layouts: dict | None = None):
    """sources: patient -> paths; each AnatomySource is loaded when a case first needs it.
    layouts: {split patients: {patient: bone layout}} for blending (train/val patients only)."""
    torch.set_num_threads(1)
    _WORKER.update(paths=sources, device=device, src={}, layouts=layouts or {})


def _source(patient: str) -> AnatomySource:
    if patient not in _WORKER["src"]:
        src = load_source({"name": patient, **_WORKER["paths"][patient]}, _WORKER["device"])
        src.others = {p: lay for p, lay in _WORKER["layouts"].items() if p != patient}
        _WORKER["src"][patient] = src
    return _WORKER["src"][patient]


def _towards(cfg: BuildConfig, splits: dict, every: dict, layouts: dict) -> dict:
    """{split: {case: patient it moves toward}} for blended cases (the same draws as make_case)."""
    from .blend import draw_toward

    out = {}
    for s, names in splits.items():
        if s == "test":
            continue
        for n in names:
            i = int(n[5:10])
            me = every[s][i]
            toward, _ = draw_toward(np.random.default_rng([cfg.seed, SPLIT_ID[s], i, 1]), me,
                                    [p for p in layouts if p != me], cfg.blend)
            if toward:
                out.setdefault(s, {})[n] = toward
    return out


def _layouts(sources: dict, patients) -> dict:
    """Bone layouts of ``patients`` (blend.py), from prepared files or by reading the CT."""
    from .blend import layout_of_prepared

    return {p: (layout_of_prepared(sources[p]["prepared"]) if sources[p].get("prepared")
                else load_source({"name": p, **sources[p]}).layout) for p in patients}


def _work(job):
    cfg, split, index, patient = job
    name = f"case_{index:05d}"
    root = Path(cfg.out)
    case = make_case(_source(patient), cfg, split, index)
    write_yolo(root, split, name, case["image"].astype(np.float32), case["boxes"])
    if cfg.lateral:
        write_yolo(root, split, f"{name}_lat", case["image_lat"].astype(np.float32), case["boxes_lat"])
    save_case(root / split / f"{name}.npz", case)
    return split, name, json.loads(str(case["timings"]))


def build_dataset(cfg: BuildConfig, ct_paths, log=print) -> dict:
    """Build (or resume) a dataset; returns the manifest. ct_paths: one source or a list of
    sources (one per patient), each ``{"prepared": npz}`` or ``ct``, ``labels``, optional
    ``structures`` (TotalSegmentator name table), ``label_values`` and ``name``."""
    from ..errors import InputError

    root = Path(cfg.out)
    sources = {}
    for paths in ([ct_paths] if isinstance(ct_paths, dict) else list(ct_paths)):
        name = source_name(paths)
        if name in sources:
            raise InputError(f"two sources are named {name!r}; patient names must differ")
        sources[name] = {k: v for k, v in paths.items() if k != "name"}
    assignment = assign_patients(cfg.counts, sources, cfg.test_patients)
    for split in cfg.counts:
        if split not in SPLIT_ID:
            raise ValueError(f"unknown split {split!r}; use train, val or test")
        (root / split).mkdir(parents=True, exist_ok=True)
    manifest_path = root / "dataset.json"
    settings = {"version": DATASET_VERSION, "image_size": cfg.image_size, "gt_voxel_mm": cfg.gt_voxel_mm,
                "n_points": cfg.n_points, "surface_sigma_mm": cfg.surface_sigma_mm, "seed": cfg.seed,
                "drr_step_mm": cfg.drr_step_mm, "patients": sorted(sources),
                "test_patients": sorted(set(cfg.test_patients)),
                **{k: getattr(cfg, k) for k, off in OPTIONAL_SETTINGS if getattr(cfg, k) != off}}
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("derived_from"):
            raise InputError(f"{root} is a fold of {old['derived_from']} (x2br fold-dataset): build that one")
        if "patients" not in old:  # written before patients were recorded: one source, whatever its name
            old["patients"] = settings["patients"] if len(sources) == 1 else None
            old["test_patients"] = []
        clash = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        clash.update({k: (old.get(k, off), getattr(cfg, k)) for k, off in OPTIONAL_SETTINGS
                      if old.get(k, off) != getattr(cfg, k)})
        if clash:
            raise InputError(f"{root} holds a dataset built with other settings {clash}; "
                             "choose another output folder")
    layouts = _layouts(sources, sorted(set(assignment.get("train", [])) | set(assignment.get("val", [])))) \
        if cfg.blend > 0 and len(sources) > 1 else {}
    k, n_parts = cfg.part
    jobs = [(cfg, s, i, assignment[s][i]) for s, n in cfg.counts.items() for i in range(n)
            if i % n_parts == k and not case_is_complete(root / s / f"case_{i:05d}.npz", cfg.lateral)]
    total = sum(cfg.counts.values())
    log(f"x2br build-dataset: {total - len(jobs)} of {total} cases already built, {len(jobs)} to go "
        f"({cfg.workers} worker(s), device {cfg.device})")
    t0 = time.perf_counter()
    timings = []
    bar = _progress(len(jobs), cfg.progress)
    if cfg.workers > 1 and jobs:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(cfg.workers, _init_worker, (sources, cfg.device, layouts)) as pool:
            for _, _, t in pool.imap_unordered(_work, jobs):
                timings.append(t)
                bar.update(1)
    elif jobs:
        _init_worker(sources, cfg.device, layouts)
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        for job in jobs:
            timings.append(_work(job)[2])
            bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - t0
    manifest = dict(settings)
    splits = {s: sorted(p.name for p in (root / s).glob("case_*.npz")) for s in cfg.counts}
    every = assign_patients({s: max([int(n[5:10]) + 1 for n in names] or [0]) for s, names in splits.items()},
                            sources, cfg.test_patients)
    manifest.update({
        "sources": [{"name": n, **{k: str(v) for k, v in p.items() if v}} for n, p in sources.items()],
        "splits": splits,
        "case_patients": {s: {n: every[s][int(n[5:10])] for n in names} for s, names in splits.items()},
        **({"case_toward": _towards(cfg, splits, every, layouts)} if layouts else {}),
        "catalog": {b.label: b.name for b in anatomy.BONES},
        "last_build": {"cases": len(jobs), "seconds": round(elapsed, 2),
                       "cases_per_minute": round(60 * len(jobs) / elapsed, 2) if jobs and elapsed > 0 else None,
                       "workers": cfg.workers, "device": cfg.device},
    })
    _write_yolo_yaml(root, list(cfg.counts))
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    return manifest


def _write_yolo_yaml(root: Path, splits) -> None:
    names = "\n".join(f"  {b.label - 1}: {b.name}" for b in anatomy.BONES)
    text = f"path: {(root / 'yolo').resolve()}\n" + "".join(
        f"{'val' if s == 'val' else s}: images/{s}\n" for s in splits) + f"names:\n{names}\n"
    atomic_write_text(root / "yolo" / "data.yaml", text)


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="case", file=sys.stderr, dynamic_ncols=True)


def load_source(ct_paths: dict, device="cpu") -> AnatomySource:
    """ct_paths: ``{"prepared": npz}`` (see LabelledCT.save_npz) or ``ct``, ``labels``,
    optional ``structures``, ``label_values`` and ``name`` (a given name replaces the stored one)."""
    from ..io.ct import read_labelled_ct

    if ct_paths.get("prepared"):
        ct = LabelledCT.load_npz(ct_paths["prepared"])
        if ct_paths.get("name"):
            ct.name = str(ct_paths["name"])
    else:
        from .prepare import contrast_test

        ct = read_labelled_ct(ct_paths["ct"], ct_paths["labels"], ct_paths.get("structures"),
                              ct_paths.get("name"), ct_paths.get("label_values") or "auto")
        ct.contrast = contrast_test(ct)["contrast"]  # None (not measurable): removed, as before
    return AnatomySource(ct, device)
