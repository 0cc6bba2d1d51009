"""``x2br reconstruct PA_FILM --lateral LAT_FILM``: the pair's options on the reconstruct command.

The reconstruct command itself lives in :mod:`X2BRLib.x2b.commands`; this module adds the
lateral options to its parser and, when ``--lateral`` is given, runs the one film with its
lateral through the same entry point (``pipeline.Reconstructor``). Without ``--lateral`` the
command is unchanged.
"""
from __future__ import annotations

import json
import sys
import time

from .errors import InputError


def add_arguments(parser) -> None:
    """Add --lateral, --lateral-pixel-spacing, --lateral-view to the reconstruct parser and route
    its command through :func:`cmd_reconstruct`."""
    from .x2b.commands import pixel_spacing_arg

    parser.add_argument("--lateral", metavar="LAT_FILM",
                        help="the lateral film (LL or RL) of the same study as the one PA/AP film: both are "
                             "reconstructed together (needs two-view weights)")
    parser.add_argument("--lateral-pixel-spacing", type=pixel_spacing_arg, metavar="MM",
                        help="the lateral film's detector pixel spacing in mm (or COLUMN,ROW); default: the "
                             "file's, else the PA film's (the same detector assumed, with a warning)")
    parser.add_argument("--lateral-view", type=str.upper, choices=["LL", "RL"],
                        help="the lateral's view when its file does not say (PNG, JPEG): LL = the patient's "
                             "left side on the detector, shown with the back on the right; RL the reverse "
                             "(default: from the file, else LL)")
    single = parser.get_default("func")
    parser.set_defaults(func=lambda args: cmd_reconstruct(args, single))


def cmd_reconstruct(args, single) -> int:
    """One PA film and its lateral; without --lateral, ``single`` (the one-film command)."""
    if args.lateral is None:
        if args.lateral_pixel_spacing is not None or args.lateral_view is not None:
            raise InputError("--lateral-pixel-spacing and --lateral-view need --lateral LAT_FILM")
        return single(args)
    from .x2b.commands import ProgressLines, _expand_inputs, _progress_line
    from .pipeline import ReconstructOptions, Reconstructor, write_outputs

    files = _expand_inputs(args.inputs)
    if len(files) != 1:
        raise InputError(f"--lateral goes with one PA film, not {len(files)} inputs: reconstruct a pair "
                         "at a time (x2br reconstruct PA_FILM --lateral LAT_FILM -o OUT)")
    opts = ReconstructOptions(quality=args.quality, device=args.device, weights=args.weights,
                              refine=args.refine, detector_weights=args.detector_weights, template=args.template,
                              pixel_spacing_mm=args.pixel_spacing, force=args.force, lateral=args.lateral,
                              lateral_pixel_spacing_mm=args.lateral_pixel_spacing, lateral_view=args.lateral_view)
    reconstructor = Reconstructor(opts)
    print(f"x2br: reconstructing {files[0]} with the lateral film {args.lateral}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    rec = reconstructor.reconstruct(files[0], progress=ProgressLines())
    paths = write_outputs(rec, args.output, overwrite=args.overwrite, meshes=not args.no_meshes)
    _progress_line(1.0, f"written to {args.output}")
    print(json.dumps({"reconstructed": [{"input": str(files[0]), "lateral": str(args.lateral),
                                         "output": str(args.output), "bones_found": rec.report()["bones_found"],
                                         "seconds": round(time.perf_counter() - t0, 2),
                                         "report": paths["report"]}], "failed": []}))
    return 0
