"""Refinement subcommands of ``x2br``: build-template. (``reconstruct --refine`` and
``evaluate --refine`` live with the X2B commands; ``detect`` in X2BRLib.detect.)"""
from __future__ import annotations

import json

from ..errors import InputError


def cmd_build_template(args) -> int:
    from ..dataset.ct_args import ct_paths
    from ..dataset.builder import load_source
    from .template import _paths, build_template

    npz, js = _paths(args.output)
    if not args.overwrite and (npz.exists() or js.exists()):
        raise InputError("exists; pass --overwrite to replace it", npz if npz.exists() else js)
    source = load_source(ct_paths(args))
    tmpl = build_template(source, voxel_mm=args.voxel_mm, target_edge_mm=args.target_edge_mm,
                          log=lambda m: print(m, flush=True) if args.verbose else None)
    npz, js = tmpl.save(npz, overwrite=True)
    print(json.dumps({"template": str(npz), "record": str(js), "vertices": int(len(tmpl.vertices)),
                      "bones": len(tmpl.labels_present())}))
    return 0


def add_commands(sub) -> None:
    from ..dataset.ct_args import add_ct_args

    s = sub.add_parser("build-template", help="skeleton template (one closed surface per bone) from a labelled CT, "
                                              "for reconstruct --refine --template")
    add_ct_args(s)
    s.add_argument("-o", "--output", required=True, help="template .npz (its record .json is written beside it)")
    s.add_argument("--voxel-mm", type=float, default=1.5, help="grid of the label surfaces")
    s.add_argument("--target-edge-mm", type=float, default=4.0, help="mean mesh edge length (vertex density)")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--verbose", action="store_true", help="one line per bone")
    s.set_defaults(func=cmd_build_template)


__all__ = ["add_commands", "cmd_build_template"]
