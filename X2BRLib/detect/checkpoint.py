"""Reading an ultralytics training checkpoint (a run's ``best.pt`` / ``last.pt``) without
running pickled code.

An ultralytics checkpoint pickles the whole model object, so ultralytics itself loads it with
``torch.load(weights_only=False)``: a file from someone else could run any code on load. Here
it is read with ``weights_only=True``, which refuses every pickled global except tensors,
containers and plain values, widened only by the network module classes of torch
(``torch.nn.modules``) and of the installed ultralytics (``ultralytics.nn``), and ultralytics'
``IterableSimpleNamespace`` (the training arguments an unfinished run keeps on its model):
unpickling those sets attributes of an object, it calls nothing else. A checkpoint that needs any other global
(``os.system``, ``builtins.eval``, an unknown class) is refused with an InputError naming the
file and the global. ``--resume`` and ``evaluate`` pass a checkpoint through this check before
ultralytics loads it.
"""
from __future__ import annotations

import contextlib
import inspect
import pickle
import re
import sys
from pathlib import Path

from ..errors import InputError


def allowed_classes() -> list[type]:
    """The torch.nn.Module subclasses defined in ``torch.nn.modules.*`` and ``ultralytics.nn.*``,
    and ``ultralytics.utils.IterableSimpleNamespace``."""
    import torch

    from .detector import ultralytics

    ultralytics()
    import ultralytics.nn.tasks  # noqa: F401  (imports every ultralytics.nn module)
    from ultralytics.utils import IterableSimpleNamespace

    out = [IterableSimpleNamespace]
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name.startswith("torch.nn.modules.") or name.startswith("ultralytics.nn.")):
            continue
        for obj in vars(mod).values():
            if inspect.isclass(obj) and obj.__module__ == name and issubclass(obj, torch.nn.Module):
                out.append(obj)
    return out


def load_checkpoint(path) -> dict:
    """An ultralytics checkpoint dict (``model``/``ema`` modules, ``train_args``, metrics...),
    loaded on the CPU with ``weights_only=True`` and the module classes of :func:`allowed_classes`.

    InputError naming the file when it is missing, not a torch file, or needs another global.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", path)
    allowed = allowed_classes()
    if hasattr(torch.serialization, "safe_globals"):  # torch >= 2.5: for this load only
        scope = torch.serialization.safe_globals(allowed)
    else:  # torch 2.4: process-wide (the same harmless module classes)
        torch.serialization.add_safe_globals(allowed)
        scope = contextlib.nullcontext()
    try:
        with scope:
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = f"it needs {found.group(1)}" if found else str(e).strip().splitlines()[0]
        raise InputError(f"refusing to load this checkpoint: {what}, which is not a network module "
                         "(a checkpoint can hold code; only torch and ultralytics modules are accepted)",
                         path) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise InputError(f"not a readable torch checkpoint ({str(e).strip().splitlines()[0]})", path) from None
    if not isinstance(ck, dict):
        raise InputError("not an ultralytics checkpoint (no dict inside)", path)
    return ck


__all__ = ["allowed_classes", "load_checkpoint"]
