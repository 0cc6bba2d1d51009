"""X2B weight files: an fp16 state dict ``<name>.pt`` plus its record ``<name>.json``.

The usual layout is a folder holding ``model.pt`` and ``model.json`` (the
"model card"): encoder, architecture kwargs, image size, normalisation,
training config and metrics, the catalog's bone names, and the SHA-256 of the
.pt file. :func:`load_model` verifies the checksum before unpickling anything
(``torch.load(weights_only=True)``) and raises :class:`WeightsError` naming
the file when the weights are missing, corrupt or built for another catalog.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import __version__
from ..anatomy import BONES
from ..errors import WeightsError
from ..io.checked import half_state_dict, read_checked_record, weight_paths, write_with_record

FORMAT = "x2br-x2b-weights"
FORMAT_VERSION = 1
HINT = "train with `x2br train` (then `x2br export`) or reinstall X2BR"


def save_weights(path, model, record: dict | None = None) -> tuple[Path, Path]:
    """Write ``model``'s weights as fp16 and the record next to them.

    path: folder (-> model.pt/model.json) or ``<name>.pt`` (-> ``<name>.json``).
    record: extra JSON-able fields (image_size, normalisation, training, metrics, ...).
    Returns (pt path, json path).
    """
    pt, js = weight_paths(path)
    state = half_state_dict(model)
    card = dict(record or {})
    card.update(format=FORMAT, version=FORMAT_VERSION, x2br_version=__version__,
                encoder=model.config["encoder"], architecture=dict(model.config),
                weights_file=pt.name, dtype="float16", bones=[b.name for b in BONES])
    return write_with_record(pt, lambda tmp: torch.save(state, tmp), js, card)


def read_record(path) -> dict:
    """The record of a weights file, checked against the weights' SHA-256; WeightsError
    naming the file when either is missing, unreadable or corrupt."""
    pt, js = weight_paths(path)
    return read_checked_record(pt, js, FORMAT, "weights", HINT)


def load_model(path, device="cpu"):
    """Build the X2BNet a weights file describes, verified, in eval mode on ``device``.

    path: folder, .pt or .json. Returns the model (float32); its record is
    ``model.record``. Raises WeightsError when the files are missing, the
    checksum does not match, or the weights were made for another bone catalog.
    """
    from .model import X2BNet

    pt, js = weight_paths(path)
    card = read_record(pt)
    names = [b.name for b in BONES]
    recorded = list(card.get("bones", names))
    n = min(len(recorded), len(names))  # label values are stable: one list must extend the other
    if recorded[:n] != names[:n]:
        raise WeightsError(f"weights {pt} were trained for another bone catalog; {HINT}")
    try:
        model = X2BNet(**card["architecture"])
        state = torch.load(pt, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # wrong shapes, truncated pickle, unknown encoder
        raise WeightsError(f"weights {pt} do not load into the recorded architecture ({e}); {HINT}") from None
    model.record = card
    return model.float().to(device).eval()
