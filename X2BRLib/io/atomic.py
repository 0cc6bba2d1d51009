"""The one way X2BR writes a file: to a temporary name in the same folder, then
``os.replace`` onto the target, so a crash or an error never leaves a
half-written output; an existing file is kept unless ``overwrite``."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import InputError


def atomic_write(path, write, overwrite: bool = False, suffix: str = "") -> Path:
    """Call ``write(tmp_path: str)`` then move the temporary file onto ``path``.

    suffix: extension the temporary name must end with (for writers that pick the
    format from it, e.g. ``.npz`` or ``.png``). Raises InputError, naming the file,
    when it exists and overwrite is False, or when it is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder, expected a file name", path)
    if path.exists() and not overwrite:
        raise InputError("already exists; refusing to overwrite it (pass overwrite=True / --overwrite)", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str, overwrite: bool = True) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite)
