"""Shipped files that carry a JSON record with their SHA-256 (network weights, the skeleton
template): one writer and one checked reader, so every shipped artefact is written the same
atomic way and refused the same clear way (WeightsError naming the file) when it is missing,
unreadable, of another kind, or corrupt."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import InputError, WeightsError
from .atomic import atomic_write, atomic_write_text


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weight_paths(path) -> tuple[Path, Path]:
    """A network's weights given as the folder (``model.pt`` inside), the .pt or the .json:
    return (pt, json)."""
    p = Path(path)
    if p.is_dir() or (not p.suffix and not p.exists()):
        p = p / "model.pt"
    if p.suffix == ".json":
        return p.with_suffix(".pt"), p
    return p, p.with_suffix(".json")


def refuse_existing_weights(path, overwrite: bool = False) -> None:
    """InputError naming the file when the weights ``path`` (folder, .pt or .json) would replace
    an existing ``model.pt`` or its record and ``overwrite`` is False (``--export`` without
    ``--overwrite``). Called before training starts, so a run never ends in a refusal."""
    if overwrite:
        return
    for p in weight_paths(path):
        if p.exists():
            raise InputError("already exists; refusing to replace these weights (pass --overwrite)", p)


def half_state_dict(model) -> dict:
    """The model's state dict with floating tensors in fp16, detached, on the CPU."""
    return {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().contiguous()
            for k, v in model.state_dict().items()}


def write_with_record(path, write, record_path, record: dict, overwrite: bool = True,
                      suffix: str = "", indent: int = 2) -> tuple[Path, Path]:
    """``write(tmp)`` the data file atomically, then its record: ``record`` plus the data's
    ``sha256`` (and ``bytes``). Returns (data path, record path)."""
    path, record_path = Path(path), Path(record_path)
    atomic_write(path, write, overwrite=overwrite, suffix=suffix)
    card = dict(record)
    card.update(sha256=sha256_file(path), bytes=path.stat().st_size)
    atomic_write_text(record_path, json.dumps(card, indent=indent, default=str) + "\n", overwrite=overwrite)
    return path, record_path


def read_checked_record(path, record_path, fmt: str, what: str, hint: str) -> dict:
    """The record of ``path`` after checking that both exist, the record is JSON of format
    ``fmt``, and the data's SHA-256 matches it. ``what`` names the artefact in messages."""
    path, record_path = Path(path), Path(record_path)
    if not path.is_file():
        raise WeightsError(f"{what} not found at {path}; {hint}")
    if not record_path.is_file():
        raise WeightsError(f"{what} record {record_path} is missing; {hint}")
    try:
        card = json.loads(record_path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{what} record {record_path} is unreadable ({e}); {hint}") from None
    if not isinstance(card, dict) or card.get("format") != fmt:
        raise WeightsError(f"{record_path} is not an X2BR {what} record; {hint}")
    digest = sha256_file(path)
    if digest != card.get("sha256"):
        raise WeightsError(f"{what} {path} is corrupt: SHA-256 {digest[:12]}... does not match "
                           f"{str(card.get('sha256'))[:12]}... recorded in {record_path}; {hint}")
    return card


__all__ = ["sha256_file", "refuse_existing_weights", "half_state_dict", "write_with_record", "read_checked_record"]
