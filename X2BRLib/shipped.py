"""Where X2BR finds the files it ships (network weights, skeleton template, sample data): one rule.

``RESOURCES`` is ``<X2BRLib>/Resources`` when that folder exists, else ``<X2BRLib>/../Resources``:

- an installed wheel (``pip install .``, ``pip install x2br-*.whl``) carries the files inside
  the package, as ``X2BRLib/Resources/`` (``setup.py`` maps the repository's ``Resources/``
  there);
- a checkout (``pip install -e .``, ``PYTHONPATH=<repo>``) and the Slicer module, which
  installs ``X2BRLib/`` and ``Resources/`` side by side (``X2BR/CMakeLists.txt``), find
  ``Resources/`` next to the package.

Every default path of the library (``pipeline.DEFAULT_WEIGHTS``, ``detect.detector.DEFAULT_WEIGHTS``,
``refine.template.DEFAULT_PATH``, ``cli.SAMPLE_DIR``) is :func:`resource` of this folder.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def resources_dir(package_dir: Path = PACKAGE_DIR) -> Path:
    """``package_dir/Resources`` if it is a folder (installed package), else ``package_dir/../Resources``."""
    inside = package_dir / "Resources"
    return inside if inside.is_dir() else package_dir.parent / "Resources"


RESOURCES = resources_dir()


def resource(*parts: str) -> Path:
    """A path under :data:`RESOURCES`, e.g. ``resource("Models", "x2b")``."""
    return RESOURCES.joinpath(*parts)


__all__ = ["RESOURCES", "resource", "resources_dir"]
