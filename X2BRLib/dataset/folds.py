"""``x2br fold-dataset``: a leave-patients-out fold of a dataset built from several patients,
without building anything again.

Build one pool of virtual patients from every patient once (``x2br build-dataset`` with no
``--test-patients``: each split cycles through all patients), then derive each fold from
it: train and val keep the pool's cases of the other patients, test keeps the pool's test
cases of the held-out ones. Case files are hard links (copies where links fail), so a fold
costs no disk and no build time; its manifest records ``derived_from``, ``test_patients``
and ``case_patients`` like a dataset built with ``--test-patients`` (a build-dataset run on
a fold folder is refused). YOLO files are not linked (the detector trains on the pool).
A pool built with ``--blend``: train and val cases drawn toward a held-out patient are left
out of the fold as well (``case_toward`` in the pool's manifest).
``--train-patients``: train and val keep only these patients (a learning curve over the number of
people: the same held-out films, fewer people to learn from); the manifest records ``train_patients``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import InputError
from ..io.atomic import atomic_write_text


def derive_fold(pool, out, test_patients, overwrite: bool = False, train_patients=None) -> dict:
    """Write the fold folder ``out`` from the dataset ``pool``; returns its manifest. ``train_patients``
    (default: every patient not held out) limits train and val to those patients."""
    pool, out = Path(pool), Path(out)
    if not (pool / "dataset.json").is_file():
        raise InputError("not a dataset folder (no dataset.json)", pool)
    src = json.loads((pool / "dataset.json").read_text())
    if src.get("derived_from") or src.get("test_patients"):
        raise InputError("derive folds from a pool built without --test-patients", pool)
    patients = src.get("patients") or []
    held = sorted(set(test_patients))
    unknown = [t for t in held if t not in patients]
    if not held or unknown:
        raise InputError(f"test patient(s) {', '.join(unknown or ['(none)'])} not among the pool's "
                         f"patients ({', '.join(patients)})")
    learn = sorted(set(train_patients)) if train_patients else [p for p in patients if p not in held]
    bad = [t for t in learn if t not in patients or t in held]
    if bad or not learn:
        raise InputError(f"training patient(s) {', '.join(bad or ['(none)'])} must be among the pool's "
                         f"patients ({', '.join(patients)}) and not held out")
    if (out / "dataset.json").exists() and not overwrite:
        old = json.loads((out / "dataset.json").read_text())
        if (old.get("derived_from") != str(pool.resolve()) or old.get("test_patients") != held
                or old.get("train_patients") != (learn if train_patients else None)):
            raise InputError("exists and is another dataset; pass --overwrite to replace it", out)
    keep = {"train": lambda p: p in learn, "val": lambda p: p in learn, "test": lambda p: p in held}
    splits, case_patients = {}, {}
    for split, names in src["splits"].items():
        who = src["case_patients"][split]
        toward = src.get("case_toward", {}).get(split, {})  # a blend toward a held-out patient is his too
        chosen = [n for n in names if keep.get(split, lambda p: False)(who[n]) and toward.get(n) not in held]
        (out / split).mkdir(parents=True, exist_ok=True)
        for n in chosen:
            target = out / split / n
            if not target.exists():
                try:
                    os.link(pool / split / n, target)
                except OSError:
                    shutil.copy2(pool / split / n, target)
        splits[split] = chosen
        case_patients[split] = {n: who[n] for n in chosen}
    manifest = {k: v for k, v in src.items() if k not in ("splits", "case_patients", "case_toward", "last_build")}
    manifest.update({"test_patients": held, "splits": splits, "case_patients": case_patients,
                     "derived_from": str(pool.resolve())})
    if train_patients:
        manifest["train_patients"] = learn
    atomic_write_text(out / "dataset.json", json.dumps(manifest, indent=1))
    return manifest


def cmd_fold_dataset(args) -> int:
    names = lambda text: [t for t in (text or "").split(",") if t]  # noqa: E731
    m = derive_fold(args.pool, args.output, names(args.test_patients), args.overwrite,
                    names(args.train_patients) or None)
    print(json.dumps({"output": str(Path(args.output).resolve()), "test_patients": m["test_patients"],
                      "cases": {s: len(v) for s, v in m["splits"].items()},
                      "patients": {s: sorted(set(v.values())) for s, v in m["case_patients"].items()}}))
    return 0


def add_commands(sub) -> None:
    s = sub.add_parser("fold-dataset", help="a leave-patients-out fold of a multi-patient dataset (hard links)")
    s.add_argument("pool", help="dataset folder built from several patients without --test-patients")
    s.add_argument("-o", "--output", required=True, help="fold folder")
    s.add_argument("--test-patients", required=True, metavar="A[,B]", help="patients held out (test split only)")
    s.add_argument("--train-patients", metavar="A[,B]",
                   help="train and val keep only these patients (default: all not held out)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_fold_dataset)
