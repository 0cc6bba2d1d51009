"""X2B subcommands of ``x2br``: train, reconstruct, evaluate. Thin calls into
x2b.train, pipeline and x2b.evaluate."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import InputError

RADIOGRAPH_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nrrd", ".nii", ".nii.gz",
                       ".mha", ".mhd", "")


def _expand_inputs(inputs) -> list[Path]:
    """Files as given; folders expanded to the radiograph-like files they hold (sorted)."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and (f.name.lower().endswith(RADIOGRAPH_SUFFIXES[:-1]) or "." not in f.name))
            if not found:
                raise InputError("folder holds no radiograph files", p)
            out.extend(found)
        else:
            out.append(p)
    return out


def lateral_offset_arg(text: str):
    """``--lateral-offset``: auto, none or MM (X2BRLib.pair.lateral_offset_arg, the one rule)."""
    from ..pair import lateral_offset_arg as rule

    try:
        return rule(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--lateral-offset ")) from None


def pixel_spacing_arg(text: str):
    """``--pixel-spacing``: one number (square pixels) or two, column,row (as Slicer's volume
    spacing i, j gives them), in mm."""
    from ..scale import spacing_pair

    try:
        values = [float(v) for v in text.replace("x", ",").split(",")]
        spacing_pair(values[0] if len(values) == 1 else values)  # the one rule (ReconstructOptions too)
    except (ValueError, InputError):
        raise argparse.ArgumentTypeError(f"expected MM or COLUMN,ROW (positive mm), got {text!r}") from None
    return values[0] if len(values) == 1 else tuple(values)


def _progress_line(fraction: float, message: str) -> None:
    """``x2br: progress <fraction> <message>`` on stderr: read by people and by the Slicer module."""
    print(f"x2br: progress {fraction:.2f} {message}", file=sys.stderr, flush=True)


class ProgressLines:
    """A progress callback that prints :func:`_progress_line`, at most one line per ``min_interval_s``
    within a stage (the message's first two words: 'MISE level', 'CPD iteration'), and always the
    first line of a new stage and the last (fraction 1)."""

    def __init__(self, min_interval_s: float = 1.0, clock=time.monotonic):
        self.min_interval_s, self.clock = float(min_interval_s), clock
        self._last_t, self._last_stage = None, None

    def __call__(self, fraction: float, message: str) -> None:
        stage, now = " ".join(message.split()[:2]), self.clock()
        if (stage != self._last_stage or fraction >= 1.0 or self._last_t is None
                or now - self._last_t >= self.min_interval_s):
            _progress_line(fraction, message)
            self._last_t, self._last_stage = now, stage


def cmd_train(args) -> int:
    from .train import main as train_main

    return train_main(args.train_args)


def cmd_reconstruct(args) -> int:
    """One or many radiographs; one failure does not stop the others; progress on stderr."""
    from ..errors import X2BRError
    from ..io.batch import output_folders
    from ..pipeline import ReconstructOptions, Reconstructor, write_outputs

    files = _expand_inputs(args.inputs)
    if args.lateral is not None and len(files) != 1:
        raise InputError(f"--lateral goes with one PA film, not {len(files)} inputs: reconstruct a pair "
                         "at a time (x2br reconstruct PA_FILM --lateral LAT_FILM -o OUT)")
    outdirs = output_folders(files, args.output)
    opts = ReconstructOptions(quality=args.quality, device=args.device, weights=args.weights,
                              refine=args.refine, detector_weights=args.detector_weights, template=args.template,
                              pixel_spacing_mm=args.pixel_spacing, force=args.force, lateral=args.lateral,
                              lateral_pixel_spacing_mm=args.lateral_pixel_spacing, lateral_view=args.lateral_view,
                              lateral_offset=args.lateral_offset,
                              **({} if args.test_time is None else {"test_time": args.test_time}))
    reconstructor = Reconstructor(opts)
    with_lateral = {} if args.lateral is None else {"lateral": str(args.lateral)}
    results, failures = [], []
    bar = None
    if not args.no_progress and len(files) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="film", file=sys.stderr)
    for f, outdir in zip(files, outdirs):
        try:
            print(f"x2br: reconstructing {f}" + (f" with the lateral film {args.lateral}" if with_lateral else ""),
                  file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            rec = reconstructor.reconstruct(f, progress=ProgressLines())
            paths = write_outputs(rec, outdir, overwrite=args.overwrite, meshes=not args.no_meshes)
            _progress_line(1.0, f"written to {outdir}")
            results.append({"input": str(f), **with_lateral, "output": str(outdir),
                            "bones_found": rec.report()["bones_found"],
                            "seconds": round(time.perf_counter() - t0, 2), "report": paths["report"]})
        except X2BRError as e:
            failures.append({"input": str(f), "error": str(e)})
            print(f"x2br: error: {e}", file=sys.stderr, flush=True)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    print(json.dumps({"reconstructed": results, "failed": failures}))
    return 0 if not failures else (2 if not results else 1)


def cmd_evaluate(args) -> int:
    from ..io.outputs import write_report_json
    from ..pipeline import ReconstructOptions, Reconstructor
    from .evaluate import evaluate

    manifest = Path(args.data) / "dataset.json"
    if not manifest.exists():
        raise InputError("not a dataset folder (no dataset.json); build one with `x2br build-dataset`", args.data)
    # dataset films come with their geometry: no film check, no scale estimate, no detector
    rec = Reconstructor(ReconstructOptions(device=args.device, weights=args.weights, check_films=False))
    others = {}
    for item in args.also_weights:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder or not name.replace("_", "").replace("-", "").isalnum():
            raise InputError(f"--also-weights takes NAME=FOLDER (NAME letters, digits, - or _), not {item!r}")
        if name in others:
            raise InputError(f"--also-weights names {name!r} twice")
        others[name] = Reconstructor(ReconstructOptions(device=args.device, weights=folder, check_films=False))
    refiner = None
    if args.refine:
        from ..refine.refiner import RefineOptions, Refiner
        from ..refine.template import SkeletonTemplate

        template = SkeletonTemplate.load(args.template) if args.template else None
        options = RefineOptions().with_overrides(args.refine_option)
        refiner = Refiner(options, device=rec.device, template=template, detector_weights=args.detector_weights)
        if not args.oracle_boxes:
            refiner.detector  # fail now on missing weights

    detector = None
    if args.place_lateral == "auto":
        from ..detect.detector import Detector

        detector = refiner.detector if refiner is not None else Detector(args.detector_weights, device=str(rec.device))

    def progress(i, n, row):
        text = ", ".join(f"{m} {v['iou_all_bone']:.3f}" for m, v in row.items()
                         if isinstance(v, dict) and "iou_all_bone" in v)
        print(f"[{i}/{n}] {row['case']}: IoU {text}", file=sys.stderr, flush=True)

    try:
        report = evaluate(args.data, rec, split=args.split, max_cases=args.max_cases, progress=progress,
                          refiner=refiner, baseline=not args.no_baseline, oracle_boxes=args.oracle_boxes,
                          consistency=args.consistency, first_case=args.first_case, others=others,
                          views=args.views, lateral_offset_mm=args.lateral_offset_mm,
                          place_lateral=args.place_lateral, detector=detector)
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(str(e), args.data) from None
    write_report_json(args.output, report, overwrite=args.overwrite)
    keys = ("iou_all_bone", "iou_mean_per_bone", "chamfer_l1_unit", "chamfer_l1_mm", "hd95_mm")
    summary = {m: {k: report["methods"][m]["mean"].get(k) for k in keys} for m in report["methods"]}
    per_patient = {p: {m: {k: v["mean"].get(k) for k in keys[:2]} for m, v in by.items()}
                   for p, by in report["per_patient"].items()}
    print(json.dumps({"output": str(args.output), "n_cases": report["n_cases"], "mean": summary,
                      "per_patient": per_patient}))
    return 0


def views_arg(text: str) -> tuple:
    """``--views``: a comma list of pa and pa+lat."""
    from .evaluate import VIEWS

    views = tuple(v.strip().lower() for v in text.split(",") if v.strip())
    if not views or set(views) - set(VIEWS):
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(VIEWS)}, got {text!r}")
    return tuple(dict.fromkeys(views))


def cmd_merge_evaluations(args) -> int:
    from ..io.outputs import write_report_json
    from .evaluate import merge_reports

    reports = []
    for path in args.reports:
        try:
            reports.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            raise InputError(f"not a readable evaluation report ({e})", path) from None
    try:
        merged = merge_reports(reports)
    except (KeyError, ValueError) as e:
        raise InputError(f"cannot merge: {e}") from None
    write_report_json(args.output, merged, overwrite=args.overwrite)
    print(json.dumps({"output": str(args.output), "n_cases": merged["n_cases"]}))
    return 0


def add_commands(sub) -> None:
    # prefix_chars "+": every word after `train` (--data ...) goes to x2b.train's own parser untouched
    # (argparse.REMAINDER alone drops a leading option: python bug 17050)
    s = sub.add_parser("train", help="train the X2B network (all options: x2br train --help)", add_help=False,
                       prefix_chars="+")
    s.add_argument("train_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("reconstruct", help="radiograph(s) -> per-bone segmentation, meshes, preview, report")
    s.add_argument("inputs", nargs="+", help="radiograph files (DICOM CR/DX, PNG, JPEG, TIFF, NRRD...) or folders")
    s.add_argument("-o", "--output", required=True, help="output folder (one sub-folder per input when several)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--quality", default="default", choices=["fast", "default", "high"])
    s.add_argument("--weights", help="X2B weights folder (default: the shipped model)")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    s.add_argument("--no-meshes", action="store_true", help="skip the STL meshes")
    s.add_argument("--refine", action="store_true",
                   help="X2BR: detect the bones, fit the skeleton template and register it onto the X2B "
                        "surfaces (one smooth closed piece per bone)")
    s.add_argument("--test-time", action=argparse.BooleanOptionalAction, default=None,
                   help="with --refine: find the bones through the detector's test-time passes (the film as "
                        "given, contrast-equalised and enlarged; a box another pass adds is kept only where the "
                        "frontal layout puts that bone); default on; the film check keeps the plain pass")
    s.add_argument("--detector-weights", help="detector weights folder (default: the shipped detector)")
    s.add_argument("--template", help="skeleton template .npz from `x2br build-template` (default: the shipped one)")
    s.add_argument("--pixel-spacing", type=pixel_spacing_arg, metavar="MM",
                   help="detector pixel spacing in mm (or COLUMN,ROW): wins over the file's and over the "
                        "estimate from the bones (used when the file has none, or one that implies an "
                        "impossible chest size)")
    s.add_argument("--force", action="store_true",
                   help="reconstruct even an image the film check refuses as not a frontal chest film "
                        "(noise, a strip, no bone found)")
    s.add_argument("--lateral", metavar="LAT_FILM",
                   help="the lateral film (LL or RL) of the same study as the one PA/AP film: both are "
                        "reconstructed together (two-view weights: the shipped two-view model by default)")
    s.add_argument("--lateral-pixel-spacing", type=pixel_spacing_arg, metavar="MM",
                   help="the lateral film's detector pixel spacing in mm (or COLUMN,ROW); default: the "
                        "file's, else the PA film's (the same detector assumed, with a warning)")
    s.add_argument("--lateral-view", type=str.upper, choices=["LL", "RL"],
                   help="the lateral's view when its file does not say (PNG, JPEG): LL = the patient's "
                        "left side on the detector, shown with the back on the right; RL the reverse "
                        "(default: from the file, else LL)")
    s.add_argument("--lateral-offset", type=lateral_offset_arg, default="auto", metavar="auto|none|MM",
                   help="the lateral's height against the PA film's: auto moves its camera by the offset the "
                        "bones found on both films give, when they agree (else the same height, as none); "
                        "MM: the patient sat MM mm higher for the lateral exposure (report.json: pair.placement)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser("evaluate", help="held-out metrics of X2B and a mean-skeleton baseline")
    s.add_argument("--data", required=True, help="dataset folder (x2br build-dataset)")
    s.add_argument("--split", default="test")
    s.add_argument("--max-cases", type=int)
    s.add_argument("--first-case", type=int, default=0, help="skip the split's first cases (evaluate in parts)")
    s.add_argument("--device", default="auto")
    s.add_argument("--weights")
    s.add_argument("--also-weights", action="append", default=[], metavar="NAME=FOLDER",
                   help="further X2B weights on the same films, reported as method x2b_NAME; repeatable")
    s.add_argument("-o", "--output", required=True, help="report .json")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--refine", action="store_true",
                   help="also evaluate X2BR (detection + template + geodesic CPD) and template-only, with "
                        "anatomical consistency metrics")
    s.add_argument("--detector-weights", help="detector weights folder (default: the shipped detector)")
    s.add_argument("--template", help="skeleton template .npz from `x2br build-template` (default: the shipped one)")
    s.add_argument("--refine-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a refinement setting (X2BRLib.refine.refiner.RefineOptions), e.g. lam=0.5; "
                        "repeatable; the report records the options used")
    s.add_argument("--oracle-boxes", action="store_true",
                   help="use the dataset's ground-truth boxes instead of the detector (ablation)")
    s.add_argument("--consistency", action="store_true", help="consistency metrics also without --refine")
    s.add_argument("--no-baseline", action="store_true",
                   help="skip the mean-skeleton baseline (it needs the dataset's train split)")
    s.add_argument("--views", type=views_arg, default=None, metavar="pa,pa+lat",
                   help="what the models are given: the PA film alone (pa) and/or with the case's lateral "
                        "(pa+lat, two-view weights only; reported as METHOD+lat); default: both when the "
                        "dataset has lateral films")
    s.add_argument("--lateral-offset-mm", type=float, default=0.0, metavar="D",
                   help="shift the lateral's geometry the network is given by D mm along SI (the cost of "
                        "assuming both films were taken at the same height when they were not)")
    s.add_argument("--place-lateral", choices=["none", "auto"], default="none",
                   help="auto: place the lateral's camera at the height the bones found on both films give "
                        "(the detector on both), as `reconstruct --lateral-offset auto` does; none: as given")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("merge-evaluations", help="pool `x2br evaluate` reports of disjoint parts of one split")
    s.add_argument("reports", nargs="+", help="report .json files (from --first-case / --max-cases runs)")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_merge_evaluations)
