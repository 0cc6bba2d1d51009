"""The words on preview.png: a title from report.json's fields and a legend of bone groups.

Pure functions of plain data (a report dict, a label volume), so the CLI, the Slicer
module and tests read the same text.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import anatomy

# legend entries: (text, catalog group, side or None); colour = the middle bone's of that set
_LEGEND = (("ribs, left", "rib", "left"), ("ribs, right", "rib", "right"), ("vertebrae C7-L1", "vertebra", None),
           ("sternum", "sternum", None), ("clavicles", "clavicle", None), ("scapulae", "scapula", None),
           ("humeri", "humerus", None))

_SPACING_SOURCES = {
    "ImagerPixelSpacing": "the file's ImagerPixelSpacing",
    "PixelSpacing": "the file's PixelSpacing",
    "file": "the file",
    "argument": "the user (--pixel-spacing)",
    "user": "the user (--pixel-spacing)",
    "default": "the default (the file gives none: sizes are a guess)",
    "estimate": "an estimate from the image",
    "estimated": "an estimate from the image",
}


def bone_groups(labels_xyz=None) -> list[tuple[str, tuple[float, float, float]]]:
    """[(text, colour rgb)] of the legend's bone groups; with a label volume, only the groups
    that hold at least one of its labels."""
    present = None if labels_xyz is None else set(int(v) for v in np.unique(np.asarray(labels_xyz)) if v)
    out = []
    for text, group, side in _LEGEND:
        bones = [b for b in anatomy.group(group) if side is None or b.laterality == side]
        if present is not None and not any(b.label in present for b in bones):
            continue
        out.append((text, tuple(bones[len(bones) // 2].color_rgb)))
    return out


def scale_text(meta: dict | None) -> str:
    """'pixel 0.143 x 0.143 mm (film 366 x 366 mm) from <source>' (plus an uncertainty when the
    report has one): the film's width tells at a glance whether the scale can be right."""
    meta = meta or {}
    spacing = meta.get("spacing_mm")
    if not spacing:
        return "pixel spacing unknown"
    src = str(meta.get("spacing_source") or "unknown")
    size = " x ".join(f"{float(s):.3g}" for s in spacing)
    text = f"pixel {size} mm"
    shape = meta.get("original_shape")  # (rows, columns)
    if shape and len(shape) == 2 and len(spacing) == 2:
        text += f" (film {shape[1] * float(spacing[0]):.0f} x {shape[0] * float(spacing[1]):.0f} mm)"
    text += f" from {_SPACING_SOURCES.get(src, src)}"
    key = next((k for k in sorted(meta) if k.startswith("spacing") and "uncertainty" in k
                and isinstance(meta[k], (int, float))), None)
    if key is not None:
        text += f" (uncertainty {float(meta[key]):.3g}{' %' if 'pct' in key or 'percent' in key else ''})"
    return text


def preview_title(report: dict) -> str:
    """Two lines: '<file>: X2B|X2BR, <n> of 45 bones, <view>' and the scale used and its source.

    report: the dict of ``Reconstruction.report()`` (keys input, input_meta, bones_found,
    stats.refine, warnings).
    """
    name = Path(str(report.get("input"))).name if report.get("input") else "film in memory"
    method = "X2BR (refined)" if (report.get("stats") or {}).get("refine") else "X2B"
    meta = report.get("input_meta") or {}
    first = f"{name}: {method}, {report.get('bones_found', '?')} of {len(anatomy.BONES)} bones"
    if meta.get("view"):
        first += f", {meta['view']} view"
    if report.get("lateral"):
        first += f" + lateral ({report['lateral'].get('view')})"
    second = scale_text(meta)
    n_warn = len(report.get("warnings") or [])
    if n_warn:
        second += f"; {n_warn} warning{'s' if n_warn > 1 else ''} in report.json"
    return f"{first}\n{second}"
