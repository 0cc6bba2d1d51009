"""Quality-assurance pictures and the checks JSON of ``x2br label-bones --qa DIR``.

``labels_front.png`` / ``labels_side.png``: the CT's mean projection (grey) with each
pixel's nearest labelled bone in its catalog colour (seen from the front and from the
back, resp. from the patient's left and right), short bone names at their projected
centres (R3: right 3rd rib), and the CT's maximum projection beside them to compare.
Every panel is drawn the same way round: the patient's right on the image's left (front)
or the front on the left (side), head up. ``checks.json``: the report
of checks.py. Pictures are drawn on an axis-aligned ``QA_MM`` grid.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import anatomy
from ..io.atomic import atomic_write, atomic_write_text

QA_MM = 2.0
QA_FILES = ("labels_front.png", "labels_side.png", "labels_ribs.png", "checks.json")
# labels_ribs.png: ribs and vertebrae only, seen from the back, in six alternating high-contrast
# colours (neighbours always differ), to judge numbering and merges at a glance
_CONTRAST = np.array([(0.90, 0.10, 0.10), (0.10, 0.60, 0.95), (0.95, 0.80, 0.10), (0.15, 0.75, 0.25),
                      (0.80, 0.30, 0.90), (1.00, 0.50, 0.00)], np.float32)


def _axis_aligned(image, labels, z_range_mm=None):
    """(hu, labels) as (Z, Y, X) arrays on an identity-direction QA_MM grid, z ascending."""
    import SimpleITK as sitk

    last = np.array(image.GetSize()) - 1
    pts = [image.TransformContinuousIndexToPhysicalPoint([float(v) for v in np.array(c) * last])
           for c in np.ndindex(2, 2, 2)]
    lo, hi = np.min(pts, 0), np.max(pts, 0)
    if z_range_mm is not None:
        lo[2], hi[2] = max(lo[2], z_range_mm[0]), min(hi[2], z_range_mm[1])
    size = [int((h - l) / QA_MM) + 1 for l, h in zip(lo, hi)]
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetOrigin(tuple(lo))
    ref.SetSpacing([QA_MM] * 3)
    hu = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, -1024.0)
    lab = sitk.Resample(labels, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(hu), sitk.GetArrayFromImage(lab)


def _first_hit(labels: np.ndarray, axis: int, reverse: bool) -> np.ndarray:
    """Label of the first labelled voxel met along ``axis`` (from the high end when reverse)."""
    lab = np.flip(labels, axis) if reverse else labels
    hit = lab > 0
    idx = np.argmax(hit, axis=axis)
    out = np.take_along_axis(lab, np.expand_dims(idx, axis), axis).squeeze(axis)
    return np.where(hit.any(axis=axis), out, 0)


def _panel(ax, grey, lab, title, names: bool, contrast: bool = False):
    colours = np.zeros((256, 3), np.float32)
    for b in anatomy.BONES:
        colours[b.label] = _CONTRAST[b.order % 6] if contrast else b.color_rgb
    g = np.clip((grey - grey.min()) / max(np.ptp(grey), 1e-6), 0, 1)
    rgb = np.repeat(g[..., None], 3, -1)
    m = lab > 0
    rgb[m] = 0.35 * rgb[m] + 0.65 * colours[lab[m]]
    ax.imshow(rgb[::-1], interpolation="nearest")  # head up
    if names:
        h = lab.shape[0]
        for b in anatomy.BONES:
            yx = np.argwhere(lab == b.label)
            if len(yx) > 5:
                short = b.name.replace("rib_left_", "L").replace("rib_right_", "R").replace("vertebra_", "")
                ax.text(yx[:, 1].mean(), h - 1 - yx[:, 0].mean(), short, fontsize=4, color="black",
                        ha="center", va="center")
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def write_pictures(qa_dir, image, labels, z_range_mm=None, overwrite: bool = False, title: str = "") -> list[Path]:
    """Front and side pictures (see module doc). image: SimpleITK CT (HU); labels: uint8 on its grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    hu, lab = _axis_aligned(image, labels, z_range_mm)
    grey_hu = np.clip(hu, -1000, 1500) + 1000
    out = []
    # (file, projection axis of the (Z, Y, X) array, views (title, from the high end?))
    for name, axis, views in (("labels_front.png", 1, (("from the front", False), ("from the back", True))),
                              ("labels_side.png", 2, (("from the left", True), ("from the right", False)))):
        grey, mip = grey_hu.mean(axis=axis), grey_hu.max(axis=axis)
        h, w = grey.shape
        fig = Figure(figsize=(3 * 3.5 * w / max(h, w), 3.5 * h / max(h, w) + 0.4), dpi=200)
        FigureCanvasAgg(fig)
        top = 1 - 0.4 / fig.get_figheight()
        for i, (sub, reverse) in enumerate(views):
            _panel(fig.add_axes([i / 3, 0.0, 1 / 3, top]), grey, _first_hit(lab, axis, reverse), f"labels {sub}", True)
        _panel(fig.add_axes([2 / 3, 0.0, 1 / 3, top]), mip, np.zeros_like(lab.max(axis=axis)),
               "CT maximum projection", False)
        if title:
            fig.suptitle(title, fontsize=8)
        out.append(atomic_write(Path(qa_dir) / name, lambda tmp: fig.savefig(tmp, format="png"),
                                overwrite=overwrite, suffix=".png"))
    keep = np.zeros(256, bool)
    keep[[b.label for b in anatomy.BONES if b.group in ("rib", "vertebra")]] = True
    back = _first_hit(np.where(keep[lab], lab, 0), 1, True)
    grey = grey_hu.max(axis=1)
    h, w = back.shape
    fig = Figure(figsize=(2 * 5.0 * w / max(h, w), 5.0 * h / max(h, w) + 0.4), dpi=200)
    FigureCanvasAgg(fig)
    top = 1 - 0.4 / fig.get_figheight()
    _panel(fig.add_axes([0.0, 0.0, 0.5, top]), grey, back, "ribs and vertebrae from the back", True, True)
    _panel(fig.add_axes([0.5, 0.0, 0.5, top]), grey, np.zeros_like(back), "CT maximum projection", False)
    if title:
        fig.suptitle(title, fontsize=8)
    out.append(atomic_write(Path(qa_dir) / "labels_ribs.png", lambda tmp: fig.savefig(tmp, format="png"),
                            overwrite=overwrite, suffix=".png"))
    return out


def write_qa(qa_dir, image, labels, report: dict, z_range_mm=None, overwrite: bool = False,
             title: str = "") -> list[Path]:
    """Pictures and checks.json into qa_dir."""
    paths = write_pictures(qa_dir, image, labels, z_range_mm, overwrite, title)
    target = Path(qa_dir) / "checks.json"
    if target.exists() and not overwrite:
        from ..errors import InputError

        raise InputError("already exists; pass --overwrite to replace it", target)
    paths.append(atomic_write_text(target, json.dumps(report, indent=1) + "\n"))
    return paths
