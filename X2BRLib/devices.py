"""The one rule for choosing a torch device from the user's ``--device`` (auto | cpu | cuda | cuda:N).
Its own module so that the detector and the X2B pipeline both use it without importing each other."""
from __future__ import annotations

from .errors import InputError


def resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(device)
