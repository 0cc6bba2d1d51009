"""Where each input of a batch command (``x2br reconstruct``, ``x2br detect``) writes its outputs.

One input: the output folder itself. Several inputs: one sub-folder per input, named by one
rule so that no two inputs ever share a folder and the same input always gets the same name:

- ``<stem>``: the file name without its image suffix (``.dcm``, ``.nii.gz``, ...; only the
  suffix, so ``x.v1.dcm`` and ``x.v2.dcm`` give ``x.v1`` and ``x.v2``);
- when two inputs of the batch have the same stem (compared case-insensitively, as on
  macOS and Windows file systems), e.g. ``a/film.dcm`` and ``b/film.dcm``, each of them gets
  ``<stem>-<h>``, ``h`` the first 8 hex digits of the SHA-1 of its absolute path;
- the same file given twice is refused (InputError naming it).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import InputError

IMAGE_SUFFIXES = (".nii.gz", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nrrd", ".nii",
                  ".mha", ".mhd")


def input_stem(path) -> str:
    """The file name without its image suffix (case-insensitive); the whole name when it has none."""
    name = Path(path).name
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def path_tag(path) -> str:
    """First 8 hex digits of the SHA-1 of the absolute path (symlinks resolved): stable per file."""
    return hashlib.sha1(os.fsencode(Path(path).resolve())).hexdigest()[:8]


def output_folders(inputs, out_root) -> list[Path]:
    """One output folder per input, in input order (see the module docstring for the rule).

    inputs: the expanded input files; out_root: the ``-o`` folder.
    """
    files = [Path(f) for f in inputs]
    root = Path(out_root)
    if len(files) == 1:
        return [root]
    seen = {}
    for f in files:
        key = f.resolve()
        if key in seen:
            raise InputError("given twice in one batch (also as a file of a folder given?)", f)
        seen[key] = f
    stems = [input_stem(f) for f in files]
    counts = {}
    for s in stems:
        counts[s.casefold()] = counts.get(s.casefold(), 0) + 1
    names = [s if counts[s.casefold()] == 1 else f"{s}-{path_tag(f)}" for s, f in zip(stems, files)]
    if len({n.casefold() for n in names}) != len(names):  # a plain stem that looks like a tagged one
        names = [f"{s}-{path_tag(f)}" for s, f in zip(stems, files)]
    return [root / n for n in names]


__all__ = ["input_stem", "output_folders", "path_tag"]
